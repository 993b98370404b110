"""f-AnoGAN's three networks, built from MONAI's ``Generator`` and ``Regressor`` nets, and
their presets.

Source: ``seeds/lecture_gan_anomaly_detection.txt``, "03 F-AnoGAN" (WGAN-GP Training, Step 1;
Encoder Training, Step 2): a generator G maps a latent vector z ~ N(0, I) to an image, a
WGAN-GP critic D scores images (a Wasserstein critic value, not a probability), and an
encoder E maps an image back to z. "Generator & discriminator follow the ResNet network.
(In exercise, DCGAN are used instead.)": the ``paper`` / ``digitanatomy`` presets use
MONAI residual units (ResNet-like), the small presets plain strided convolutions
(DCGAN-like), which train in minutes on a CPU.

Choices where the documents are silent (and why):

* images are in [0, 1] (the bundle's preprocessing), so G ends in a sigmoid;
* the encoder's output is linear (no tanh), because the prior z ~ N(0, I) is unbounded
  (the lecture's "Latent vector follows the normal distribution");
* the critic has no normalisation by default (a per-image ``instance`` norm is allowed,
  ``batch`` is refused): the gradient penalty is a per-sample quantity, which batch
  statistics would couple across the batch (Gulrajani et al. 2017), and the scorer must
  score each image alone; no dropout either, so the critic's train and eval modes agree;
* G uses BatchNorm (the DCGAN / WGAN-GP generator's); in stage 2 and at scoring it runs in
  eval mode on its running statistics, so neither training nor scores depend on the batch;
* the encoder has the critic's architecture with a ``latent_dim`` output (f-AnoGAN's
  encoder mirrors its critic) and no normalisation, like the critic;
* ``f``, the critic's "features in the intermediate layer" (Step 2), is the output of its
  last convolutional stage (after the activation), flattened: what feeds the final linear
  layer.

Preset keys: ``image_size``; ``latent_dim``; ``generator_channels`` (the start map's channels,
then each upsampling stage's; a last one-channel convolution is added), ``critic_channels`` and
``encoder_channels`` (one stride-2 stage each); ``num_res_units`` (0: plain convolutions,
> 0: MONAI residual units); ``generator_norm`` / ``critic_norm`` / ``encoder_norm``.
"""

from __future__ import annotations

from typing import Any

import torch
from monai.networks.layers import Act, Norm
from monai.networks.nets import Generator, Regressor

__all__ = ["FAnoGANGenerator", "FAnoGANCritic", "FAnoGANEncoder"]

#: LeakyReLU(0.2) in the critic and the encoder (DCGAN / WGAN-GP), ReLU in the generator
_LEAKY = (Act.LEAKYRELU, {"negative_slope": 0.2})
_NORMS = {
    None: None,
    "none": None,
    "batch": Norm.BATCH,
    "instance": (Norm.INSTANCE, {"affine": True}),
}


def _norm(name: str | None, what: str, allowed: tuple) -> Any:
    key = name.lower() if isinstance(name, str) else name
    if key not in allowed:
        raise ValueError(
            f"{what} norm must be one of {[a for a in allowed if a]} or null, got {name!r}"
            + (
                " (the WGAN-GP critic takes no batch statistics: its gradient penalty is per sample)"
                if what == "critic" and key == "batch"
                else ""
            )
        )
    return _NORMS[key]


class FAnoGANGenerator(Generator):
    """G: z (B, latent_dim) -> image (B, 1, H, W) in [0, 1] (MONAI ``Generator``: a linear
    layer to a (channels[0], s, s) start map, then one stride-2 transposed convolution per
    entry of ``channels``, to ``channels[1:]`` and finally to the one image channel, then a
    sigmoid; s = image_size / 2**len(channels))."""

    def __init__(
        self,
        latent_dim: int,
        image_size: int,
        channels,
        num_res_units: int = 0,
        norm: str | None = "batch",
    ):
        channels = tuple(int(c) for c in channels)
        up = len(channels)
        if up < 1 or image_size % 2**up:
            raise ValueError(
                f"image_size {image_size} is not divisible by 2**{up} (generator_channels {channels})"
            )
        start = channels[0]
        super().__init__(
            latent_shape=(int(latent_dim),),
            start_shape=(start, image_size // 2**up, image_size // 2**up),
            channels=channels[1:] + (1,),
            strides=(2,) * up,
            kernel_size=3,
            num_res_units=num_res_units,
            act=Act.RELU,
            norm=_norm(norm, "generator", (None, "none", "batch", "instance")),
        )
        self.latent_dim = int(latent_dim)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(super().forward(z))


class _ConvStack(Regressor):
    """MONAI ``Regressor`` whose every convolutional stage, the last one included, ends with
    its norm and activation (MONAI's leaves the last one linear): the features ``f`` are then
    the activations that feed the final linear layer."""

    def __init__(
        self, image_size: int, out_features: int, channels, num_res_units: int = 0, norm=None
    ):
        channels = tuple(int(c) for c in channels)
        super().__init__(
            in_shape=(1, image_size, image_size),
            out_shape=(int(out_features),),
            channels=channels,
            strides=(2,) * len(channels),
            kernel_size=3,
            num_res_units=num_res_units,
            act=_LEAKY,
            norm=norm,
        )

    def _get_layer(self, in_channels: int, out_channels: int, strides: int, is_last: bool):
        return super()._get_layer(in_channels, out_channels, strides, False)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The last convolutional stage's activations, flattened (B, n_d)."""
        return self.net(x).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.final(self.net(x))


class FAnoGANCritic(_ConvStack):
    """D: image (B, 1, H, W) -> critic value (B, 1) (high = looks like the normal training
    images); ``features(x)`` is f-AnoGAN's ``f`` (B, n_d)."""

    def __init__(self, image_size: int, channels, num_res_units: int = 0, norm: str | None = None):
        super().__init__(
            image_size,
            1,
            channels,
            num_res_units,
            _norm(norm, "critic", (None, "none", "instance")),
        )


class FAnoGANEncoder(_ConvStack):
    """E: image (B, 1, H, W) -> z (B, latent_dim), the critic's architecture with a linear
    ``latent_dim`` output (GAN inversion, "learned based")."""

    def __init__(
        self,
        image_size: int,
        latent_dim: int,
        channels,
        num_res_units: int = 0,
        norm: str | None = None,
    ):
        super().__init__(
            image_size,
            latent_dim,
            channels,
            num_res_units,
            _norm(norm, "encoder", (None, "none", "instance")),
        )
