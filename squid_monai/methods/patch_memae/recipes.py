"""Patch-MemAE's training recipes: MemAE's."""

from __future__ import annotations

from typing import Any

from ..memae import RECIPES as MEMAE_RECIPES

__all__ = ["RECIPES"]

#: each position's MemAE objective, summed: MemAE's recipes
RECIPES: dict[str, dict[str, Any]] = MEMAE_RECIPES
