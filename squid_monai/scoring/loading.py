"""A scorer from a trained-model folder (:mod:`squid_monai.artifact`), or an untrained one
of a preset."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from ..artifact import RECIPE_FILE, Recipe

__all__ = ["build_scorer", "load_scorer", "save_network_config"]


def save_network_config(path: str | os.PathLike, preset: str, method: str = "squid", **overrides: Any) -> Path:
    """Write the recipe of a trained network (family, preset, overrides) beside its weights
    (:meth:`Recipe.save`), so that every consumer rebuilds exactly the trained architecture."""
    return Recipe(preset, overrides, method=method).save(path)


def build_scorer(preset: str = "paper", method: str = "squid", **overrides: Any):
    """An untrained scorer of a family's preset (bundle configs use it as ``network_def``)."""
    return Recipe(preset, overrides, method=method).build()


def load_scorer(weights: str | os.PathLike, network_config: Recipe | Mapping | str | os.PathLike | None = None,
                map_location: str | torch.device = "cpu"):
    """Rebuild a trained scorer from ``model.pt`` (a scorer state dict, or a checkpoint
    holding it under ``model``) and its recipe (default: ``network.json`` beside the
    weights). Loads with ``weights_only=True``."""
    weights = Path(weights)
    recipe = Recipe.of(weights.with_name(RECIPE_FILE) if network_config is None else network_config)
    scorer = recipe.build()
    try:
        state = torch.load(weights, map_location=map_location, weights_only=True)
    except (OSError, RuntimeError, EOFError) as err:
        raise ValueError(f"{weights}: not a readable checkpoint ({err})") from err
    state = state.get("model", state) if isinstance(state, dict) else state
    missing, unexpected = scorer.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(f"{weights}: does not match the network recipe (missing {missing[:3]}, unexpected {unexpected[:3]})")
    return scorer.to(map_location)
