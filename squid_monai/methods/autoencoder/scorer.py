"""The score of the reconstruction families: the reconstruction error.

``normality = -residual``, ``residual = mean((x - x_hat)^2)`` per image (lecture
"AutoEncoder in AD": large reconstruction errors indicate defects; SQUID paper Table 1
scores the auto-encoder and MemAE this way), calibrated by
:class:`~squid_monai.scoring.CalibratedScorer` into ``sigmoid(-(normality - mean) / std)``.
There is no discriminator, hence no Grad-CAM; the heat map is the gradient of the score
(:mod:`squid_monai.scoring.explain`), beside the pixel difference ``|x - x_hat|``.
"""

from __future__ import annotations

import torch
from torch import nn

from ...scoring.scorer import CalibratedScorer, pixel_residual

__all__ = ["ReconstructionScorer"]


class ReconstructionScorer(CalibratedScorer):
    """``forward(image)`` -> ``{"score", "logit" (= -residual), "residual", "reconstruction"}``.
    A memory network's addressing ``weights`` are a training signal, not an output: left out."""

    def __init__(
        self, network: nn.Module, mean: float = 0.0, std: float = 1.0, threshold: float = 0.5
    ):
        super().__init__(mean, std, threshold)
        self.network = network
        self._follow_networks()

    def raw(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        out = {k: v for k, v in self.network(image).items() if k != "weights"}
        with torch.autocast(device_type=image.device.type, enabled=False):
            out["residual"] = pixel_residual(image, out["reconstruction"])
        return out

    def normality(self, out: dict[str, torch.Tensor]) -> torch.Tensor:
        return -out["residual"]
