"""The auto-encoder's training recipes."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from .losses import AutoEncoderLossWeights

__all__ = ["RECIPES"]

#: L2 only: the same recipe on chest X-rays and DigitAnatomy
RECIPES: dict[str, dict[str, Any]] = {
    regime: {"loss_weights": asdict(AutoEncoderLossWeights())}
    for regime in ("chest", "digitanatomy")
}
