"""The toy family's network presets (the names every family has)."""

from ..base import network_arguments, preset_config
from .networks import ToyAutoEncoder

PRESETS = {
    name: {"image_size": size, "channels": 4}
    for name, size in (
        ("tiny", 32),
        ("small", 64),
        ("digitanatomy_small", 96),
        ("paper", 128),
        ("digitanatomy", 96),
    )
}


def get_config(preset: str = "tiny", **overrides):
    return preset_config(
        PRESETS, preset, overrides, "toy network setting", known=network_arguments(ToyAutoEncoder)
    )


def build(preset: str = "tiny", **overrides):
    return (ToyAutoEncoder(**get_config(preset, **overrides)),)
