"""DAAD's training recipes: the loss weights of eq. (3), the paper's on both data regimes."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from .losses import DAADLossWeights

__all__ = ["RECIPES"]

RECIPES: dict[str, dict[str, Any]] = {
    "chest": {"loss_weights": asdict(DAADLossWeights())},
    "digitanatomy": {"loss_weights": asdict(DAADLossWeights())},
}
