"""Where this process stands in a (possibly) distributed run: one definition for every
handler that must act on rank 0 only or seed per rank."""

from __future__ import annotations

import torch.distributed as dist

__all__ = ["rank", "is_main_process"]


def rank() -> int:
    """This process's global rank; 0 outside torch.distributed."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def is_main_process() -> bool:
    """Rank 0 (or a single process): the one that logs, tracks and saves."""
    return rank() == 0
