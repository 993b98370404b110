"""What the bundle configs need beyond the library's building blocks: where the bundle
and its outputs live, which data a run uses, and the per-data-set defaults.

The configs stay the wiring; the decisions ("no data set given -> DigitAnatomy on the
fly", "ZhangLab layout or normal/abnormal folders") live here, once, with tests.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np
import torch

from .distributed import is_main_process
from .data.datalist import build_folders, build_zhanglab, load_datalist
from .data.datasets import make_dataset
from .data.digitanatomy import DigitAnatomyDataset, digitanatomy_split
from .transforms import train_transforms
from .transforms.compose import check_switches

__all__ = ["as_bool", "bundle_root", "curve_stability", "data_splits", "training_dataset", "validation_dataset", "calibration_dataset",
           "save_preprocessing", "trained_intensity",
           "is_main_process", "report_training"]

logger = logging.getLogger(__name__)

_BUNDLE_NAME = "squid"


def bundle_root() -> str:
    """The bundle folder, whether the command runs from the repository root, from inside
    the bundle, or elsewhere on an installed checkout (``--bundle_root`` overrides it)."""
    cwd = Path.cwd()
    for candidate in (cwd, cwd / "bundles" / _BUNDLE_NAME, Path(__file__).resolve().parents[1] / "bundles" / _BUNDLE_NAME):
        if (candidate / "configs" / "metadata.json").is_file() and (candidate / "configs" / "train.json").is_file():
            return str(candidate)
    raise FileNotFoundError(f"cannot find the {_BUNDLE_NAME} bundle from {cwd}: pass --bundle_root")


def as_bool(value) -> bool:
    """A command-line flag as a bool: python-fire passes ``--amp false`` as the string
    ``"false"``, which Python would take as true."""
    if isinstance(value, str):
        lowered = value.strip().lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off", "none", ""):
            return False
        raise ValueError(f"not a boolean flag value: {value!r} (use true or false)")
    return bool(value)


def data_splits(dataset_dir: str | None = None, datalist: str | None = None, seed: int = 0,
                val_per_class: int = 100, report_per_class: int = 100) -> dict | None:
    """Training / validation / report / test items of a real data set, or ``None`` for
    DigitAnatomy.

    ``datalist``: a MONAI datalist JSON (``python -m squid_monai.data.datalist``); its
    ``report`` and ``test`` lists may be absent (empty).
    ``dataset_dir``: a ZhangLab layout (``train|test/NORMAL|PNEUMONIA``) or generic
    ``normal/`` and ``abnormal/`` folders, split by the paper's protocol with ``seed``
    (``val_per_class`` normal and abnormal validation images; the paper uses 100), plus
    the report split of ``report_per_class`` normal and abnormal images drawn after them
    and removed from training (:mod:`squid_monai.data.datalist`; 0: none).
    """
    if datalist:
        path = Path(datalist)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: datalist not found")
        splits = {}
        for split in ("training", "validation", "report", "test"):
            try:
                splits[split] = load_datalist(path, split)
            except (KeyError, ValueError):
                splits[split] = []
        if not splits["training"] or not splits["validation"]:
            raise ValueError(f"{path}: the datalist needs non-empty 'training' and 'validation' lists")
        return splits
    if dataset_dir:
        root = Path(dataset_dir)
        if not root.is_dir():
            raise FileNotFoundError(f"{root}: dataset_dir is not a folder")
        protocol = dict(seed=seed, n_val_normal=val_per_class, n_val_abnormal=val_per_class,
                        n_report_normal=report_per_class, n_report_abnormal=report_per_class)
        if (root / "train" / "NORMAL").is_dir():
            return build_zhanglab(root, **protocol)
        return build_folders(root, **protocol)
    return None


def training_dataset(splits: dict | None, image_size: int, seed: int = 0, digitanatomy_length: int = 1024,
                     cache: bool = True, skip_bad: bool = False, report_path: str | None = None,
                     num_workers: int | None = None, intensity: str = "percentile",
                     augment_resampling: str = "bilinear") -> torch.utils.data.Dataset:
    """Augmented training set: the real data's training split, or DigitAnatomy normals
    generated on the fly (``digitanatomy_length`` fresh images per epoch). ``intensity``
    and ``augment_resampling``: the preprocessing switches of
    :mod:`squid_monai.transforms.compose`."""
    options = check_switches(intensity=intensity, augment_resampling=augment_resampling)
    if splits is None:
        return DigitAnatomyDataset(digitanatomy_length, seed=seed, transform=train_transforms(image_size, **options))
    items = [it for it in splits["training"] if "image" in it]
    logger.info("training on %d images (%d normal)", len(items), sum(int(it.get("label", 0)) == 0 for it in items))
    return make_dataset(items, image_size, train=True, cache=cache, skip_bad=skip_bad, report_path=report_path,
                        num_workers=num_workers, **options)


def validation_dataset(splits: dict | None, image_size: int, seed: int = 0, split: str = "validation",
                       n_normal: int = 100, n_abnormal: int = 100, cache: bool = True, skip_bad: bool = False,
                       report_path: str | None = None, intensity: str = "percentile") -> torch.utils.data.Dataset:
    """Un-augmented labelled set: a split of the real data (``validation``, ``report`` or
    ``test``), or fixed-seed DigitAnatomy images (unseen handwriting) with ``n_normal``
    normals and ``n_abnormal`` anomalies (its ``validation``, ``report`` or ``test`` set;
    any other name: ``test``)."""
    options = check_switches(intensity=intensity)
    if splits is None:
        which = split if split in ("validation", "report") else "test"
        items = digitanatomy_split(n_normal, n_abnormal, seed=seed, split=which)
    else:
        items = splits.get(split) or []
        if not items:
            raise ValueError(f"the data set has no {split!r} split")
    return make_dataset(items, image_size, train=False, cache=cache, skip_bad=skip_bad, report_path=report_path,
                        **options)


def calibration_dataset(splits: dict | None, image_size: int, seed: int = 0, max_images: int = 256,
                        cache: bool = True, intensity: str = "percentile") -> torch.utils.data.Dataset:
    """Un-augmented normal training images for the score calibration (at most
    ``max_images``, drawn with ``seed``)."""
    if splits is None:
        items = digitanatomy_split(max_images, 0, seed=seed, split="training")
    else:
        normals = [it for it in splits["training"] if int(it.get("label", 0)) == 0]
        if not normals:
            raise ValueError("calibration needs normal training images; the training split has none")
        pick = np.random.default_rng(seed).permutation(len(normals))[:max_images]
        items = [normals[i] for i in sorted(pick)]
    return make_dataset(items, image_size, train=False, cache=cache, **check_switches(intensity=intensity))


def save_preprocessing(ckpt_dir: str | os.PathLike, intensity: str = "percentile") -> Path:
    """Record the intensity rule a model was trained with in ``<ckpt_dir>/preprocessing.json``,
    so that evaluation and inference preprocess exactly as training did."""
    path = Path(ckpt_dir, "preprocessing.json")
    if is_main_process():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(check_switches(intensity=intensity), indent=2))
    return path


def trained_intensity(ckpt_dir: str | os.PathLike, default: str = "percentile") -> str:
    """The intensity rule recorded beside a trained model (:func:`save_preprocessing`), or
    ``default`` for a model folder without the record (trained before the switch existed:
    ``"percentile"``)."""
    path = Path(ckpt_dir, "preprocessing.json")
    if not path.is_file():
        return check_switches(intensity=default)["intensity"]
    return check_switches(intensity=json.loads(path.read_text()).get("intensity", default))["intensity"]


def curve_stability(auc_per_epoch: dict, warmup_fraction: float = 0.3) -> dict:
    """How steady a validation curve is: the standard deviation of the AUC from epoch to
    epoch after warm-up (the first ``warmup_fraction`` of the validated epochs, at least
    one, are left out) and how far the last AUC lies below the peak."""
    epochs = sorted(auc_per_epoch, key=int)
    values = np.array([auc_per_epoch[e] for e in epochs], dtype=float)
    if values.size == 0:
        return {}
    start = max(1, int(round(warmup_fraction * values.size))) if values.size > 2 else 0
    return {"val_auc_std_after_warmup": round(float(values[start:].std()), 4),
            "val_auc_last": round(float(values[-1]), 4), "val_auc_peak": round(float(values.max()), 4),
            "val_auc_drop_from_peak": round(float(values.max() - values[-1]), 4)}


def report_training(trainer, evaluator, ckpt_dir: str | os.PathLike) -> dict:
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
        "last_val_metrics": {k: round(float(v), 4) for k, v in state.metrics.items() if np.isscalar(v)},
        "skipped_steps": int(getattr(trainer.state, "skipped_steps", 0)),
        "best_model": str(Path(ckpt_dir) / "model.pt"),
    }
    summary["val_auc_per_epoch"] = history
    summary["selection_metric_per_epoch"] = getattr(evaluator, "key_metric_history", {})
    summary.update(curve_stability(summary["val_auc_per_epoch"]))
    if is_main_process():
        Path(ckpt_dir, "training_summary.json").write_text(json.dumps(summary, indent=2))
        print(f"SQUID training finished: best validation AUC {summary['best_val_auc']:.4f} at epoch "
              f"{summary['best_epoch']} of {summary['epochs']}; best model {summary['best_model']}", flush=True)
    return summary
