"""Patch-MemAE's network presets: MemAE's presets plus ``tiles`` (2 x 2
on chest X-rays, SQUID's patch grid; 3 x 3 on DigitAnatomy, one tile per digit cell), each
tile's MemAE being the preset's network at the tile's size; and the one way they become
networks (``get_config`` through :func:`~..base.preset_config`, ``build``)."""

from __future__ import annotations

from typing import Any

from ..base import network_arguments, preset_config
from ..memae import PRESETS as MEMAE_PRESETS
from .networks import PatchMemAE

__all__ = ["PRESETS", "get_config", "build"]

_TILES = {"paper": 2, "digitanatomy": 3, "small": 2, "digitanatomy_small": 3, "tiny": 2}

PRESETS: dict[str, dict[str, Any]] = {
    name: {**preset, "tiles": _TILES[name]} for name, preset in MEMAE_PRESETS.items()
}


def get_config(preset: str = "paper", **overrides: Any) -> dict[str, Any]:
    """The preset's settings with ``overrides`` applied (the network's other arguments may be
    overridden too; unknown keys are an error)."""
    return preset_config(
        PRESETS,
        preset,
        overrides,
        "patch_memae network setting",
        known=network_arguments(PatchMemAE),
    )


def build(preset: str = "paper", **overrides: Any) -> tuple[PatchMemAE]:
    """The untrained Patch-MemAE (one MemAE per tile position) of a preset."""
    return (PatchMemAE(**get_config(preset, **overrides)),)
