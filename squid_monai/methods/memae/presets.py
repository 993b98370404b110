"""MemAE's network presets and training recipes: the auto-encoder's presets plus
``memory_items`` (the MemAE paper used 100-500 items for image data sets) and
``shrink_threshold`` (``None``: 1/N, the low end of the MemAE paper's [1/N, 3/N])."""

from __future__ import annotations

from typing import Any

from ..autoencoder import AUTOENCODER_PRESETS

__all__ = ["MEMAE_PRESETS", "RECIPES"]

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

#: L2 + alpha * entropy, alpha = 0.0002 (the MemAE paper's; the documents give none)
RECIPES: dict[str, dict[str, Any]] = {
    regime: {"loss_weights": {"reconstruction": 1.0, "entropy": 0.0002}}
    for regime in ("chest", "digitanatomy")
}
