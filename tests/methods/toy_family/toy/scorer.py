"""The toy scorer: the negated mean squared residual, calibrated."""

import torch
from torch import nn

from ...scoring.scorer import CalibratedScorer, pixel_residual


class ToyScorer(CalibratedScorer):
    def __init__(
        self, network: nn.Module, mean: float = 0.0, std: float = 1.0, threshold: float = 0.5
    ):
        super().__init__(mean, std, threshold)
        self.network = network

    def raw(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        out = self.network(image)
        return {**out, "residual": pixel_residual(image, out["reconstruction"])}

    def normality(self, out: dict[str, torch.Tensor]) -> torch.Tensor:
        return -out["residual"]
