"""Seeding and exactness, kept apart: the random generators are seeded at start-up and again
every epoch (what makes a resumed run draw what an uninterrupted one draws), while the
backends' deterministic mode is chosen once, at start-up, by the ``deterministic`` switch.

MONAI's ``set_determinism`` does both at every call; run every epoch, it forced cuDNN's
deterministic (slower) algorithms on every GPU run, with no way to turn them off."""

from __future__ import annotations

import os
import random

import numpy as np
import torch

__all__ = ["configure", "seed_generators"]


def seed_generators(seed: int) -> None:
    """Seed torch (CPU and every GPU), numpy and Python from ``seed``; nothing else."""
    seed = int(seed) % 2**32
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)


def configure(seed: int | None, deterministic: bool | str = False) -> None:
    """Once, at start-up: seed the generators (unless ``seed`` is None) and set the backends.

    ``deterministic`` (the bundle's switch, off by default): cuDNN's deterministic algorithms
    without autotuning, ``torch.use_deterministic_algorithms`` (warning where an operation has
    no deterministic version) and cuBLAS's fixed workspace: exact GPU runs, slower. Off: cuDNN
    picks the fastest algorithms (``benchmark``). On the CPU the training is reproducible
    either way."""
    from monai.utils import str2bool

    exact = str2bool(deterministic) if isinstance(deterministic, str) else bool(deterministic)
    if seed is not None:
        seed_generators(seed)
    if exact:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # read when cuBLAS starts
    torch.backends.cudnn.deterministic = exact
    torch.backends.cudnn.benchmark = not exact
    torch.use_deterministic_algorithms(exact, warn_only=True)
