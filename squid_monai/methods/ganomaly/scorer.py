"""The GANomaly scorer: image -> generator (x -> z -> x_hat -> z_hat) -> the latent distance
``mean |z - z_hat|`` per image (BASELINES.md, GANomaly row: "latent distance"); normality is
its negation, calibrated on normal training images by :class:`CalibratedScorer`.

Outputs ``score``, ``logit`` (= the normality, ``-latent_distance``), ``latent_distance``,
``residual`` (mean squared pixel residual, for the evaluator's residual AUC) and
``reconstruction`` (x_hat). The discriminator is not part of the score; it is the
scorer's ``discriminator`` (a (B, 1, H, W) -> (B, 1) logit network, real = high) so that the
Grad-CAM heat map and the evaluator's feature-residual AUC work on it. In eval mode (set by
``CalibratedScorer.forward``) BatchNorm uses its running statistics: an image's score does
not depend on its batch.
"""

from __future__ import annotations

import torch

from ...scoring.scorer import CalibratedScorer, pixel_residual
from .losses import latent_distance
from .networks import GANomalyDiscriminator, GANomalyGenerator

__all__ = ["GANomalyScorer"]


class GANomalyScorer(CalibratedScorer):
    """See the module docstring; ``generator`` and ``discriminator`` are the trained networks."""

    def __init__(
        self,
        generator: GANomalyGenerator,
        discriminator: GANomalyDiscriminator,
        mean: float = 0.0,
        std: float = 1.0,
        threshold: float = 0.5,
    ):
        super().__init__(mean, std, threshold)
        self.generator = generator
        self.discriminator = discriminator
        self._follow_networks()

    def raw(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        out = self.generator(image)
        reconstruction = out["reconstruction"]
        with torch.autocast(device_type=image.device.type, enabled=False):
            distance = latent_distance(out["z"], out["z_hat"])
            residual = pixel_residual(image, reconstruction)
        return {"latent_distance": distance, "residual": residual, "reconstruction": reconstruction}

    def normality(self, out: dict[str, torch.Tensor]) -> torch.Tensor:
        return -out["latent_distance"]
