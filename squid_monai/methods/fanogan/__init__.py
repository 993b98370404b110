"""f-AnoGAN as a model family (``seeds/lecture_gan_anomaly_detection.txt``, "03 F-AnoGAN";
SQUID paper Table 1: 75.5 AUC on ZhangLab, 65.8 on CheXpert).

* networks (:mod:`.networks`): generator G (z -> image), WGAN-GP critic D (image -> value,
  with ``features``), encoder E (image -> z), from MONAI's ``Generator`` / ``Regressor``;
  presets ``tiny``, ``small``, ``digitanatomy_small``, ``paper``, ``digitanatomy``;
* losses (:mod:`.losses`): WGAN-GP with gradient penalty; izi_f;
* training (:mod:`.trainer`): stage 1 WGAN-GP, stage 2 the encoder with G and D frozen, in
  one run, the stage following the epoch;
* score (:mod:`.scorer`): izi_f of the image (normality ``-izi_f``), reconstruction
  G(E(x)); the critic is the scorer's ``discriminator`` (Grad-CAM heat maps);
* recipes (:mod:`.recipes`): ``chest`` and ``digitanatomy``.

Wiring: ``bundles/squid/configs/methods/fanogan.json``, merged after ``train.json``.
"""

from __future__ import annotations

from ..base import Family
from .losses import FAnoGANLossWeights, critic_loss, generator_loss, gradient_penalty, izi_f
from .networks import FAnoGANCritic, FAnoGANEncoder, FAnoGANGenerator
from .presets import PRESETS, build, get_config
from .recipes import RECIPES
from .scorer import FAnoGANScorer
from .trainer import FAnoGANTrainer, StartEncoderStage, resolve_gan_epochs, restart_selection

__all__ = [
    "FAMILY",
    "FAnoGANCritic",
    "FAnoGANEncoder",
    "FAnoGANGenerator",
    "FAnoGANLossWeights",
    "FAnoGANScorer",
    "FAnoGANTrainer",
    "StartEncoderStage",
    "critic_loss",
    "generator_loss",
    "gradient_penalty",
    "izi_f",
    "resolve_gan_epochs",
    "restart_selection",
]


FAMILY = Family(
    "fanogan",
    PRESETS,
    RECIPES,
    FAnoGANLossWeights,
    FAnoGANTrainer,
    FAnoGANScorer,
    get_config,
    build,
)
