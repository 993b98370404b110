"""Network presets and training recipes of the reconstruction families, in one place so
that the auto-encoder, MemAE and Patch-MemAE of a preset share their encoder-decoder.

The documents give no architecture for these baselines (SQUID paper Table 1 reports
them at 128 px; lecture_gan_anomaly_detection.txt only says "CNN encoder and decoder
with strided convolutions"). Chosen here: MONAI ``AutoEncoder`` stages halving the side,
then a stride-1 layer to a narrow latent holding 1/8 of the input's values.

``paper``               128 px, widths 32..256, latent 8 x 8 x 32.
``digitanatomy``        96 px, the same widths, latent 6 x 6 x 32.
``small``               64 px, half the widths (the CPU chest preset), latent 4 x 4 x 32.
``digitanatomy_small``  96 px, a quarter of the widths (the default DigitAnatomy run).
``tiny``                32 px, a toy for tests.

MemAE adds ``memory_items`` (the MemAE paper used 100-500 items for image data sets)
and ``shrink_threshold`` (``None``: 1/N, the low end of the MemAE paper's
[1/N, 3/N]); Patch-MemAE adds ``tiles`` (2 x 2 on chest X-rays, SQUID's patch grid;
3 x 3 on DigitAnatomy, one tile per digit cell), each tile's MemAE being the preset's
network at the tile's size.
"""

from __future__ import annotations

from typing import Any

__all__ = ["AUTOENCODER_PRESETS", "MEMAE_PRESETS", "PATCH_MEMAE_PRESETS", "RECIPES", "MEMORY_RECIPES"]

AUTOENCODER_PRESETS: dict[str, dict[str, Any]] = {
    "paper": {"image_size": 128, "channels": (32, 64, 128, 256, 32), "strides": (2, 2, 2, 2, 1)},
    "digitanatomy": {"image_size": 96, "channels": (32, 64, 128, 256, 32), "strides": (2, 2, 2, 2, 1)},
    "small": {"image_size": 64, "channels": (16, 32, 64, 128, 32), "strides": (2, 2, 2, 2, 1)},
    "digitanatomy_small": {"image_size": 96, "channels": (8, 16, 32, 64, 32), "strides": (2, 2, 2, 2, 1)},
    "tiny": {"image_size": 32, "channels": (8, 16, 32, 8), "strides": (2, 2, 2, 1)},
}

_MEMORY_ITEMS = {"paper": 500, "digitanatomy": 500, "small": 200, "digitanatomy_small": 100, "tiny": 16}
_TILES = {"paper": 2, "digitanatomy": 3, "small": 2, "digitanatomy_small": 3, "tiny": 2}

MEMAE_PRESETS: dict[str, dict[str, Any]] = {
    name: {**preset, "memory_items": _MEMORY_ITEMS[name], "shrink_threshold": None}
    for name, preset in AUTOENCODER_PRESETS.items()
}

PATCH_MEMAE_PRESETS: dict[str, dict[str, Any]] = {
    name: {**preset, "tiles": _TILES[name]} for name, preset in MEMAE_PRESETS.items()
}

#: L2 only: the same recipe on chest X-rays and DigitAnatomy
RECIPES: dict[str, dict[str, Any]] = {
    regime: {"loss_weights": {"reconstruction": 1.0, "entropy": 0.0}} for regime in ("chest", "digitanatomy")
}
#: L2 + alpha * entropy, alpha = 0.0002 (the MemAE paper's; the documents give none)
MEMORY_RECIPES: dict[str, dict[str, Any]] = {
    regime: {"loss_weights": {"reconstruction": 1.0, "entropy": 0.0002}} for regime in ("chest", "digitanatomy")
}
