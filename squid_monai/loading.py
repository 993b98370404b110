"""A scorer from a trained-model folder (:mod:`squid_monai.artifact`), or an untrained one
of a preset; with ``backend="auto"`` the folder's fastest export that meets the parity
contract (:mod:`.scoring.parity`) when there is one.

This is where a stored :class:`~squid_monai.artifact.Recipe` meets its model family
(:func:`~squid_monai.methods.base.get_family`): above the families, so that the artifact and
the scoring package below them never reach up into ``methods/``."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from .artifact import DEFAULT_FAMILY, EXPORT_FILES, RECIPE_FILE, ModelCard, Recipe
from .methods.base import get_family

__all__ = [
    "AUTO_ORDER",
    "OPT_IN",
    "build",
    "build_networks",
    "build_scorer",
    "export_problem",
    "image_size",
    "load_scorer",
    "load_export",
    "network_config",
    "problem_here",
    "save_network_config",
]

logger = logging.getLogger(__name__)

#: the exports ``backend="auto"`` tries, fastest first (BENCHMARKS.md, "Speed")
AUTO_ORDER = ("openvino_int8", "openvino", "onnx")


def network_config(recipe: Recipe) -> dict[str, Any]:
    """The recipe's network settings: the pinned ones, or the preset's with the overrides
    applied (unknown keys are an error)."""
    return get_family(recipe.family).get_config(recipe.preset, **recipe.settings)


def image_size(recipe: Recipe) -> int:
    """Side of the square model input of ``recipe``."""
    size = network_config(recipe)["image_size"]
    return int(size[0] if isinstance(size, (list, tuple)) else size)


def build(recipe: Recipe):
    """An untrained scorer of ``recipe`` (load a state dict into it)."""
    return get_family(recipe.family).build_scorer(recipe.preset, **recipe.settings)


def build_networks(recipe: Recipe, device: str | torch.device | None = None) -> list:
    """The untrained networks of ``recipe`` (what its family's trainer drives) on ``device``:
    the bundle's ``networks`` block."""
    family = get_family(recipe.family)
    return [net.to(device) for net in family.build_networks(recipe.preset, **recipe.settings)]


def pin(recipe: Recipe) -> Recipe:
    """``recipe`` with every network setting resolved today pinned (a bad recipe fails now)."""
    return replace(recipe, pinned=network_config(recipe))


def save_network_config(
    path: str | os.PathLike,
    preset: str | Recipe,
    family: str = DEFAULT_FAMILY,
    *,
    domain: Mapping[str, Any] | None = None,
    **overrides: Any,
) -> Path:
    """Write the recipe of a trained network (family, preset, overrides; or a :class:`Recipe`),
    every setting pinned, beside its weights (:meth:`Recipe.save`), so that every consumer
    rebuilds exactly the trained architecture; with the ``domain`` it is trained on
    (:meth:`~squid_monai.workflow.DataSource.domain`) when given."""
    recipe = preset if isinstance(preset, Recipe) else Recipe(preset, overrides, family=family)
    if domain is not None:
        recipe = replace(recipe, domain=dict(domain))
    return pin(recipe).save(path)


def build_scorer(preset: str = "paper", family: str = DEFAULT_FAMILY, **overrides: Any):
    """An untrained scorer of a family's preset (bundle configs use it as ``network_def``)."""
    return build(Recipe(preset, overrides, family=family))


def load_scorer(
    weights: str | os.PathLike,
    network_config: Recipe | Mapping | str | os.PathLike | None = None,
    map_location: str | torch.device = "cpu",
    backend: str = "pytorch",
):
    """Rebuild a trained scorer from ``model.pt`` (a scorer state dict, or a checkpoint
    holding it under ``model``) and its recipe (default: ``network.json`` beside the
    weights). Loads with ``weights_only=True``, to the CPU whatever device saved it, then moves
    the scorer to ``map_location``.

    ``backend``: ``"pytorch"``; an export format of :data:`~squid_monai.artifact.EXPORT_FILES`
    beside the weights (an opt-in: used whatever its card's parity says); or ``"auto"``: on a
    CPU, the first of :data:`AUTO_ORDER` that is there, exported from these weights, whose
    runtime is installed, whose card says it meets the parity contract and which meets it on
    this machine too (:func:`.scoring.parity.problem_here`), else PyTorch."""
    scorer = _load_pytorch(weights, network_config, map_location)
    if backend == "pytorch" or (backend == "auto" and torch.device(map_location).type != "cpu"):
        return scorer
    if backend != "auto":
        return load_export(Path(weights).parent, backend, scorer, required=True)
    for fmt in AUTO_ORDER:
        exported = load_export(Path(weights).parent, fmt, scorer)
        if exported is not None:
            return exported
    return scorer


def load_export(model_dir: str | os.PathLike, fmt: str, reference, required: bool = False):
    """The ``fmt`` export in ``model_dir`` as an :class:`~.runtimes.ExportedScorer` around
    ``reference`` (its PyTorch scorer), or None when :func:`export_problem` finds one (then,
    if ``required``, an error), or, unless ``required``, its card does not say ``default``
    or it misses the contract on this machine (:func:`.scoring.parity.problem_here`)."""
    from .scoring import runtimes

    path = Path(model_dir) / EXPORT_FILES[fmt] if fmt in EXPORT_FILES else None
    problem = export_problem(path, fmt, _calibration(reference), required)
    if problem and required:
        raise FileNotFoundError(f"{path}: {problem}")
    exported = None if problem else runtimes.ExportedScorer(path, reference, fmt)
    if exported is not None and not required:
        problem = problem_here(reference, exported, path, fmt)
        exported = None if problem else exported
    if problem:
        if path.is_file() and problem != OPT_IN:
            logger.warning("%s: %s; scoring with PyTorch", path, problem)
        return None
    return exported


def problem_here(reference, candidate, path: Path, fmt: str) -> str | None:
    """:func:`.scoring.parity.problem_here` of the ``fmt`` export at ``path`` (its card gives the
    image size): the one load-time check of :func:`load_scorer`, the MLflow model and the
    deploy app."""
    from .scoring import parity, runtimes

    size = ModelCard.from_json(runtimes.embedded_card(path), str(path)).image_size
    return parity.problem_here(reference, candidate, size, quantised=fmt.endswith("int8"))


#: :func:`export_problem`'s answer for a valid export measured outside the parity contract
OPT_IN = "an opt-in export (its card does not meet the parity contract)"


def export_problem(
    path: Path | None, fmt: str, calibration: tuple[float, float, float], opt_in: bool = False
) -> str | None:
    """Why the ``fmt`` export at ``path`` cannot stand in for the scorer whose calibration
    (mean, std, threshold) is given, or None when it can: not there, its runtime not
    installed, exported from other weights, or (unless ``opt_in``) :data:`OPT_IN`. The one
    rule shared by :func:`load_scorer`, the MLflow model and the deploy app."""
    from .scoring import runtimes

    if fmt not in runtimes.RUNTIMES:
        raise ValueError(
            f"backend must be 'pytorch', 'auto' or one of {sorted(runtimes.RUNTIMES)}, got {fmt!r}"
        )
    if not path.is_file():
        return "not exported"
    if not runtimes.available(fmt):
        return f"runtime {runtimes.RUNTIMES[fmt]} not installed (pip install squid-monai[export])"
    card = ModelCard.from_json(runtimes.embedded_card(path), str(path))
    if (card.mean, card.std, card.threshold) != tuple(float(v) for v in calibration):
        return "exported from other weights (calibration differs): export again"
    return None if opt_in or card.parity.get("default") else OPT_IN


def _calibration(scorer) -> tuple[float, float, float]:
    return float(scorer.mean), float(scorer.std), float(scorer.threshold)


def _load_pytorch(weights, network_config, map_location):
    weights = Path(weights)
    recipe = Recipe.of(weights.with_name(RECIPE_FILE) if network_config is None else network_config)
    try:
        state = torch.load(weights, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, EOFError) as err:
        raise ValueError(f"{weights}: not a readable checkpoint ({err})") from err
    state = state.get("model", state) if isinstance(state, dict) else state
    # an unpinned recipe may predate a change of its preset: then try the preset's earlier definitions
    family = get_family(recipe.family)
    earlier = (
        ()
        if recipe.pinned is not None
        else getattr(family, "preset_revisions", {}).get(recipe.preset, ())
    )
    for candidate in (
        recipe,
        *(replace(recipe, overrides={**revision, **recipe.overrides}) for revision in earlier),
    ):
        scorer = build(candidate)
        try:
            missing, unexpected = scorer.load_state_dict(state, strict=False)
        except RuntimeError as err:  # shapes of another architecture
            problem = str(err).splitlines()[-1].strip()
            continue
        if missing or unexpected:
            raise ValueError(
                f"{weights}: does not match the network recipe (missing {missing[:3]}, unexpected {unexpected[:3]})"
            )
        return scorer.to(map_location)
    raise ValueError(f"{weights}: does not match the network recipe {recipe.as_dict()} ({problem})")
