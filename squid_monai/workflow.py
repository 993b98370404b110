"""What the bundle configs need beyond the library's building blocks: where the bundle
and its outputs live, which data a run uses, the recipes a run pins, and its report.

The configs stay the wiring; the decisions live here, once, with tests. Which data a run uses
(:class:`DataSource`, chosen by :func:`choose_data`) and :func:`bundle_root` are
:mod:`squid_monai.data.sources`', re-exported here for the configs. Command-line flags become
bools with ``monai.utils.str2bool`` in the configs.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np
import torch
from monai.utils import str2bool

from .artifact import (
    DEFAULT_FAMILY,
    RECIPE_FILE,
    REFERENCE_FILE,
    TRAINING_FILE,
    WEIGHTS_FILE,
    Recipe,
    load_training_settings,
    save_preprocessing,
    save_training_settings,
    trained_intensity,
    write_json,
)
from .data.sources import (
    DatalistSource,
    DataSource,
    DigitAnatomySource,
    bundle_root,
    choose_data,
)
from .distributed import is_main_process
from .handlers.checkpoint import latest_checkpoint

__all__ = [
    "DataSource",
    "add_domain_guard",
    "DatalistSource",
    "DigitAnatomySource",
    "bundle_root",
    "choose_data",
    "curve_stability",
    "is_main_process",
    "report_training",
    "save_preprocessing",
    "save_training_settings",
    "trained_intensity",
    "network_recipe",
    "reference_model",
    "training_recipe",
]

logger = logging.getLogger(__name__)

#: the reference chest model, relative to the bundle folder (``python -m squid_monai.reference``)
REFERENCE_DIR = Path("reference") / "chest_xray"


def reference_model(bundle_root: str | os.PathLike) -> str:
    """The bundle's reference model folder (``configs/reference.json``'s ``ckpt_dir``), or a
    clear error when this checkout has none."""
    folder = Path(bundle_root) / REFERENCE_DIR
    if not (folder / REFERENCE_FILE).is_file():
        raise FileNotFoundError(
            f"{folder}: no reference model here (no {REFERENCE_FILE}); package a trained model "
            "folder with python -m squid_monai.reference build --model_dir <run>/models "
            "--dataset_dir <its data>"
        )
    return str(folder)


def network_recipe(
    ckpt_dir: str | os.PathLike,
    preset: str,
    overrides: dict | None = None,
    family: str = DEFAULT_FAMILY,
    resume: bool | str = True,
) -> Recipe:
    """The network recipe a training run builds: the requested one, or, when the run resumes
    from a checkpoint of ``ckpt_dir``, the one that run pinned in its ``network.json``, so
    that a later change of the preset's definition cannot change a half-trained network.

    Resuming with another family, preset or overrides than the folder's run is an error
    naming the file (the checkpoint would not fit, or worse, would fit a different model).
    """
    requested = Recipe(preset, dict(overrides or {}), family=family)
    path = Path(ckpt_dir, RECIPE_FILE)
    if not _resumes_from(path, resume):
        return requested
    stored = Recipe.load(path)
    asked, had = (
        json.loads(json.dumps([r.family, r.preset, dict(r.overrides)])) for r in (requested, stored)
    )
    if asked != had:
        raise ValueError(
            f"{path}: the run in this folder was trained with family {stored.family!r}, preset {stored.preset!r} "
            f"and network overrides {dict(stored.overrides)}; this command asks for family {family!r}, preset "
            f"{preset!r} and overrides {dict(requested.overrides)}. Resume with the same settings, or start afresh "
            "with --resume false or another --output_dir"
        )
    return stored


def _resumes_from(pinned: Path, resume: bool | str) -> bool:
    """Whether a run resumes with the settings pinned in ``pinned`` (a file of its
    checkpoint folder): resume asked for, the file there and a checkpoint beside it."""
    resume = str2bool(resume) if isinstance(resume, str) else bool(resume)
    return resume and pinned.is_file() and latest_checkpoint(pinned.parent) is not None


def training_recipe(
    ckpt_dir: str | os.PathLike, family, name: str, resume: bool | str = True
) -> dict:
    """The training recipe a run of ``family`` (a :class:`~squid_monai.methods.base.ModelFamily`)
    uses: its recipe ``name`` as defined today, or, when the run resumes from a checkpoint of
    ``ckpt_dir``, the one that run pinned in its ``training.json``
    (:func:`~squid_monai.artifact.save_training_settings`), so that a recipe changed since (a
    new learning rate, input erasing switched on) cannot change a half-trained run. Settings
    given on the command line still override single keys, as on a fresh start.

    Resuming a run of another family or recipe (other data) is an error naming the file. A
    setting the pinned file lacks (pinned before the recipe held it, when a config literal
    with today's value set it) comes from today's recipe.
    """
    from .methods import get_recipe

    path = Path(ckpt_dir, TRAINING_FILE)
    today = get_recipe(family, name)
    if not _resumes_from(path, resume):
        return today
    stored, had, settings = load_training_settings(ckpt_dir)
    if (stored, had) != (family.name, name):
        raise ValueError(
            f"{path}: the run in this folder was trained with {stored}'s {had!r} recipe; this "
            f"command asks for {family.name}'s {name!r}. Resume with the same family and data, or start "
            "afresh with --resume false or another --output_dir"
        )
    return {**today, **settings}


def curve_stability(auc_per_epoch: dict, warmup_fraction: float = 0.3) -> dict:
    """How steady a validation curve is: the standard deviation of the AUC from epoch to
    epoch after warm-up (the first ``warmup_fraction`` of the validated epochs, at least
    one, are left out) and how far the last AUC lies below the peak."""
    epochs = sorted(auc_per_epoch, key=int)
    values = np.array([auc_per_epoch[e] for e in epochs], dtype=float)
    if values.size == 0:
        return {}
    start = max(1, int(round(warmup_fraction * values.size))) if values.size > 2 else 0
    return {
        "val_auc_std_after_warmup": round(float(values[start:].std()), 4),
        "val_auc_last": round(float(values[-1]), 4),
        "val_auc_peak": round(float(values.max()), 4),
        "val_auc_drop_from_peak": round(float(values.max() - values[-1]), 4),
    }


def report_training(trainer, evaluator, ckpt_dir: str | os.PathLike, *, family: str) -> dict:
    """Print (and return) what a finished run reached: best validation AUC and where the
    models are; also written to ``<ckpt_dir>/training_summary.json`` (with the validation
    AUC of every epoch of this process) for scripts."""
    state = evaluator.state
    history = getattr(evaluator, "auc_history", {})
    best_epoch = int(state.best_metric_epoch)
    summary = {
        "epochs": int(trainer.state.epoch),
        # the selection metric (e.g. the smoothed AUC) and the plain AUC of the chosen epoch
        "selection_metric": state.key_metric_name,
        "best_selection_value": float(state.best_metric),
        "best_val_auc": float(history.get(best_epoch, state.best_metric)),
        "best_epoch": best_epoch,
        "last_val_metrics": {
            k: round(float(v), 4) for k, v in state.metrics.items() if np.isscalar(v)
        },
        "skipped_steps": int(getattr(trainer.state, "skipped_steps", 0)),
        # Ignite's wall time of this process's run (training and validation; a resumed run
        # counts from the resume)
        "train_time_s": round(float(trainer.state.times.get("COMPLETED") or 0.0), 1),
        "best_model": str(Path(ckpt_dir) / WEIGHTS_FILE),
    }
    summary["val_auc_per_epoch"] = history
    summary["selection_metric_per_epoch"] = getattr(evaluator, "key_metric_history", {})
    summary.update(curve_stability(summary["val_auc_per_epoch"]))
    if is_main_process():
        write_json(Path(ckpt_dir, "training_summary.json"), summary)
        print(
            f"{family} training finished: best validation AUC {summary['best_val_auc']:.4f} at epoch "
            f"{summary['best_epoch']} of {summary['epochs']}; best model {summary['best_model']}",
            flush=True,
        )
    return summary


def add_domain_guard(model_dir: str | os.PathLike, data: DataSource, max_images: int = 256) -> dict:
    """Give a model folder trained before the domain guard (:mod:`squid_monai.scoring.domain`)
    its guard without training again: the guard fitted on ``data``'s normal calibration images
    (preprocessed as the model was trained) into ``model.pt``, the domain recorded in
    ``network.json``. Scores do not change (the guard reads only the images); exports made
    before must be made again to carry it. Returns the domain record."""
    from dataclasses import replace

    from .loading import image_size
    from .scoring import domain

    model_dir = Path(model_dir)
    recipe, intensity = Recipe.load(model_dir), trained_intensity(model_dir)
    size = image_size(recipe)
    normals = data.calibration(size, max_images=max_images, cache=False, intensity=intensity)
    images = torch.stack(
        [torch.as_tensor(normals[i]["image"]).float() for i in range(len(normals))]
    )
    bank, limit, _ = domain.fit_bank(domain.thumbnails(images))
    path = model_dir / WEIGHTS_FILE
    stored = torch.load(path, map_location="cpu", weights_only=True)
    state = stored.get("model", stored)  # a scorer state dict, or a checkpoint holding it
    state["domain_bank"], state["domain_limit"] = bank, limit
    torch.save(stored, path)
    record = data.domain(size, intensity)
    replace(recipe, domain=record).save(model_dir)
    return record
