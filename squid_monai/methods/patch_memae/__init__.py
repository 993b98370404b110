"""Patch-MemAE as a model family (SQUID paper App. B.2, Table 7: +0.5 AUC and +18.5
accuracy points over MemAE on ZhangLab, still below SQUID).

* network: :class:`.networks.PatchMemAE`, one :class:`~squid_monai.methods.memae.MemAE`
  per patch position;
* training: each position's MemAE objective (L2 + entropy), summed, with the shared
  :class:`squid_monai.engines.reconstruction.ReconstructionTrainer`;
* score: the mean of the positions' reconstruction errors, :class:`.scorer.PatchMemAEScorer`
  (no heat map);
* presets: MemAE's plus ``tiles`` (:mod:`.presets`).

Train with ``bundles/squid/configs/methods/patch_memae.json`` merged after ``train.json``.
"""

from __future__ import annotations

from ..autoencoder import ReconstructionFamily
from .networks import PatchMemAE
from .presets import PATCH_MEMAE_PRESETS
from .recipes import RECIPES
from .scorer import PatchMemAEScorer

__all__ = ["FAMILY", "PatchMemAE", "PatchMemAEScorer"]

FAMILY = ReconstructionFamily(
    "patch_memae", PatchMemAE, PatchMemAEScorer, PATCH_MEMAE_PRESETS, RECIPES
)
