"""What the device tests share: the bundle's training configs, a parser of them on any device,
a tiny in-process training run, and a checkpoint written as if on a GPU.

PyTorch's ``meta`` device stands in for "not the CPU": it enforces the same one-device rule
as CUDA (a CPU tensor meets a meta tensor: error), so a CPU machine sees what a GPU would."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
import torch
import torch.serialization
from monai.bundle import ConfigParser, run

from ..trained_bundle import CONFIGS

#: train.json alone (SQUID), with each family's method config, and the multi-GPU config
TRAIN = CONFIGS / "train.json"
CONFIG_SETS = {
    "squid": [TRAIN],
    **{p.stem: [TRAIN, p] for p in sorted((CONFIGS / "methods").glob("*.json"))},
    "multi_gpu": [TRAIN, CONFIGS / "multi_gpu_train.json"],
}
#: the smallest run that trains, validates, calibrates and saves (a few seconds per family)
TINY = {
    "preset": "tiny",
    "digitanatomy_length": 8,
    "batch_size": 4,
    "val_per_class": 4,
    "calibration_images": 4,
    "progress": False,
    "mlflow_tracking": False,
}


def parser(configs, output_dir, **overrides) -> ConfigParser:
    """The bundle's ``configs`` parsed as ``monai.bundle run`` would, with ``overrides``."""
    parsed = ConfigParser()
    parsed.read_config([str(c) for c in configs])
    parsed.update({"output_dir": str(output_dir), **TINY, **overrides})
    return parsed


def train(configs, output_dir, **overrides) -> None:
    """``monai.bundle run training`` of ``configs`` in this process, on the tiny settings."""
    run(
        "training",
        config_file=[str(c) for c in configs],
        output_dir=str(output_dir),
        **{**TINY, **overrides},
    )


@contextlib.contextmanager
def saved_as_cuda():
    """Every ``torch.save`` inside tags its tensors ``cuda:0``, as a GPU run's checkpoints are:
    loading one without a ``map_location`` then fails on a machine without CUDA."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(torch.serialization, "location_tag", lambda storage: "cuda:0")
        yield


def off_device(module: torch.nn.Module, device: str) -> list[str]:
    """The parameters and buffers of ``module`` that are not on ``device``."""
    tensors = [*module.named_parameters(), *module.named_buffers()]
    return [f"{name} ({t.device})" for name, t in tensors if t.device.type != device]


def device_constants(graph: str, device: str = "cpu") -> list[str]:
    """Lines of a TorchScript graph holding a ``device`` constant (what a trace bakes in for
    ``torch.arange(..., device=x.device)`` and the like)."""
    return [
        line.strip()
        for line in graph.splitlines()
        if "Device = prim::Constant" in line and f'value="{device}"' in line
    ]


def checkpoint_files(folder: Path) -> list[Path]:
    return sorted(Path(folder).glob("*.pt"))
