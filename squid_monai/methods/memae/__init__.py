"""MemAE as a model family (Gong et al., ICCV 2019; review deck eq. 3-7; SQUID paper
Table 1: 77.8 +- 1.4 AUC on ZhangLab, 54.3 +- 4.0 on CheXpert).

* network: :class:`.networks.MemAE`, the auto-encoder family's encoder-decoder with the
  memory of :mod:`.memory` between them;
* training: L2 + 0.0002 x the entropy of the addressing weights (the MemAE paper's
  alpha), the shared :class:`squid_monai.engines.reconstruction.ReconstructionTrainer`;
* score: the reconstruction error (:class:`~squid_monai.methods.autoencoder.ReconstructionScorer`;
  no heat map);
* presets: the auto-encoder's plus the memory size (:mod:`.presets`).

Train with ``bundles/squid/configs/methods/memae.json`` merged after ``train.json``.
"""

from __future__ import annotations

from ..autoencoder import ReconstructionFamily, ReconstructionScorer
from .memory import MemoryUnit, hard_shrink
from .networks import MemAE
from .presets import MEMAE_PRESETS
from .recipes import RECIPES

__all__ = ["FAMILY", "MEMAE_PRESETS", "RECIPES", "MemAE", "MemoryUnit", "hard_shrink"]

FAMILY = ReconstructionFamily("memae", MemAE, ReconstructionScorer, MEMAE_PRESETS, RECIPES)
