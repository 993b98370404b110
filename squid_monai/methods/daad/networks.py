"""DAAD's networks: the memory-augmented U-Net-like auto-encoder (the generator G) and, for
DAAD+, the DCGAN discriminator D.

Source: ``seeds/daad_paper.txt``, section 3.1 (Figure 3, 4). The paper gives the shape of
the generator ("bow-tie" encoder / decoder, skip connections at multiple scales as in U-Net,
every encoder-decoder connection through its own block-wise memory; the plain auto-encoder
it compares with down-samples by 16) and names D's design (DCGAN's discriminator), not
their widths or kernels. Ours, built from MONAI ``Convolution`` blocks:

* encoder: ``L = len(channels)`` levels, each a 3x3 stride-2 convolution and a 3x3
  convolution (batch norm, LeakyReLU 0.2); level ``l`` emits ``f_l`` at ``image_size / 2**l``.
  Four levels (down-sampling 16) in the 64 to 128 px presets, three in ``tiny``.
* one :class:`~.memory.BlockMemory` per level, the last one being the bottleneck ``z``: the
  decoder sees only memory read-outs ``f_hat_l``, never a raw encoder feature ("we equip
  all connections between the encoder and decoder with the block-wise memory module").
* decoder: from ``f_hat_L`` up, a 3x3 stride-2 transposed convolution, concatenation with
  ``f_hat_l`` and a 3x3 convolution (batch norm, ReLU) per level, a last up-sampling to the
  input size and a 3x3 convolution to one channel with a sigmoid (our images are in [0, 1];
  the paper's were in [-1, 1]).
* D: 4x4 stride-2 convolutions, batch norm on all but the first, LeakyReLU 0.2 (DCGAN),
  then a linear layer to one logit over the flattened last map (DCGAN's final 4x4 valid
  convolution is that linear layer when the map is 4x4; a linear layer also fits the 96 px
  maps). ``features`` is the convolution stack: ``f_D`` of the alignment loss (eq. 6, "the
  last convolutional layer of D") and Grad-CAM's target.

The division rate of each level is ``division_rate(side, division)`` (largest rate <= 8
dividing the side: see :mod:`.memory`); the rates actually used are ``generator.divisions``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
from monai.networks.blocks import Convolution

from .memory import BlockMemory, division_rates

__all__ = ["DAADGenerator", "DCGANDiscriminator"]

_LEAKY = ("LEAKYRELU", {"negative_slope": 0.2})


def _norm(norm: str | None):
    return None if norm in (None, "none") else norm.upper()


class DAADGenerator(nn.Module):
    """The memory-augmented auto-encoder (see the module docstring).

    Args:
        image_size: side of the square input; a multiple of ``2 ** len(channels)``.
        in_channels: image channels.
        channels: encoder width of each level (the decoder mirrors them).
        division: the division rate ``r_h = r_w`` (paper's best: 8), fitted per level.
        channel_division: ``r_c`` (paper's best: 1).
        divisions: explicit per-level spatial rates (overrides ``division``).
        memory_items: ``N`` per level (paper: 500).
        renormalise: re-normalise the kept memory weights (see :mod:`.memory`).
        norm: normalisation of the conv blocks (``"batch"``; ``"instance"`` or ``None``).

    ``forward(x)`` returns the reconstruction (B, in_channels, H, W) in [0, 1].
    """

    def __init__(
        self,
        image_size: int = 128,
        in_channels: int = 1,
        channels: Sequence[int] = (32, 64, 128, 256),
        division: int = 8,
        channel_division: int = 1,
        divisions: Sequence[int] | None = None,
        memory_items: int = 500,
        renormalise: bool = True,
        norm: str | None = "batch",
    ):
        super().__init__()
        channels = tuple(int(c) for c in channels)
        levels = len(channels)
        if levels < 1 or image_size % (2**levels):
            raise ValueError(
                f"image_size {image_size} must be a multiple of 2**{levels} (one per level)"
            )
        self.image_size, self.channels = int(image_size), channels
        self.sides = tuple(image_size // 2 ** (i + 1) for i in range(levels))
        rates = (
            tuple(int(r) for r in divisions)
            if divisions is not None
            else division_rates(self.sides, division)
        )
        if len(rates) != levels:
            raise ValueError(f"divisions {rates} must give one rate per level ({levels})")
        #: the spatial division rate r_h = r_w of each level (fine to coarse)
        self.divisions = rates
        norm = _norm(norm)
        enc, prev = [], in_channels
        for c in channels:
            enc.append(
                nn.Sequential(
                    Convolution(2, prev, c, strides=2, kernel_size=3, act=_LEAKY, norm=norm),
                    Convolution(2, c, c, kernel_size=3, act=_LEAKY, norm=norm),
                )
            )
            prev = c
        self.encoder = nn.ModuleList(enc)
        self.memories = nn.ModuleList(
            BlockMemory(c, s, memory_items, r, channel_division, renormalise)
            for c, s, r in zip(channels, self.sides, rates)
        )
        # decoder level i (i = L-2 .. 0): up-sample from level i+1, fuse with f_hat_i
        self.up = nn.ModuleList(
            Convolution(
                2,
                channels[i + 1],
                channels[i],
                strides=2,
                kernel_size=3,
                is_transposed=True,
                act="RELU",
                norm=norm,
            )
            for i in range(levels - 1)
        )
        self.fuse = nn.ModuleList(
            Convolution(2, 2 * channels[i], channels[i], kernel_size=3, act="RELU", norm=norm)
            for i in range(levels - 1)
        )
        self.head = nn.Sequential(
            Convolution(
                2,
                channels[0],
                channels[0],
                strides=2,
                kernel_size=3,
                is_transposed=True,
                act="RELU",
                norm=norm,
            ),
            Convolution(2, channels[0], in_channels, kernel_size=3, conv_only=True),
            nn.Sigmoid(),
        )

    def encode(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The encoder's feature maps ``f_1 .. f_L`` (fine to coarse)."""
        features = []
        for block in self.encoder:
            x = block(x)
            features.append(x)
        return features

    def read(self, features: list[torch.Tensor]) -> list[torch.Tensor]:
        """The memory read-outs ``f_hat_1 .. f_hat_L`` of the encoder's maps."""
        return [memory(f) for memory, f in zip(self.memories, features)]

    def decode(self, read: list[torch.Tensor]) -> torch.Tensor:
        h = read[-1]
        for i in range(len(read) - 2, -1, -1):
            h = self.fuse[i](torch.cat([self.up[i](h), read[i]], dim=1))
        return self.head(h)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.read(self.encode(x)))


class DCGANDiscriminator(nn.Module):
    """DAAD+'s discriminator (see the module docstring): ``forward(x)`` -> logits (B, 1)
    (real = high); ``features(x)`` -> ``f_D(x)``, the last convolutional features."""

    def __init__(
        self,
        image_size: int = 128,
        in_channels: int = 1,
        channels: Sequence[int] = (32, 64, 128, 256, 512),
        norm: str | None = "batch",
    ):
        super().__init__()
        channels = tuple(int(c) for c in channels)
        if image_size % (2 ** len(channels)):
            raise ValueError(f"image_size {image_size} must be a multiple of 2**{len(channels)}")
        layers, prev = [], in_channels
        for i, c in enumerate(channels):
            layers.append(
                Convolution(
                    2,
                    prev,
                    c,
                    strides=2,
                    kernel_size=4,
                    padding=1,
                    act=_LEAKY,
                    norm=None if i == 0 else _norm(norm),
                )
            )
            prev = c
        self.features = nn.Sequential(*layers)
        side = image_size // 2 ** len(channels)
        self.classifier = nn.Linear(prev * side * side, 1)

    def forward_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits (B, 1), features ``f_D(x)``) in one pass."""
        features = self.features(x)
        return self.classifier(features.flatten(1)), features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_features(x)[0]
