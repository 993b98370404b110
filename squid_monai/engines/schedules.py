"""Learning-rate schedules of the two optimisers (SQUID.md section 7, U4), one per epoch.

- ``"paper"`` (default): generator and discriminator both anneal with a cosine from ``lr``
  to ``lr * lr_min_ratio`` over the run (``T_max = epochs``), as the paper's text says
  ("the lr decays").
- ``"authors"``: the authors' released code: the generator anneals with a cosine of
  ``T_max = 1.5 x epochs`` to 0, so a run ends at a quarter of the initial rate
  (1e-4 -> 2.5e-5); the discriminator keeps a constant rate.

The bundle calls :func:`lr_scheduler` once per optimiser; the schedulers are ordinary
``torch.optim.lr_scheduler`` objects, saved in and resumed from checkpoints like any other.
"""

from __future__ import annotations

import torch
from torch.optim.lr_scheduler import ConstantLR, CosineAnnealingLR, LRScheduler

__all__ = ["LR_SCHEDULES", "lr_scheduler"]

#: Known schedules (see the module docstring).
LR_SCHEDULES = ("paper", "authors")
#: ``"authors"``: the generator's cosine period as a multiple of the run's epochs.
AUTHORS_GENERATOR_T_MAX_FACTOR = 1.5


def lr_scheduler(optimizer: torch.optim.Optimizer, network: str, schedule: str = "paper", epochs: int = 1,
                 lr_min_ratio: float = 0.2) -> LRScheduler:
    """The per-epoch scheduler of ``optimizer``, the optimiser of ``network``
    (``"generator"`` or ``"discriminator"``), under ``schedule`` (module docstring).
    ``lr_min_ratio`` only concerns ``"paper"``."""
    if schedule not in LR_SCHEDULES:
        raise ValueError(f"lr_schedule must be one of {LR_SCHEDULES}, got {schedule!r}")
    if network not in ("generator", "discriminator"):
        raise ValueError(f"network must be 'generator' or 'discriminator', got {network!r}")
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    if schedule == "paper":
        base = optimizer.param_groups[0]["lr"]
        return CosineAnnealingLR(optimizer, T_max=epochs, eta_min=base * lr_min_ratio)
    if network == "generator":
        return CosineAnnealingLR(optimizer, T_max=AUTHORS_GENERATOR_T_MAX_FACTOR * epochs, eta_min=0.0)
    return ConstantLR(optimizer, factor=1.0, total_iters=0)
