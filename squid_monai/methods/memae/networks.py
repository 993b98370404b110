"""MemAE: the auto-encoder with the memory module between encoder and decoder
(review deck, "MemAE [1/3]-[3/3]"; SQUID paper §2, "Memory networks": "an extra Memory
Matrix was introduced between the encoder and the decoder to capture normal feature
patterns during training"). The decoder only sees ``z_hat``, a sparse combination of
learnt items, so an anomalous encoding is replaced by the nearest normal patterns."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..autoencoder import ACT, ConvAutoEncoder
from .memory import MemoryUnit

__all__ = ["MemAE"]


class MemAE(ConvAutoEncoder):
    """``forward(x)`` -> ``{"reconstruction" (B, C, H, W), "weights" (B, N, h, w)}``: the
    encoding's every pixel is a query to one shared memory of ``memory_items`` items.

    Args:
        memory_items: N.
        shrink_threshold: the hard-shrinkage threshold (default 1/N).
        image_size, channels, strides, in_channels, kernel_size, act, norm: as in
            :class:`~squid_monai.methods.autoencoder.networks.ConvAutoEncoder`.
    """

    def __init__(
        self,
        image_size: int,
        channels: Sequence[int],
        strides: Sequence[int],
        memory_items: int = 100,
        shrink_threshold: float | None = None,
        in_channels: int = 1,
        kernel_size: int = 3,
        act: tuple | str = ACT,
        norm: tuple | str = "batch",
    ):
        super().__init__(image_size, channels, strides, in_channels, kernel_size, act, norm)
        self.memory = MemoryUnit(memory_items, channels[-1], shrink_threshold)

    def latent(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        z_hat, weights = self.memory(self.intermediate(self.encode(x)))
        return {"latent": z_hat, "weights": weights}
