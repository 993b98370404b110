"""Learning rates of the two optimisers: the schedules (SQUID.md section 7, U4), one per
epoch, and the generator's parameter groups.

- ``"paper"`` (default): generator and discriminator both anneal with a cosine from ``lr``
  to ``lr * lr_min_ratio`` over the run (``T_max = epochs``), as the paper's text says
  ("the lr decays").
- ``"authors"``: the authors' released code: the generator anneals with a cosine of
  ``T_max = 1.5 x epochs`` to 0, so a run ends at a quarter of the initial rate
  (1e-4 -> 2.5e-5); the discriminator keeps a constant rate.

The bundle calls :func:`lr_scheduler` once per optimiser; the schedulers are ordinary
``torch.optim.lr_scheduler`` objects, saved in and resumed from checkpoints like any other.
:func:`generator_groups` gives the decoders' output heads their own rate (``head_lr_factor``).
"""

from __future__ import annotations

import torch
from torch.optim.lr_scheduler import ConstantLR, CosineAnnealingLR, LRScheduler

__all__ = ["LR_SCHEDULES", "generator_groups", "lr_scheduler"]

#: Known schedules (see the module docstring).
LR_SCHEDULES = ("paper", "authors")
#: ``"authors"``: the generator's cosine period as a multiple of the run's epochs.
AUTHORS_GENERATOR_T_MAX_FACTOR = 1.5


def lr_scheduler(
    optimizer: torch.optim.Optimizer,
    network: str,
    schedule: str = "paper",
    epochs: int = 1,
    lr_min_ratio: float = 0.2,
) -> LRScheduler:
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
        return CosineAnnealingLR(
            optimizer, T_max=AUTHORS_GENERATOR_T_MAX_FACTOR * epochs, eta_min=0.0
        )
    return ConstantLR(optimizer, factor=1.0, total_iters=0)


def generator_groups(generator: torch.nn.Module, lr: float, head_lr_factor: float = 1.0) -> list:
    """The generator optimiser's parameters: all of them at ``lr`` (``head_lr_factor`` 1, the
    paper's single rate), or the decoders' output heads (each decoder's last 1x1 convolution,
    a module named ``head``) in a second group at ``lr * head_lr_factor``.

    Why (beyond the paper): Adam moves a parameter by about its rate per step, so in the
    DigitAnatomy default's 640 steps at 2e-4 the heads' biases end within 0.1 of where they
    were initialised; the reconstruction's brightness then has to come from the features
    alone, and on some seeds it stays grey (docs/EXPERIMENTS.md, session 20). A faster head
    lets the output's level and contrast settle in the first steps, from any start (30 on
    DigitAnatomy: docs/EXPERIMENTS.md, session 21). Under the ``"paper"`` schedule the head
    group anneals to the same floor as the others (``lr * lr_min_ratio``), so the head is
    fast early and common late.
    """
    if head_lr_factor <= 0:
        raise ValueError(f"head_lr_factor must be > 0, got {head_lr_factor}")
    if head_lr_factor == 1:
        return list(generator.parameters())
    head = [p for name, p in generator.named_parameters() if name.split(".")[-2:-1] == ["head"]]
    if not head:
        raise ValueError(
            f"head_lr_factor {head_lr_factor}: {type(generator).__name__} has no module named 'head'"
        )
    ids = {id(p) for p in head}
    rest = [p for p in generator.parameters() if id(p) not in ids]
    return [{"params": rest}, {"params": head, "lr": lr * head_lr_factor}]
