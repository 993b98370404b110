"""Patch-MemAE's network presets: MemAE's presets plus ``tiles`` (2 x 2
on chest X-rays, SQUID's patch grid; 3 x 3 on DigitAnatomy, one tile per digit cell), each
tile's MemAE being the preset's network at the tile's size."""

from __future__ import annotations

from typing import Any

from ..memae import MEMAE_PRESETS

__all__ = ["PATCH_MEMAE_PRESETS"]

_TILES = {"paper": 2, "digitanatomy": 3, "small": 2, "digitanatomy_small": 3, "tiny": 2}

PATCH_MEMAE_PRESETS: dict[str, dict[str, Any]] = {
    name: {**preset, "tiles": _TILES[name]} for name, preset in MEMAE_PRESETS.items()
}
