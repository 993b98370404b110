"""MemAE's training recipes."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from .losses import MemAELossWeights

__all__ = ["RECIPES"]

#: L2 + alpha * entropy, alpha = 0.0002 (the MemAE paper's; the documents give none)
RECIPES: dict[str, dict[str, Any]] = {
    regime: {"loss_weights": asdict(MemAELossWeights())} for regime in ("chest", "digitanatomy")
}
