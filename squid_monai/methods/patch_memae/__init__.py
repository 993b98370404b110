"""Patch-MemAE as a model family (SQUID paper App. B.2, Table 7: +0.5 AUC and +18.5
accuracy points over MemAE on ZhangLab, still below SQUID).

* network (:mod:`.networks`): :class:`.networks.PatchMemAE`, one
  :class:`~squid_monai.methods.memae.MemAE` per patch position;
* losses (:mod:`.losses`) and training (:mod:`.trainer`): each position's MemAE objective
  (L2 + entropy), summed, with MemAE's :class:`~squid_monai.methods.memae.MemAETrainer`;
* score (:mod:`.scorer`): the mean of the positions' reconstruction errors,
  :class:`.scorer.PatchMemAEScorer` (no heat map);
* presets (:mod:`.presets`): MemAE's plus ``tiles``; recipes (:mod:`.recipes`): MemAE's.

Train with ``bundles/squid/configs/methods/patch_memae.json`` merged after ``train.json``.
"""

from __future__ import annotations

from ..base import Family
from .losses import MemAELossWeights
from .networks import PatchMemAE
from .presets import PRESETS, build, get_config
from .recipes import RECIPES
from .scorer import PatchMemAEScorer
from .trainer import MemAETrainer

__all__ = ["FAMILY", "PRESETS", "MemAETrainer", "PatchMemAE", "PatchMemAEScorer"]

FAMILY = Family(
    "patch_memae",
    PRESETS,
    RECIPES,
    MemAELossWeights,
    MemAETrainer,
    PatchMemAEScorer,
    get_config,
    build,
)
