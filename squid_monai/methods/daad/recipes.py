"""DAAD's training recipes, the same on both data regimes: the loss weights of eq. (3) and the
optimiser of section 4.1 (Adam, betas (0.9, 0.999), no weight decay; learning rate 1e-4 for
DAAD, 2e-4 for DAAD+, ``adversarial_lr``, which ``daad_plus.json`` picks)."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from .losses import DAADLossWeights

__all__ = ["RECIPES"]

_RECIPE: dict[str, Any] = {
    "loss_weights": asdict(DAADLossWeights()),
    "lr": 1e-4,
    "adversarial_lr": 2e-4,
    "betas": (0.9, 0.999),
    "weight_decay": 0.0,
}

RECIPES: dict[str, dict[str, Any]] = {"chest": dict(_RECIPE), "digitanatomy": dict(_RECIPE)}
