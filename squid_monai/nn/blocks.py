"""Building blocks shared by the SQUID encoder and decoders, and the tiling of an image.

SQUID works on an image cut into N x N non-overlapping tiles. Tiles are stacked in the
batch dimension (tile-major within each image: index ``b * N * N + row * N + col``) so
that every per-tile network runs as one batched call.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from monai.networks.blocks import Convolution

__all__ = ["RELU", "ResidualDoubleConv", "UpBlock", "tile", "untile", "zero_tiles", "position_code"]


#: ReLU after a BatchNorm, in place: autograd needs neither the BN's output nor the ReLU's
#: input, and a new tensor per activation costs page faults and system time in every step
RELU = ("relu", {"inplace": True})


class ResidualDoubleConv(nn.Module):
    """SQUID's "double conv": conv3x3(stride) -> BN -> ReLU, plus a residual branch
    [conv3x3 -> BN -> ReLU -> conv3x3 -> BN], then ReLU. Down-sampling is the stride of
    the first conv (the method uses no pooling).

    The residual addition and the last ReLU run in place on the branch's BN output
    (``inplace``; the same values, bitwise, as out of place)."""

    inplace = True

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1):
        super().__init__()
        self.conv = Convolution(
            2, in_channels, out_channels, strides=stride, kernel_size=3, act=RELU, norm="batch"
        )
        self.residual = nn.Sequential(
            Convolution(2, out_channels, out_channels, kernel_size=3, act=RELU, norm="batch"),
            Convolution(2, out_channels, out_channels, kernel_size=3, act=None, norm="batch"),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        if self.inplace:
            return F.relu_(self.residual(x).add_(x))
        return F.relu(x + self.residual(x))


class UpBlock(nn.Module):
    """Bilinear up-sampling to ``size`` (or x2), optional skip concatenation, double conv."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv = ResidualDoubleConv(in_channels, out_channels)

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None = None) -> torch.Tensor:
        if skip is None:
            x = F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)
        else:
            x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            x = torch.cat([x, skip], dim=1)
        return self.conv(x)


def tile(x: torch.Tensor, grid: int) -> torch.Tensor:
    """(B, C, H, W) -> (B * grid * grid, C, H / grid, W / grid), tiles in row-major order."""
    b, c, h, w = x.shape
    if h % grid or w % grid:
        raise ValueError(f"image size {h}x{w} is not divisible into {grid}x{grid} tiles")
    th, tw = h // grid, w // grid
    x = x.reshape(b, c, grid, th, grid, tw).permute(0, 2, 4, 1, 3, 5)
    return x.reshape(b * grid * grid, c, th, tw)


def untile(x: torch.Tensor, grid: int) -> torch.Tensor:
    """Inverse of :func:`tile`: (B * grid * grid, C, h, w) -> (B, C, h * grid, w * grid)."""
    n, c, th, tw = x.shape
    b = n // (grid * grid)
    x = x.reshape(b, grid, grid, c, th, tw).permute(0, 3, 1, 4, 2, 5)
    return x.reshape(b, c, grid * th, grid * tw)


def zero_tiles(x: torch.Tensor, grid: int, count: int) -> torch.Tensor:
    """Zero ``count`` tiles of the ``grid x grid`` grid of every image, drawn at random per
    image (``torch``'s global generator), the others left as they are: the input corruption of
    the paper's pixel-level in-painting ablation (App. B.1)."""
    b, _, h, w = x.shape
    if not 0 <= count <= grid * grid:
        raise ValueError(f"cannot zero {count} of {grid * grid} tiles")
    chosen = torch.rand(b, grid * grid, device=x.device).argsort(dim=1)[:, :count]
    keep = torch.ones(b, grid * grid, device=x.device, dtype=x.dtype).scatter(1, chosen, 0.0)
    keep = (
        keep.reshape(b, 1, grid, grid)
        .repeat_interleave(h // grid, 2)
        .repeat_interleave(w // grid, 3)
    )
    return x * keep


def position_code(num_tiles: int) -> torch.Tensor:
    """Binary code of every tile index, (num_tiles, bits) float. ``bits`` is
    ``num_tiles.bit_length()`` (3 bits for 4 tiles, as in the authors' network)."""
    bits = max(1, num_tiles.bit_length())
    index = torch.arange(num_tiles).unsqueeze(1)
    return ((index >> torch.arange(bits - 1, -1, -1)) & 1).float()
