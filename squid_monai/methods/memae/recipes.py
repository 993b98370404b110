"""MemAE's training recipes."""

from __future__ import annotations

from typing import Any

__all__ = ["RECIPES"]

#: L2 + alpha * entropy, alpha = 0.0002 (the MemAE paper's; the documents give none)
RECIPES: dict[str, dict[str, Any]] = {
    regime: {"loss_weights": {"reconstruction": 1.0, "entropy": 0.0002}}
    for regime in ("chest", "digitanatomy")
}
