"""Patch-MemAE's trainer is MemAE's: one iteration over all positions' MemAEs at once, on the
sum of their objectives (disjoint parameters: each gets exactly its own gradient)."""

from __future__ import annotations

from ..memae import MemAETrainer

__all__ = ["MemAETrainer"]
