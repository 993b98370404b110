"""SQUID discriminator, whose logit on the student reconstruction is the anomaly score.

Scoring normalises every image by its own statistics (SQUID.md section 5). The authors
obtained this by accident (train-mode BatchNorm at batch size 1, which also overwrote the
running statistics with test data and tied scores to the batch size); here it is explicit:
in eval mode each BatchNorm layer normalises each sample with that sample's per-channel
mean and variance, applies its learnt affine transform, and never touches its running
statistics. ``per_image_norm = False`` restores plain running-statistics scoring.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["PerImageBatchNorm2d", "SQUIDDiscriminator"]


class PerImageBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d that, in eval mode with ``per_image=True``, normalises each sample by
    its own statistics (instance normalisation with the BN affine parameters). Same
    parameters and state_dict as :class:`torch.nn.BatchNorm2d`."""

    def __init__(self, num_features: int, per_image: bool = True, **kwargs):
        super().__init__(num_features, **kwargs)
        self.per_image = per_image

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training or not self.per_image:
            return super().forward(x)
        return F.instance_norm(
            x, None, None, self.weight, self.bias, use_input_stats=True, eps=self.eps
        )


class SQUIDDiscriminator(nn.Module):
    """Five 5x5 stride-2 convolutions with LeakyReLU(0.2), normalisation on all but the
    first, flatten, and a linear layer to one logit per image (real = high).

    Args:
        image_size: side of the square input.
        in_channels: image channels.
        channels: widths of the conv layers (paper: 16, 32, 64, 128, 128).
        kernel_size: conv kernel (paper: 5).
        norm: ``"batch"`` (per-image in eval mode, see :class:`PerImageBatchNorm2d`) or
            ``"instance"`` (instance normalisation in training as well).
        per_image_norm: eval-mode per-image normalisation of the batch norms.
    """

    def __init__(
        self,
        image_size: int = 128,
        in_channels: int = 1,
        channels: Sequence[int] = (16, 32, 64, 128, 128),
        kernel_size: int = 5,
        norm: str = "batch",
        per_image_norm: bool = True,
    ):
        super().__init__()
        if norm not in ("batch", "instance"):
            raise ValueError(f"discriminator norm must be 'batch' or 'instance', got {norm!r}")
        if image_size % (2 ** len(channels)) or image_size // 2 ** len(channels) < 2:
            # per-image normalisation needs more than one value per channel in the last layer
            raise ValueError(
                f"image_size {image_size} must be a multiple of 2**{len(channels)} and at least twice it"
            )
        layers: list[nn.Module] = []
        prev = in_channels
        for i, ch in enumerate(channels):
            layers.append(nn.Conv2d(prev, ch, kernel_size, stride=2, padding=kernel_size // 2))
            if i > 0:
                layers.append(
                    PerImageBatchNorm2d(ch, per_image_norm)
                    if norm == "batch"
                    else nn.InstanceNorm2d(ch, affine=True)
                )
            layers.append(nn.LeakyReLU(0.2))
            prev = ch
        self.features = nn.Sequential(*layers)
        side = image_size // 2 ** len(channels)
        self.classifier = nn.Linear(prev * side * side, 1)

    @property
    def per_image_norm(self) -> bool:
        return all(m.per_image for m in self.modules() if isinstance(m, PerImageBatchNorm2d))

    @per_image_norm.setter
    def per_image_norm(self, value: bool) -> None:
        for m in self.modules():
            if isinstance(m, PerImageBatchNorm2d):
                m.per_image = bool(value)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x).flatten(1))
