"""Where this process stands in a (possibly) distributed run: one definition for every
handler that must act on rank 0 only or seed per rank, and the multi-GPU rules (the model
card's "Training on several GPUs"): ``batch_size`` is the global batch
(:func:`per_rank_batch`), and what sets the scorer's calibration runs once, on rank 0
(:func:`on_rank0_then_share`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import torch
import torch.distributed as dist

__all__ = [
    "rank",
    "world_size",
    "is_main_process",
    "per_rank_batch",
    "on_rank0_then_share",
    "DDP_FAMILIES",
    "require_ddp_support",
]

T = TypeVar("T")

#: families whose trainer the multi-GPU config wraps (its generator and discriminator) and that
#: tests/test_distributed.py checks replica for replica
DDP_FAMILIES = ("squid",)


def rank() -> int:
    """This process's global rank; 0 outside torch.distributed."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def world_size() -> int:
    """The number of processes of the run; 1 outside torch.distributed."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def per_rank_batch(batch_size: int, world: int | None = None) -> int:
    """Each rank's share of the global ``batch_size`` over ``world`` ranks (default: the run's).

    The recipes' batch size, learning rate, EMA warm-up, ``n_critic`` and queue refill are
    those of one device; with the global batch split over the ranks, an optimiser step sees
    the same images and an epoch has the same iterations on any number of GPUs."""
    world = world_size() if world is None else int(world)
    batch_size = int(batch_size)
    if batch_size % world:
        raise ValueError(
            f"batch_size {batch_size} (the global batch) cannot be split over "
            f"{world} ranks: choose a multiple of {world}"
        )
    return batch_size // world


def on_rank0_then_share(module: torch.nn.Module, fit: Callable[[], T]) -> T | None:
    """``fit()`` on rank 0 only (everywhere outside torch.distributed), then ``module``'s own
    buffers (what a calibration sets) broadcast from rank 0, so every rank holds rank 0's.
    The other ranks read no calibration image. ``fit``'s result on rank 0, else None.

    Boolean buffers (settings, which a calibration never changes) are not sent: not every
    backend takes them."""
    result = fit() if is_main_process() else None
    if world_size() > 1:
        for buffer in module.buffers(recurse=False):
            if buffer.dtype != torch.bool:
                dist.broadcast(buffer, src=0)
    return result


def is_main_process() -> bool:
    """Rank 0 (or a single process): the one that logs, tracks and saves."""
    return rank() == 0


def require_ddp_support(family: str) -> None:
    """Refuse, before any process group or network exists, a family the multi-GPU config does
    not wire: the others' trainers take other networks (one auto-encoder, f-AnoGAN's
    encoder stage) or have not been checked replica for replica."""
    if family not in DDP_FAMILIES:
        raise ValueError(
            f"multi_gpu_train.json: multi-GPU training is wired and tested for {', '.join(DDP_FAMILIES)} "
            f"only, not for family {family!r}; train it on one device (drop multi_gpu_train.json)"
        )
