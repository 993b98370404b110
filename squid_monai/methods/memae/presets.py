"""MemAE's network presets: the auto-encoder's presets plus
``memory_items`` (the MemAE paper used 100-500 items for image data sets) and
``shrink_threshold`` (``None``: 1/N, the low end of the MemAE paper's [1/N, 3/N])."""

from __future__ import annotations

from typing import Any

from ..autoencoder import AUTOENCODER_PRESETS

__all__ = ["MEMAE_PRESETS"]

_MEMORY_ITEMS = {
    "paper": 500,
    "digitanatomy": 500,
    "small": 200,
    "digitanatomy_small": 100,
    "tiny": 16,
}

MEMAE_PRESETS: dict[str, dict[str, Any]] = {
    name: {**preset, "memory_items": _MEMORY_ITEMS[name], "shrink_threshold": None}
    for name, preset in AUTOENCODER_PRESETS.items()
}
