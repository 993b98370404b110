"""MemAE's network presets: the auto-encoder's presets plus ``memory_items`` (the MemAE
paper used 100-500 items for image data sets) and ``shrink_threshold`` (``None``: 1/N, the
low end of the MemAE paper's [1/N, 3/N]); and the one way they become networks
(``get_config`` through :func:`~..base.preset_config`, ``build``)."""

from __future__ import annotations

from typing import Any

from ..autoencoder import PRESETS as AUTOENCODER_PRESETS
from ..base import network_arguments, preset_config
from .networks import MemAE

__all__ = ["PRESETS", "get_config", "build"]

_MEMORY_ITEMS = {
    "paper": 500,
    "digitanatomy": 500,
    "small": 200,
    "digitanatomy_small": 100,
    "tiny": 16,
}

PRESETS: dict[str, dict[str, Any]] = {
    name: {**preset, "memory_items": _MEMORY_ITEMS[name], "shrink_threshold": None}
    for name, preset in AUTOENCODER_PRESETS.items()
}


def get_config(preset: str = "paper", **overrides: Any) -> dict[str, Any]:
    """The preset's settings with ``overrides`` applied (the network's other arguments may be
    overridden too; unknown keys are an error)."""
    return preset_config(
        PRESETS, preset, overrides, "memae network setting", known=network_arguments(MemAE)
    )


def build(preset: str = "paper", **overrides: Any) -> tuple[MemAE]:
    """The untrained MemAE of a preset."""
    return (MemAE(**get_config(preset, **overrides)),)
