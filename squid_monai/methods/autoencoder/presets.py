"""Network presets of the auto-encoder, whose encoder-decoder MemAE's and Patch-MemAE's
presets extend (``methods/memae/presets.py``, ``methods/patch_memae/presets.py``), and the one
way they become networks (``get_config`` through :func:`~..base.preset_config`, ``build``).

The documents give no architecture for these baselines (SQUID paper Table 1 reports
them at 128 px; lecture_gan_anomaly_detection.txt only says "CNN encoder and decoder
with strided convolutions"). Chosen here: MONAI ``AutoEncoder`` stages halving the side,
then a stride-1 layer to a narrow latent holding 1/8 of the input's values.

``paper``               128 px, widths 32..256, latent 8 x 8 x 32.
``digitanatomy``        96 px, the same widths, latent 6 x 6 x 32.
``small``               64 px, half the widths (the CPU chest preset), latent 4 x 4 x 32.
``digitanatomy_small``  96 px, a quarter of the widths (the default DigitAnatomy run).
``tiny``                32 px, a toy for tests.
"""

from __future__ import annotations

from typing import Any

from ..base import network_arguments, preset_config
from .networks import ConvAutoEncoder

__all__ = ["PRESETS", "get_config", "build"]

PRESETS: dict[str, dict[str, Any]] = {
    "paper": {"image_size": 128, "channels": (32, 64, 128, 256, 32), "strides": (2, 2, 2, 2, 1)},
    "digitanatomy": {
        "image_size": 96,
        "channels": (32, 64, 128, 256, 32),
        "strides": (2, 2, 2, 2, 1),
    },
    "small": {"image_size": 64, "channels": (16, 32, 64, 128, 32), "strides": (2, 2, 2, 2, 1)},
    "digitanatomy_small": {
        "image_size": 96,
        "channels": (8, 16, 32, 64, 32),
        "strides": (2, 2, 2, 2, 1),
    },
    "tiny": {"image_size": 32, "channels": (8, 16, 32, 8), "strides": (2, 2, 2, 1)},
}


def get_config(preset: str = "paper", **overrides: Any) -> dict[str, Any]:
    """The preset's settings with ``overrides`` applied (the network's other arguments may be
    overridden too; unknown keys are an error)."""
    return preset_config(
        PRESETS,
        preset,
        overrides,
        "autoencoder network setting",
        known=network_arguments(ConvAutoEncoder),
    )


def build(preset: str = "paper", **overrides: Any) -> tuple[ConvAutoEncoder]:
    """The untrained auto-encoder of a preset."""
    return (ConvAutoEncoder(**get_config(preset, **overrides)),)
