"""MemAE as a model family (Gong et al., ICCV 2019; review deck eq. 3-7; SQUID paper
Table 1: 77.8 +- 1.4 AUC on ZhangLab, 54.3 +- 4.0 on CheXpert).

* network (:mod:`.networks`, :mod:`.memory`): :class:`.networks.MemAE`, the auto-encoder
  family's encoder-decoder with the memory between them;
* losses (:mod:`.losses`): L2 + 0.0002 x the entropy of the addressing weights (the MemAE
  paper's alpha);
* training (:mod:`.trainer`): :class:`.trainer.MemAETrainer`, the auto-encoder's iteration on
  that objective;
* score (:mod:`.scorer`): the reconstruction error, the auto-encoder's
  :class:`~squid_monai.methods.autoencoder.ReconstructionScorer` (no heat map);
* presets (:mod:`.presets`): the auto-encoder's plus the memory size; recipes (:mod:`.recipes`).

Train with ``bundles/squid/configs/methods/memae.json`` merged after ``train.json``.
"""

from __future__ import annotations

from ..base import Family
from .losses import MemAELossWeights, addressing_entropy, memae_losses
from .memory import MemoryUnit, hard_shrink
from .networks import MemAE
from .presets import PRESETS, build, get_config
from .recipes import RECIPES
from .scorer import ReconstructionScorer
from .trainer import MemAETrainer

__all__ = [
    "FAMILY",
    "PRESETS",
    "RECIPES",
    "MemAE",
    "MemAELossWeights",
    "MemAETrainer",
    "MemoryUnit",
    "ReconstructionScorer",
    "addressing_entropy",
    "hard_shrink",
    "memae_losses",
]

FAMILY = Family(
    "memae",
    PRESETS,
    RECIPES,
    MemAELossWeights,
    MemAETrainer,
    ReconstructionScorer,
    get_config,
    build,
)
