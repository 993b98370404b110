"""AnatPaste's network presets and the one way they become networks (``get_config`` through
:func:`~..base.preset_config`, ``build``); the network itself is :mod:`.networks`."""

from __future__ import annotations

from typing import Any

from ..base import network_arguments, preset_config
from .networks import AnatPasteNet

__all__ = ["PRESETS", "get_config", "build"]

_PAPER: dict[str, Any] = {
    "image_size": 256,  # the authors' size
    "in_channels": 1,
    "widen_factor": 1.0,  # ResNet-18
    "head_layers": 1,  # the authors' head_layer
}

#: ``paper``: ResNet-18 at the authors' 256 px; ``digitanatomy``: the same at 96 px;
#: ``small``: ResNet-18 at half width (32..256 channels) at 64 px, the CPU chest budget;
#: ``digitanatomy_small``: the same at 96 px; ``tiny``: 32 px, an eighth of the width, for tests.
PRESETS: dict[str, dict[str, Any]] = {
    "paper": _PAPER,
    "digitanatomy": {**_PAPER, "image_size": 96},
    "small": {**_PAPER, "image_size": 64, "widen_factor": 0.5},
    "digitanatomy_small": {**_PAPER, "image_size": 96, "widen_factor": 0.5},
    "tiny": {**_PAPER, "image_size": 32, "widen_factor": 0.125},
}


def get_config(preset: str = "paper", **overrides: Any) -> dict[str, Any]:
    """The preset's settings with ``overrides`` applied (unknown keys are an error)."""
    return preset_config(
        PRESETS,
        preset,
        overrides,
        "network setting of AnatPaste",
        known=network_arguments(AnatPasteNet),
    )


def build(preset: str = "paper", **overrides: Any) -> tuple[AnatPasteNet]:
    """The untrained classifier of a preset (one network)."""
    return (AnatPasteNet(**get_config(preset, **overrides)),)
