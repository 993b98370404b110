"""f-AnoGAN's network presets and the one way they become networks (``get_config`` through
:func:`~..base.preset_config`, ``build``); the networks themselves are :mod:`.networks`."""

from __future__ import annotations

from typing import Any

from ..base import preset_config
from .networks import FAnoGANCritic, FAnoGANEncoder, FAnoGANGenerator

__all__ = ["PRESETS", "get_config", "build"]

_PAPER: dict[str, Any] = {
    "image_size": 128,
    "latent_dim": 128,  # the WGAN-GP / f-AnoGAN latent size
    "generator_channels": (512, 256, 128, 64, 32),  # start map 512 x 4 x 4, five 2x upsamplings
    "critic_channels": (32, 64, 128, 256, 512),  # five stride-2 stages: 128 -> 4
    "encoder_channels": (32, 64, 128, 256, 512),
    "num_res_units": 1,  # ResNet-like (the source's architecture)
    "generator_norm": "batch",
    "critic_norm": None,
    "encoder_norm": None,
}

PRESETS: dict[str, dict[str, Any]] = {
    "paper": _PAPER,
    # 96 px, 3 x 3 digits: four stages, 96 -> 6
    "digitanatomy": {
        **_PAPER,
        "image_size": 96,
        "generator_channels": (512, 256, 128, 64),
        "critic_channels": (64, 128, 256, 512),
        "encoder_channels": (64, 128, 256, 512),
    },
    # CPU presets: DCGAN-like (no residual units), a quarter of the widths
    "small": {
        **_PAPER,
        "image_size": 64,
        "latent_dim": 64,
        "generator_channels": (128, 64, 32, 16),
        "critic_channels": (16, 32, 64, 128),
        "encoder_channels": (16, 32, 64, 128),
        "num_res_units": 0,
    },
    "digitanatomy_small": {
        **_PAPER,
        "image_size": 96,
        "latent_dim": 64,
        "generator_channels": (128, 64, 32, 16),
        "critic_channels": (16, 32, 64, 128),
        "encoder_channels": (16, 32, 64, 128),
        "num_res_units": 0,
    },
    "tiny": {
        **_PAPER,
        "image_size": 32,
        "latent_dim": 16,
        "generator_channels": (32, 16, 8),
        "critic_channels": (8, 16, 32),
        "encoder_channels": (8, 16, 32),
        "num_res_units": 0,
    },
}


def get_config(preset: str = "paper", **overrides: Any) -> dict[str, Any]:
    """The preset's settings with ``overrides`` applied (unknown keys are an error; lists,
    as JSON and command lines give them, become tuples)."""
    return preset_config(PRESETS, preset, overrides, "network setting of f-AnoGAN")


def build(
    preset: str = "paper", **overrides: Any
) -> tuple[FAnoGANGenerator, FAnoGANCritic, FAnoGANEncoder]:
    """(generator, critic, encoder) of a preset, untrained."""
    c = get_config(preset, **overrides)
    size, res = int(c["image_size"]), int(c["num_res_units"])
    generator = FAnoGANGenerator(
        c["latent_dim"], size, c["generator_channels"], res, c["generator_norm"]
    )
    critic = FAnoGANCritic(size, c["critic_channels"], res, c["critic_norm"])
    encoder = FAnoGANEncoder(size, c["latent_dim"], c["encoder_channels"], res, c["encoder_norm"])
    return generator, critic, encoder
