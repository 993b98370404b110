"""The convolutional auto-encoder: MONAI's :class:`~monai.networks.nets.AutoEncoder`
(strided convolutions down, transposed convolutions up, BatchNorm + LeakyReLU(0.2)),
with a sigmoid output in the images' [0, 1] range and a dict output.

What the documents say (lecture_gan_anomaly_detection.txt, "AutoEncoder in AD"): a
reconstruction model under a bottleneck constraint, trained with an L2 distance on
normal images; large reconstruction errors indicate anomalies; encoder and decoder are
CNNs with strided convolutions. They give no widths: the presets
(:mod:`.presets`) are this project's choice, one design for the three reconstruction
families: every preset ends in a stride-1 layer to a narrow latent, so the encoding
holds 1/8 of the input's values (e.g. ``paper``: 128 px -> 8 x 8 x 32), a bottleneck
that an identity map cannot pass. BatchNorm (as in MemAE's networks) normalises with
running statistics at scoring time, so a score never depends on its batch.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.networks.nets import AutoEncoder

__all__ = ["ConvAutoEncoder"]

ACT = ("leakyrelu", {"negative_slope": 0.2})


class ConvAutoEncoder(AutoEncoder):
    """``forward(x)`` -> ``{"reconstruction": sigmoid(decode(intermediate(encode(x))))}``.

    Args:
        image_size: side of the square input (divisible by the product of ``strides``).
        channels, strides: per encoder layer (MONAI's ``AutoEncoder``; the decoder
            mirrors them); the last entry of ``channels`` is the latent width.
        in_channels, kernel_size, act, norm: as in MONAI's ``AutoEncoder``.
    """

    #: independent models in this network (the trainer's objective is their sum)
    num_models = 1

    def __init__(
        self,
        image_size: int,
        channels: Sequence[int],
        strides: Sequence[int],
        in_channels: int = 1,
        kernel_size: int = 3,
        act: tuple | str = ACT,
        norm: tuple | str = "batch",
    ):
        factor = int(torch.tensor(list(strides)).prod())
        if image_size % factor:
            raise ValueError(
                f"image_size {image_size} is not divisible by the encoder's total stride {factor}"
            )
        super().__init__(
            spatial_dims=2,
            in_channels=in_channels,
            out_channels=in_channels,
            channels=channels,
            strides=strides,
            kernel_size=kernel_size,
            up_kernel_size=kernel_size,
            act=act,
            norm=norm,
        )
        self.image_size = int(image_size)

    def latent(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """What the decoder decodes: ``{"latent": ...}`` (a memory network adds its weights)."""
        return {"latent": self.intermediate(self.encode(x))}

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        out = self.latent(x)
        out["reconstruction"] = torch.sigmoid(self.decode(out.pop("latent")))
        return out
