"""The convolutional auto-encoder as a model family (SQUID paper Table 1, "Auto-Encoder":
59.9 AUC on ZhangLab; lecture_gan_anomaly_detection.txt, "AutoEncoder in AD").

* network (:mod:`.networks`): :class:`.networks.ConvAutoEncoder` (MONAI ``AutoEncoder``,
  sigmoid output);
* losses (:mod:`.losses`): L2 on normal images;
* training (:mod:`.trainer`): :class:`.trainer.AutoEncoderTrainer`, whose iteration MemAE and
  Patch-MemAE reuse with their own objective;
* score (:mod:`.scorer`): the reconstruction error, :class:`.scorer.ReconstructionScorer`
  (no heat map; MemAE's score too);
* presets (:mod:`.presets`, which MemAE and Patch-MemAE extend) and recipes (:mod:`.recipes`).

Train with ``bundles/squid/configs/methods/autoencoder.json`` merged after ``train.json``.
"""

from __future__ import annotations

from ..base import Family
from .losses import AutoEncoderLossWeights, autoencoder_losses, reconstruction_error
from .networks import ACT, ConvAutoEncoder
from .presets import PRESETS, build, get_config
from .recipes import RECIPES
from .scorer import ReconstructionScorer
from .trainer import AutoEncoderTrainer

__all__ = [
    "ACT",
    "FAMILY",
    "PRESETS",
    "AutoEncoderLossWeights",
    "AutoEncoderTrainer",
    "ConvAutoEncoder",
    "ReconstructionScorer",
    "autoencoder_losses",
    "reconstruction_error",
]

FAMILY = Family(
    "autoencoder",
    PRESETS,
    RECIPES,
    AutoEncoderLossWeights,
    AutoEncoderTrainer,
    ReconstructionScorer,
    get_config,
    build,
)
