"""Patch-MemAE (SQUID paper App. B.2, Table 7): "additional MemAE models on patches
segmented from different spatial location of input images. These multiple
space-specific models were trained separately with their unique space-specific patches
and were then evaluated through an ensemble style".

The image is cut into ``tiles`` x ``tiles`` non-overlapping patches (SQUID's own tiling,
:func:`squid_monai.nn.blocks.tile`); position ``k`` has its own MemAE (encoder,
memory, decoder), which only ever sees the patches at ``k``. The reconstruction is the
patches' reconstructions put back in place. Chosen where the paper is silent: each
position's MemAE is the MemAE preset's network at the patch size (same widths, same
number of memory items), and the models are trained together on the sum of their
objectives, which for disjoint parameters is exactly separate training
(:mod:`squid_monai.methods.autoencoder.trainer`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ...nn.blocks import tile, untile
from ..autoencoder import ACT
from ..memae import MemAE

__all__ = ["PatchMemAE"]


class PatchMemAE(nn.Module):
    """``forward(x)`` -> ``{"reconstruction" (B, C, H, W), "weights" (B, N, T, h, w)}``,
    ``T = tiles ** 2`` positions in row-major order (the items stay on dim 1, as for
    :class:`~squid_monai.methods.memae.MemAE`).

    Args:
        image_size: the whole image's side (divisible by ``tiles``).
        tiles: patches per side.
        channels, strides, memory_items, shrink_threshold, in_channels, kernel_size, act,
            norm: each position's :class:`~squid_monai.methods.memae.MemAE`.
    """

    def __init__(
        self,
        image_size: int,
        tiles: int,
        channels: Sequence[int],
        strides: Sequence[int],
        memory_items: int = 100,
        shrink_threshold: float | None = None,
        in_channels: int = 1,
        kernel_size: int = 3,
        act: tuple | str = ACT,
        norm: tuple | str = "batch",
    ):
        super().__init__()
        if tiles < 1 or image_size % tiles:
            raise ValueError(
                f"image_size {image_size} is not divisible into {tiles} x {tiles} patches"
            )
        self.image_size, self.tiles = int(image_size), int(tiles)
        self.tile_size = self.image_size // self.tiles
        #: one MemAE per position: the trainer's objective is the sum of theirs
        self.num_models = self.tiles**2
        self.models = nn.ModuleList(
            MemAE(
                self.tile_size,
                channels,
                strides,
                memory_items,
                shrink_threshold,
                in_channels,
                kernel_size,
                act,
                norm,
            )
            for _ in range(self.num_models)
        )

    def patches(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, T, C, H / tiles, W / tiles), positions in row-major order."""
        parts = tile(x, self.tiles)
        return parts.reshape(x.shape[0], self.num_models, *parts.shape[1:])

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        parts = self.patches(x)
        outs = [model(parts[:, k]) for k, model in enumerate(self.models)]
        recon = torch.stack([o["reconstruction"] for o in outs], dim=1)
        return {
            "reconstruction": untile(recon.reshape(-1, *recon.shape[2:]), self.tiles),
            "weights": torch.stack([o["weights"] for o in outs], dim=2),
        }
