"""Where this process stands in a (possibly) distributed run: one definition for every
handler that must act on rank 0 only or seed per rank."""

from __future__ import annotations

import torch.distributed as dist

__all__ = ["rank", "is_main_process", "DDP_FAMILIES", "require_ddp_support"]

#: families whose trainer the multi-GPU config wraps (its generator and discriminator) and that
#: tests/test_distributed.py checks replica for replica
DDP_FAMILIES = ("squid",)


def rank() -> int:
    """This process's global rank; 0 outside torch.distributed."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def is_main_process() -> bool:
    """Rank 0 (or a single process): the one that logs, tracks and saves."""
    return rank() == 0


def require_ddp_support(family: str) -> None:
    """Refuse, before any process group or network exists, a family the multi-GPU config does
    not wire: the others' trainers take other networks (one auto-encoder, f-AnoGAN's
    encoder stage) or have not been checked replica for replica."""
    if family not in DDP_FAMILIES:
        raise ValueError(f"multi_gpu_train.json: multi-GPU training is wired and tested for {', '.join(DDP_FAMILIES)} "
                         f"only, not for family {family!r}; train it on one device (drop multi_gpu_train.json)")
