"""The f-AnoGAN scorer: image -> E -> z -> G -> reconstruction, scored by izi_f.

Score (``seeds/lecture_gan_anomaly_detection.txt``, "Detect Anomaly, Step 3"):
``AS(x) = 1/n ||x - G(E(x))||^2 + kappa/n_d ||f(x) - f(G(E(x)))||^2``, high = anomalous;
the calibrated quantity (``normality``, high = normal) is ``-AS``. The pixel-level map is
``|x - G(E(x))|`` (the writer's ``difference`` of the reconstruction). ``kappa`` is a
buffer, saved with the weights, so a model rebuilt from ``network.json`` scores with the
kappa it was trained with.

The critic is exposed as ``discriminator`` (a (B, 1, H, W) -> (B, 1) network, high = looks
normal), so the Grad-CAM heat map of :mod:`squid_monai.scoring.explain` applies, and the
evaluator's ``score_feature`` (its ``features``) is the kappa term.
"""

from __future__ import annotations

import torch

from ...scoring.scorer import CalibratedScorer
from .losses import izi_f
from .networks import FAnoGANCritic, FAnoGANEncoder, FAnoGANGenerator

__all__ = ["FAnoGANScorer"]


class FAnoGANScorer(CalibratedScorer):
    """``forward(image)`` with image (B, 1, H, W) in [0, 1] returns ``score``, ``logit``
    (= ``-izi_f``, what is calibrated), ``izi_f``, ``residual`` (the pixel term),
    ``feature_residual`` (the feature term, unweighted) (all (B,)) and ``reconstruction``
    (B, 1, H, W). Every network has per-image (or no) normalisation in eval mode, so an
    image scores the same alone or in any batch."""

    def __init__(
        self,
        generator: FAnoGANGenerator,
        discriminator: FAnoGANCritic,
        encoder: FAnoGANEncoder,
        kappa: float = 1.0,
        mean: float = 0.0,
        std: float = 1.0,
        threshold: float = 0.5,
    ):
        super().__init__(mean, std, threshold)
        self.generator, self.discriminator, self.encoder = generator, discriminator, encoder
        self.register_buffer("kappa", torch.tensor(float(kappa)))
        self._follow_networks()

    def raw(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        reconstruction = self.generator(self.encoder(image))
        with torch.autocast(device_type=image.device.type, enabled=False):
            image, reconstruction = image.float(), reconstruction.float()
            terms = izi_f(
                image,
                reconstruction,
                self.discriminator.features(image),
                self.discriminator.features(reconstruction),
                self.kappa,
            )
        return {
            "izi_f": terms["izi_f"],
            "residual": terms["image"],
            "feature_residual": terms["feature"],
            "reconstruction": reconstruction,
        }

    def normality(self, out: dict[str, torch.Tensor]) -> torch.Tensor:
        return -out["izi_f"]
