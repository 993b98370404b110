"""GANomaly's networks (Akcay et al., ACCV 2018; BASELINES.md, GANomaly row): the
encoder-decoder-encoder generator ``x -> z -> x_hat -> z_hat`` and the DCGAN discriminator.

The layout is that of the authors' DCGAN code (the documents only name it), built from
MONAI :class:`~monai.networks.blocks.Convolution` blocks:

* encoder (``G_E`` and ``E``): a 4x4 stride-2 convolution + LeakyReLU(0.2) without norm,
  then 4x4 stride-2 convolution + norm + LeakyReLU(0.2) doubling the width until the map
  is 4 x 4 (3 x 3 at 96 px), then a valid convolution over the whole map to the latent
  ``z`` (``latent_size`` x 1 x 1); no biases;
* decoder (``G_D``): the mirror with transposed convolutions + norm + ReLU, halving the
  width, and a Tanh output;
* discriminator: the encoder's body (its ``features``: the f(.) of the feature-matching
  loss) and one logit, as the authors' "encoder with nz = 1".

Choices where the documents are silent (see also the family docstring):

* inputs are [0, 1] (the bundle's); both networks first map them to [-1, 1] (the authors'
  ``Normalize(0.5, 0.5)``) and the generator maps its Tanh output back to [0, 1], so that
  inside, every layer sees what the original saw;
* the discriminator's last layer is a bias-free ``nn.Linear`` on the flattened last map,
  the same function as the original's valid convolution over it (kernel = map size), and
  returns the logit (B, 1) without the original's Sigmoid (the loss is BCE with logits):
  the scorer's ``discriminator`` is then a (B, 1, H, W) -> (B, 1) logit network whose last
  convolution still has a spatial map, which Grad-CAM needs;
* ``norm = "batch"`` (the original's BatchNorm) uses running statistics in eval mode, so
  each image is scored independently of its batch; ``"instance"`` (affine instance norm)
  is the batch-free alternative;
* the widths double from ``channels`` (generator) / ``disc_channels`` (discriminator) at
  each halving; DCGAN initialisation N(0, 0.02) (``monai.networks.utils.normal_init``);
* the original requires ``image_size % 16 == 0`` and a 4 x 4 last map; here the last map
  may also be 3 x 3, so that the DigitAnatomy size 96 (= 3 x 2**5) builds as well.
"""

from __future__ import annotations

import torch
from monai.networks.blocks import Convolution
from monai.networks.utils import normal_init
from torch import nn

__all__ = [
    "GANomalyDiscriminator",
    "GANomalyEncoder",
    "GANomalyDecoder",
    "GANomalyGenerator",
    "pyramid",
    "reinitialise",
]

_LEAKY = ("leakyrelu", {"negative_slope": 0.2})
_NORMS = ("batch", "instance")


def _norm(norm: str):
    if norm not in _NORMS:
        raise ValueError(f"norm must be one of {_NORMS}, got {norm!r}")
    return "batch" if norm == "batch" else ("instance", {"affine": True})


def pyramid(image_size: int) -> tuple[int, int]:
    """(number of normalised stride-2 layers after the first one, side of the last map):
    halve after the first layer while the side is above 4 (the authors' ``while csize > 4``)."""
    side, layers = image_size, 0
    if side % 2 == 0:
        side //= 2
        while side > 4 and side % 2 == 0:
            side //= 2
            layers += 1
    if side not in (3, 4) or image_size < 8:
        raise ValueError(
            f"image_size {image_size} must be 3 or 4 times a power of two, at least 8 "
            "(the last map of the DCGAN pyramid is 3 x 3 or 4 x 4)"
        )
    return layers, side


def reinitialise(module: nn.Module) -> nn.Module:
    """DCGAN initialisation (conv / linear N(0, 0.02), BatchNorm scale N(1, 0.02), biases 0),
    the authors' ``weights_init``; also their re-initialisation of a collapsed discriminator."""
    module.apply(normal_init)
    return module


