"""GANomaly's network presets and the one way they become networks (``get_config`` through
:func:`~..base.preset_config`, ``build``); the networks themselves are :mod:`.networks`."""

from __future__ import annotations

from typing import Any

from ..base import preset_config
from .networks import GANomalyDiscriminator, GANomalyGenerator

__all__ = ["PRESETS", "get_config", "build"]

_PAPER: dict[str, Any] = {
    "image_size": 128,
    "in_channels": 1,
    "latent_size": 100,  # the authors' nz
    "channels": 64,  # ngf
    "disc_channels": 64,  # ndf
    "norm": "batch",
}

#: ``paper``: the authors' widths (nz 100, ngf = ndf = 64) at the SQUID paper's 128 px;
#: ``digitanatomy``: the same at 96 px; ``small``: 64 px, half the widths (CPU chest);
#: ``digitanatomy_small``: 96 px, a quarter of the widths (the CPU DigitAnatomy run);
#: ``tiny``: 32 px toy network for tests.
PRESETS: dict[str, dict[str, Any]] = {
    "paper": _PAPER,
    "digitanatomy": {**_PAPER, "image_size": 96},
    "small": {**_PAPER, "image_size": 64, "channels": 32, "disc_channels": 32},
    "digitanatomy_small": {**_PAPER, "image_size": 96, "channels": 16, "disc_channels": 16},
    "tiny": {**_PAPER, "image_size": 32, "latent_size": 16, "channels": 8, "disc_channels": 8},
}


def get_config(preset: str = "paper", **overrides: Any) -> dict[str, Any]:
    """The preset's settings with ``overrides`` applied (unknown keys are an error)."""
    return preset_config(PRESETS, preset, overrides, "network setting of GANomaly")


def build(
    preset: str = "paper", **overrides: Any
) -> tuple[GANomalyGenerator, GANomalyDiscriminator]:
    """The untrained generator and discriminator of a preset."""
    c = get_config(preset, **overrides)
    generator = GANomalyGenerator(
        c["image_size"], c["in_channels"], c["latent_size"], c["channels"], c["norm"]
    )
    discriminator = GANomalyDiscriminator(
        c["image_size"], c["in_channels"], c["disc_channels"], c["norm"]
    )
    return generator, discriminator
