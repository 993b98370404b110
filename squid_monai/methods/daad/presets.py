"""DAAD's network presets, the one home of its network settings (recipes: :mod:`.recipes`).

Division rates per level (``division = 8`` fitted by :func:`~.memory.division_rate`, the
largest rate <= 8 dividing the map's side; block = side / rate):

| preset | px | levels (map sides) | rates r_h = r_w | blocks (px) |
|---|---|---|---|---|
| ``paper`` | 128 | 64, 32, 16, 8 | 8, 8, 8, 8 | 8, 4, 2, 1 |
| ``digitanatomy`` | 96 | 48, 24, 12, 6 | 8, 8, 6, 6 | 6, 3, 2, 1 |
| ``small`` | 64 | 32, 16, 8, 4 | 8, 8, 8, 4 | 4, 2, 1, 1 |
| ``digitanatomy_small`` | 96 | 48, 24, 12, 6 | 8, 8, 6, 6 | 6, 3, 2, 1 |
| ``tiny`` | 32 | 16, 8, 4 | 8, 8, 4 | 2, 1, 1 |

(The paper's 256 px network would have maps 128 to 16 and blocks 16 to 2 px.) Where a map is
smaller than 8 or 8 does not divide it, the rate falls to the largest divisor <= 8 (the 4 px
map of ``small`` and ``tiny``: 4; the 12 and 6 px maps of the 96 px presets: 6). Below 256 px
the coarsest levels therefore have one-pixel blocks, i.e. MemAE's per-pixel memory (the
paper's own MemAE* baseline is r = 16 on a 16 x 16 map). ``r_c = 1`` and ``N = 500``
everywhere; ``divisions`` sets the rates per level explicitly.

``adversarial``: false = DAAD (generator only), true = DAAD+ (plus the DCGAN
discriminator; ``bundles/squid/configs/methods/daad_plus.json`` sets it). ``gamma``: the
weight of the reconstruction score in the fused score (eq. 7, paper: 0.9). Keys prefixed
``disc_`` go to the discriminator. Widths are ours (the paper gives none).

Recipes (``chest``, ``digitanatomy``): the loss weights of eq. (3), the paper's on both.
"""

from __future__ import annotations

from typing import Any

from ..base import preset_config
from .networks import DAADGenerator, DCGANDiscriminator

__all__ = ["PRESETS", "get_config", "build"]

_PAPER: dict[str, Any] = {
    "image_size": 128,
    "in_channels": 1,
    "channels": (32, 64, 128, 256),
    "division": 8,
    "channel_division": 1,
    "divisions": None,
    "memory_items": 500,
    "renormalise": True,
    "norm": "batch",
    "adversarial": False,
    "gamma": 0.9,
    "disc_channels": (32, 64, 128, 256, 512),
    "disc_norm": "batch",
}

PRESETS: dict[str, dict[str, Any]] = {
    "paper": _PAPER,
    "digitanatomy": {**_PAPER, "image_size": 96},
    "small": {
        **_PAPER,
        "image_size": 64,
        "channels": (16, 32, 64, 128),
        "disc_channels": (16, 32, 64, 128),
    },
    "digitanatomy_small": {
        **_PAPER,
        "image_size": 96,
        "channels": (16, 32, 64, 128),
        "disc_channels": (16, 32, 64, 128),
    },
    "tiny": {**_PAPER, "image_size": 32, "channels": (8, 16, 32), "disc_channels": (8, 16, 32)},
}


_SWITCHES = ("adversarial", "renormalise")


def get_config(preset: str = "paper", **overrides: Any) -> dict[str, Any]:
    """The preset's settings with ``overrides`` applied (unknown keys are an error; the
    switches accept command-line strings such as ``"false"``)."""
    return preset_config(PRESETS, preset, overrides, "DAAD network setting", _SWITCHES)


def build(
    preset: str = "paper", **overrides: Any
) -> tuple[DAADGenerator] | tuple[DAADGenerator, DCGANDiscriminator]:
    """``(generator,)`` for DAAD, ``(generator, discriminator)`` for DAAD+."""
    config = get_config(preset, **overrides)
    gen_keys = (
        "image_size",
        "in_channels",
        "channels",
        "division",
        "channel_division",
        "divisions",
        "memory_items",
        "renormalise",
        "norm",
    )
    generator = DAADGenerator(**{k: config[k] for k in gen_keys})
    if not config["adversarial"]:
        return (generator,)
    disc = {k[len("disc_") :]: v for k, v in config.items() if k.startswith("disc_")}
    return generator, DCGANDiscriminator(
        image_size=config["image_size"], in_channels=config["in_channels"], **disc
    )
