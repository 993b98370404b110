"""The auto-encoder's training recipes."""

from __future__ import annotations

from typing import Any

__all__ = ["RECIPES"]

#: L2 only: the same recipe on chest X-rays and DigitAnatomy
RECIPES: dict[str, dict[str, Any]] = {
    regime: {"loss_weights": {"reconstruction": 1.0, "entropy": 0.0}}
    for regime in ("chest", "digitanatomy")
}
