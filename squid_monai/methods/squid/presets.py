"""Named network presets, the one home of the architecture's hyper-parameters.

``paper``          the authors' chest X-ray network: 128 px, 2 x 2 tiles, their widths
                   (generator 44.47 M, discriminator 0.68 M parameters).
``digitanatomy``   the authors' DigitAnatomy setting: 96 px, 3 x 3 tiles, same widths.
``small``          a CPU preset for chest X-rays: 64 px (where the authors' code still
                   reached validation AUCs near 0.9 on ZhangLab, SQUID.md section 5) and
                   half the widths; one training iteration at batch 16 costs well under a
                   tenth of ``paper`` (see BENCHMARKS.md).
``digitanatomy_small``  DigitAnatomy at 96 px, 3 x 3 tiles and a quarter of the widths:
                   the embedded default of the training bundle, trained in minutes on a CPU;
                   its decoder memories are space-aware (one per tile, reading the whole
                   tile map as one window), which the paper's network is not.
``tiny``           a toy size for tests and smoke runs only.

Keys prefixed ``disc_`` go to :class:`SQUIDDiscriminator`, the others to
:class:`SQUIDGenerator`; every ablation switch is a generator keyword (see its docstring).
"""

from __future__ import annotations

from typing import Any

from ..base import network_arguments, preset_config
from .networks.discriminator import SQUIDDiscriminator
from .networks.generator import SQUIDGenerator

__all__ = ["PRESETS", "PRESET_REVISIONS", "get_config", "build"]

_PAPER: dict[str, Any] = {
    "image_size": 128,
    "in_channels": 1,
    "tiles": 2,
    "channels": (32, 64, 128, 256, 512),
    "skip_levels": 2,
    "token_channels": 128,
    "queue_slots": 200,
    "top_k": 5,
    "heads": 8,
    "mlp_dim": 512,
    "mask_prob": 0.95,
    "decoder_memory_items": 200,
    "decoder_memory_windows": 2,
    "disc_channels": (16, 32, 64, 128, 128),
    "disc_kernel_size": 5,
    "disc_norm": "batch",
}

PRESETS: dict[str, dict[str, Any]] = {
    "paper": _PAPER,
    "digitanatomy": {**_PAPER, "image_size": 96, "tiles": 3},
    "small": {
        **_PAPER,
        "image_size": 64,
        "channels": (16, 32, 64, 128, 256),
        "token_channels": 64,
        "mlp_dim": 256,
    },
    "digitanatomy_small": {
        **_PAPER,
        "image_size": 96,
        "tiles": 3,
        "channels": (8, 16, 32, 64, 128),
        "token_channels": 32,
        "mlp_dim": 128,
        "disc_channels": (8, 16, 32, 64, 64),
        # beyond the paper, measured (docs/EXPERIMENTS.md, "Making SQUID detect"): with the decoder
        # memories shared by all tiles the student copies every anomaly through the skips;
        # with one memory per tile (one window, whole-cell items) a swapped, mirrored or
        # zero digit is rebuilt from that cell's normal digits far more often
        "decoder_memory_space_aware": True,
        "decoder_memory_windows": 1,
    },
    "tiny": {
        **_PAPER,
        "image_size": 32,
        "channels": (8, 16, 32, 64),
        "token_channels": 8,
        "queue_slots": 16,
        "heads": 4,
        "mlp_dim": 32,
        "decoder_memory_items": 16,
        "disc_channels": (8, 16, 16, 16),
    },
}


#: earlier definitions of a preset, as overrides of today's, newest first: what models saved
#: before ``network.json`` pinned every setting were trained with (the loader tries them)
PRESET_REVISIONS: dict[str, tuple[dict[str, Any], ...]] = {
    "digitanatomy_small": (
        {"decoder_memory_windows": 2},  # 2026-12-01 to 2026-12-04
        {"decoder_memory_windows": 2, "decoder_memory_space_aware": False},  # until 2026-12-01
    ),
}


def get_config(preset: str = "paper", **overrides: Any) -> dict[str, Any]:
    """The preset's settings with ``overrides`` applied (:func:`~..base.preset_config`: unknown
    keys are an error; the generator's boolean arguments are the ablation switches)."""
    defaults = network_arguments(SQUIDGenerator)
    return preset_config(
        PRESETS,
        preset,
        overrides,
        known=defaults,
        switches=[k for k, v in defaults.items() if isinstance(v, bool)],
    )


def build(preset: str = "paper", **overrides: Any) -> tuple[SQUIDGenerator, SQUIDDiscriminator]:
    """Build the generator and the discriminator of a preset, e.g.
    ``build("paper", space_aware=False)`` for the "no space-aware memory" ablation."""
    config = get_config(preset, **overrides)
    disc = {k[len("disc_") :]: v for k, v in config.items() if k.startswith("disc_")}
    gen = {k: v for k, v in config.items() if not k.startswith("disc_")}
    disc.update(image_size=gen["image_size"], in_channels=gen["in_channels"])
    return SQUIDGenerator(**gen), SQUIDDiscriminator(**disc)