class _ToSymmetric(nn.Module):
    """[0, 1] -> [-1, 1], the authors' input normalisation."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * 2.0 - 1.0


def _body(
    image_size: int, in_channels: int, channels: int, norm: str
) -> tuple[nn.Sequential, int, int]:
    """The DCGAN encoder's convolutions down to the last map: (layers, width, side)."""
    layers, side = pyramid(image_size)
    blocks: list[nn.Module] = [
        _ToSymmetric(),
        Convolution(
            2,
            in_channels,
            channels,
            strides=2,
            kernel_size=4,
            padding=1,
            act=_LEAKY,
            norm=None,
            bias=False,
        ),
    ]
    width = channels
    for _ in range(layers):
        blocks.append(
            Convolution(
                2,
                width,
                width * 2,
                strides=2,
                kernel_size=4,
                padding=1,
                act=_LEAKY,
                norm=_norm(norm),
                bias=False,
            )
        )
        width *= 2
    return nn.Sequential(*blocks), width, side


class GANomalyEncoder(nn.Module):
    """Image (B, C, H, W) in [0, 1] -> latent (B, latent_size) (``G_E`` and ``E`` of the paper)."""

    def __init__(
        self,
        image_size: int,
        in_channels: int = 1,
        latent_size: int = 100,
        channels: int = 64,
        norm: str = "batch",
    ):
        super().__init__()
        self.features, width, side = _body(image_size, in_channels, channels, norm)
        self.latent = Convolution(
            2,
            width,
            latent_size,
            strides=1,
            kernel_size=side,
            padding=0,
            conv_only=True,
            bias=False,
        )
        reinitialise(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.latent(self.features(x)).flatten(1)


class GANomalyDecoder(nn.Module):
    """Latent (B, latent_size) -> image (B, C, H, W) in [0, 1] (``G_D``: DCGAN generator)."""

    def __init__(
        self,
        image_size: int,
        in_channels: int = 1,
        latent_size: int = 100,
        channels: int = 64,
        norm: str = "batch",
    ):
        super().__init__()
        layers, side = pyramid(image_size)
        width = channels * 2**layers
        blocks: list[nn.Module] = [
            Convolution(
                2,
                latent_size,
                width,
                strides=1,
                kernel_size=side,
                padding=0,
                output_padding=0,
                is_transposed=True,
                act="relu",
                norm=_norm(norm),
                bias=False,
            ),
        ]
        for _ in range(layers):
            blocks.append(
                Convolution(
                    2,
                    width,
                    width // 2,
                    strides=2,
                    kernel_size=4,
                    padding=1,
                    output_padding=0,
                    is_transposed=True,
                    act="relu",
                    norm=_norm(norm),
                    bias=False,
                )
            )
            width //= 2
        blocks.append(
            Convolution(
                2,
                width,
                in_channels,
                strides=2,
                kernel_size=4,
                padding=1,
                output_padding=0,
                is_transposed=True,
                conv_only=True,
                bias=False,
            )
        )
        blocks.append(nn.Tanh())
        self.net = nn.Sequential(*blocks)
        self.latent_size = latent_size
        reinitialise(self)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return (self.net(z.reshape(z.shape[0], self.latent_size, 1, 1)) + 1.0) / 2.0


class GANomalyGenerator(nn.Module):
    """``x -> z = G_E(x) -> x_hat = G_D(z) -> z_hat = E(x_hat)``; forward returns
    ``{"reconstruction": x_hat, "z": z, "z_hat": z_hat}`` (latents (B, latent_size))."""

    def __init__(
        self,
        image_size: int = 128,
        in_channels: int = 1,
        latent_size: int = 100,
        channels: int = 64,
        norm: str = "batch",
    ):
        super().__init__()
        self.image_size = image_size
        self.encoder = GANomalyEncoder(image_size, in_channels, latent_size, channels, norm)
        self.decoder = GANomalyDecoder(image_size, in_channels, latent_size, channels, norm)
        self.reencoder = GANomalyEncoder(image_size, in_channels, latent_size, channels, norm)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        z = self.encoder(x)
        reconstruction = self.decoder(z)
        return {"reconstruction": reconstruction, "z": z, "z_hat": self.reencoder(reconstruction)}

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward(x)["reconstruction"]


class GANomalyDiscriminator(nn.Module):
    """DCGAN discriminator: image in [0, 1] -> real logit (B, 1); ``features(x)`` is the
    last map, the f(.) of the adversarial feature-matching loss."""

    def __init__(
        self, image_size: int = 128, in_channels: int = 1, channels: int = 64, norm: str = "batch"
    ):
        super().__init__()
        self.features, width, side = _body(image_size, in_channels, channels, norm)
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(width * side * side, 1, bias=False))
        reinitialise(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))
