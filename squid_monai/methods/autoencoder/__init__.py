"""The convolutional auto-encoder as a model family (SQUID paper Table 1, "Auto-Encoder":
59.9 AUC on ZhangLab; lecture_gan_anomaly_detection.txt, "AutoEncoder in AD").

* network: :class:`.networks.ConvAutoEncoder` (MONAI ``AutoEncoder``, sigmoid output);
* training: L2 on normal images, :class:`squid_monai.engines.reconstruction.ReconstructionTrainer`
  (shared with MemAE and Patch-MemAE);
* score: the reconstruction error, :class:`.scorer.ReconstructionScorer` (no heat map);
* presets: :mod:`.presets` (which MemAE and Patch-MemAE extend).

Train with ``bundles/squid/configs/methods/autoencoder.json`` merged after ``train.json``.
"""

from __future__ import annotations

from .family import ReconstructionFamily
from .networks import ACT, ConvAutoEncoder
from .presets import AUTOENCODER_PRESETS
from .recipes import RECIPES
from .scorer import ReconstructionScorer

__all__ = [
    "ACT",
    "AUTOENCODER_PRESETS",
    "FAMILY",
    "ConvAutoEncoder",
    "ReconstructionFamily",
    "ReconstructionScorer",
]

FAMILY = ReconstructionFamily(
    "autoencoder", ConvAutoEncoder, ReconstructionScorer, AUTOENCODER_PRESETS, RECIPES
)
