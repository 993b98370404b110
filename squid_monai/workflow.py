"""What the bundle configs need beyond the library's building blocks: where the bundle
and its outputs live, which data a run uses, and the per-data-set defaults.

The configs stay the wiring; the decisions ("no data set given -> DigitAnatomy on the
fly", "ZhangLab layout or normal/abnormal folders") live here, once, with tests: the
:class:`DataSource` chosen by :func:`choose_data` gives every dataset of a run and the
data's default network preset and training recipe. Command-line flags become bools with
``monai.utils.str2bool`` in the configs.
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
from .data.datalist import build_from_folder, load_datalist
from .data.datasets import make_dataset
from .data.digitanatomy import DigitAnatomyDataset, digitanatomy_split
from .distributed import is_main_process
from .handlers.checkpoint import latest_checkpoint
from .transforms import train_transforms
from .transforms.compose import check_switches

__all__ = [
    "DataSource",
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

_BUNDLE_NAME = "squid"
#: the reference chest model, relative to the bundle folder (``python -m squid_monai.reference``)
REFERENCE_DIR = Path("reference") / "chest_xray"


def bundle_root() -> str:
    """The bundle folder, whether the command runs from the repository root, from inside
    the bundle, or elsewhere on an installed checkout (``--bundle_root`` overrides it)."""
    cwd = Path.cwd()
    for candidate in (
        cwd,
        cwd / "bundles" / _BUNDLE_NAME,
        Path(__file__).resolve().parents[1] / "bundles" / _BUNDLE_NAME,
    ):
        if (candidate / "configs" / "metadata.json").is_file() and (
            candidate / "configs" / "train.json"
        ).is_file():
            return str(candidate)
    raise FileNotFoundError(f"cannot find the {_BUNDLE_NAME} bundle from {cwd}: pass --bundle_root")


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


class DataSource:
    """The one decision "which data does this run use", taken by :func:`choose_data`; every
    dataset of a run and the data-dependent defaults (network preset, training recipe) come
    from it, so no config or function tests "no data given" again.

    Attributes:
        name: ``"digitanatomy"`` or ``"datalist"``.
        preset: the default network preset for this data.
        recipe: the training recipe (:mod:`squid_monai.methods.squid.recipes`) for this data.
        splits: the training / validation / test items (None for DigitAnatomy, generated).
        origin: where the items come from (the datalist file or the image folder; empty
            for DigitAnatomy), the source of the run's dataset lineage (:mod:`.data.lineage`).
    """

    name = ""
    preset = ""
    recipe = ""
    splits: dict | None = None
    origin = ""

    def __init__(self, seed: int = 0):
        self.seed = seed

    def training(
        self,
        image_size: int,
        digitanatomy_length: int = 1024,
        cache: bool = True,
        skip_bad: bool = False,
        report_path: str | None = None,
        num_workers: int | None = None,
        intensity: str = "percentile",
        augment_resampling: str = "bilinear",
        global_augment: str = "none",
    ) -> torch.utils.data.Dataset:
        """The augmented training set (``intensity``, ``augment_resampling`` and
        ``global_augment``: the preprocessing switches of :mod:`squid_monai.transforms.compose`)."""
        raise NotImplementedError

    def validation(
        self,
        image_size: int,
        split: str = "validation",
        n_normal: int = 100,
        n_abnormal: int = 100,
        cache: bool = True,
        skip_bad: bool = False,
        report_path: str | None = None,
        intensity: str = "percentile",
    ) -> torch.utils.data.Dataset:
        """An un-augmented labelled split (``validation``, ``report`` or ``test``)."""
        raise NotImplementedError

    def calibration(
        self,
        image_size: int,
        max_images: int = 256,
        cache: bool = True,
        intensity: str = "percentile",
        on: str = "normals",
    ) -> torch.utils.data.Dataset:
        """Un-augmented training images for the score calibration (at most ``max_images``):
        ``on="normals"`` the normal ones; ``on="training"`` the training images as they are,
        labels unread, for training data nobody has sorted (the paper's Figure 10 study)."""
        raise NotImplementedError


class DigitAnatomySource(DataSource):
    """No data given: DigitAnatomy, generated on the fly (normals for training, fixed-seed
    unseen handwriting with anomalies for validation and test)."""

    name, preset, recipe = "digitanatomy", "digitanatomy_small", "digitanatomy"

    def training(
        self,
        image_size,
        digitanatomy_length=1024,
        cache=True,
        skip_bad=False,
        report_path=None,
        num_workers=None,
        intensity="percentile",
        augment_resampling="bilinear",
        global_augment="none",
    ):
        options = check_switches(
            intensity=intensity,
            augment_resampling=augment_resampling,
            global_augment=global_augment,
        )
        return DigitAnatomyDataset(
            digitanatomy_length, seed=self.seed, transform=train_transforms(image_size, **options)
        )

    def validation(
        self,
        image_size,
        split="validation",
        n_normal=100,
        n_abnormal=100,
        cache=True,
        skip_bad=False,
        report_path=None,
        intensity="percentile",
    ):
        which = split if split in ("validation", "report") else "test"
        items = digitanatomy_split(n_normal, n_abnormal, seed=self.seed, split=which)
        return make_dataset(
            items,
            image_size,
            train=False,
            cache=cache,
            skip_bad=skip_bad,
            report_path=report_path,
            **check_switches(intensity=intensity),
        )

    def calibration(
        self, image_size, max_images=256, cache=True, intensity="percentile", on="normals"
    ):
        _check_calibrate_on(on)  # its training images are all normal
        return make_dataset(
            digitanatomy_split(max_images, 0, seed=self.seed, split="training"),
            image_size,
            train=False,
            cache=cache,
            **check_switches(intensity=intensity),
        )


class DatalistSource(DataSource):
    """Real radiographs: the ``training`` / ``validation`` / ``test`` items of a datalist."""

    name, preset, recipe = "datalist", "small", "chest"

    def __init__(self, splits: dict, seed: int = 0, origin: str = ""):
        super().__init__(seed)
        self.splits, self.origin = splits, origin

    def training(
        self,
        image_size,
        digitanatomy_length=1024,
        cache=True,
        skip_bad=False,
        report_path=None,
        num_workers=None,
        intensity="percentile",
        augment_resampling="bilinear",
        global_augment="none",
    ):
        options = check_switches(
            intensity=intensity,
            augment_resampling=augment_resampling,
            global_augment=global_augment,
        )
        items = [it for it in self.splits["training"] if "image" in it]
        logger.info(
            "training on %d images (%d normal)",
            len(items),
            sum(int(it.get("label", 0)) == 0 for it in items),
        )
        return make_dataset(
            items,
            image_size,
            train=True,
            cache=cache,
            skip_bad=skip_bad,
            report_path=report_path,
            num_workers=num_workers,
            **options,
        )

    def validation(
        self,
        image_size,
        split="validation",
        n_normal=100,
        n_abnormal=100,
        cache=True,
        skip_bad=False,
        report_path=None,
        intensity="percentile",
    ):
        items = self.splits.get(split) or []
        if not items:
            raise ValueError(f"the data set has no {split!r} split")
        return make_dataset(
            items,
            image_size,
            train=False,
            cache=cache,
            skip_bad=skip_bad,
            report_path=report_path,
            **check_switches(intensity=intensity),
        )

    def calibration(
        self, image_size, max_images=256, cache=True, intensity="percentile", on="normals"
    ):
        items = self.splits["training"]
        if _check_calibrate_on(on) == "normals":
            items = [it for it in items if int(it.get("label", 0)) == 0]
        if not items:
            raise ValueError(
                "calibration needs normal training images; the training split has none"
            )
        pick = np.random.default_rng(self.seed).permutation(len(items))[:max_images]
        return make_dataset(
            [items[i] for i in sorted(pick)],
            image_size,
            train=False,
            cache=cache,
            **check_switches(intensity=intensity),
        )


def _check_calibrate_on(on: str) -> str:
    if on not in ("normals", "training"):
        raise ValueError(f"calibrate_on must be 'normals' or 'training', got {on!r}")
    return on


def choose_data(
    dataset_dir: str | None = None,
    datalist: str | None = None,
    seed: int = 0,
    val_per_class: int = 100,
    report_per_class: int = 100,
) -> DataSource:
    """The run's :class:`DataSource`: a MONAI datalist JSON (``python -m squid_monai.data.datalist``),
    else ``dataset_dir`` (a ZhangLab layout ``train|test/NORMAL|PNEUMONIA`` or generic ``normal/``
    and ``abnormal/`` folders, split by the paper's protocol with ``seed`` and ``val_per_class``
    normal and abnormal validation images; the paper uses 100, plus the report split of
    ``report_per_class`` normal and abnormal images drawn after them and removed from
    training; 0: none), else DigitAnatomy. A datalist's ``report`` and ``test`` lists may be
    absent (empty)."""
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
            raise ValueError(
                f"{path}: the datalist needs non-empty 'training' and 'validation' lists"
            )
        return DatalistSource(splits, seed, origin=str(path.resolve()))
    if dataset_dir:
        root = Path(dataset_dir)
        if not root.is_dir():
            raise FileNotFoundError(f"{root}: dataset_dir is not a folder")
        protocol = dict(
            seed=seed,
            n_val_normal=val_per_class,
            n_val_abnormal=val_per_class,
            n_report_normal=report_per_class,
            n_report_abnormal=report_per_class,
        )
        return DatalistSource(build_from_folder(root, **protocol), seed, origin=str(root.resolve()))
    return DigitAnatomySource(seed)


def network_recipe(
    ckpt_dir: str | os.PathLike,
    preset: str,
    overrides: dict | None = None,
    family: str = "squid",
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

    Resuming a run of another family or recipe (other data) is an error naming the file.
    """
    from .methods import get_recipe

    path = Path(ckpt_dir, TRAINING_FILE)
    if not _resumes_from(path, resume):
        return get_recipe(family, name)
    stored, had, settings = load_training_settings(ckpt_dir)
    if (stored, had) != (family.name, name):
        raise ValueError(
            f"{path}: the run in this folder was trained with {stored}'s {had!r} recipe; this "
            f"command asks for {family.name}'s {name!r}. Resume with the same family and data, or start "
            "afresh with --resume false or another --output_dir"
        )
    return settings


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


def report_training(trainer, evaluator, ckpt_dir: str | os.PathLike, family: str = "squid") -> dict:
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
