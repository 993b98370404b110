"""Which data a run uses: the :class:`DataSource` that :func:`choose_data` picks (a MONAI
datalist, an image folder split by the paper's protocol, or DigitAnatomy on the fly), which
gives every dataset of the run and the data's default network preset and training recipe;
and :func:`bundle_root`, where the bundle lives.

Below the adapters (training wiring, export, inference), which all need them: the decisions
("no data given -> DigitAnatomy", "ZhangLab layout or normal/abnormal folders") are taken
here, once, with tests. ``squid_monai.workflow`` re-exports them for the bundle configs.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from ..transforms import train_transforms
from ..transforms.compose import check_switches
from .datalist import build_from_folder, load_datalist
from .datasets import make_dataset
from .digitanatomy import DigitAnatomyDataset, digitanatomy_split

__all__ = ["DataSource", "DatalistSource", "DigitAnatomySource", "bundle_root", "choose_data"]

logger = logging.getLogger(__name__)

_BUNDLE_NAME = "squid"


def bundle_root() -> str:
    """The bundle folder, whether the command runs from the repository root, from inside
    the bundle, or elsewhere on an installed checkout (``--bundle_root`` overrides it)."""
    cwd = Path.cwd()
    for candidate in (
        cwd,
        cwd / "bundles" / _BUNDLE_NAME,
        Path(__file__).resolve().parents[2] / "bundles" / _BUNDLE_NAME,
    ):
        if (candidate / "configs" / "metadata.json").is_file() and (
            candidate / "configs" / "train.json"
        ).is_file():
            return str(candidate)
    raise FileNotFoundError(f"cannot find the {_BUNDLE_NAME} bundle from {cwd}: pass --bundle_root")


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
            for DigitAnatomy), the source of the run's dataset lineage (:mod:`.lineage`).
    """

    name = ""
    preset = ""
    recipe = ""
    splits: dict | None = None
    origin = ""

    def __init__(self, seed: int = 0):
        self.seed = seed

    def describe(self) -> tuple[str, str, str]:
        """``(name, dataset, description)`` of the images this data holds (:meth:`domain`)."""
        raise NotImplementedError

    def domain(self, image_size: int, intensity: str = "percentile") -> dict:
        """The domain a model trained on this data knows, recorded in its ``network.json``
        (:class:`~squid_monai.artifact.Recipe`) and its model card: ``name`` (what kind of
        image), ``dataset``, ``description``, the model input's ``image_size`` and
        ``intensity`` rule, and ``guard``, what the domain guard compares an input with
        (:mod:`squid_monai.scoring.domain`, fitted at each calibration)."""
        from ..scoring import domain

        name, dataset, description = self.describe()
        return {
            "name": name,
            "dataset": dataset,
            "description": description,
            "image_size": int(image_size),
            "intensity": check_switches(intensity=intensity)["intensity"],
            "guard": (
                f"model.pt buffers domain_bank ({domain.THUMBNAIL} x {domain.THUMBNAIL} thumbnails "
                f"of up to {domain.BANK_SIZE} calibration normals) and domain_limit ({domain.MARGIN} "
                f"x the {domain.QUANTILE} quantile of their leave-one-out distances)"
            ),
        }

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
        transform=None,
    ) -> torch.utils.data.Dataset:
        """The augmented training set: items through ``transform`` (the bundle's
        ``train#preprocessing``), else through ``train_transforms`` with the preprocessing
        switches ``intensity``, ``augment_resampling`` and ``global_augment``
        (:mod:`squid_monai.transforms.compose`)."""
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
        transform=None,
    ) -> torch.utils.data.Dataset:
        """An un-augmented labelled split (``validation``, ``report`` or ``test``), through
        ``transform`` (the bundle's ``validate#preprocessing``), else ``inference_transforms``
        with ``intensity``."""
        raise NotImplementedError

    def calibration(
        self,
        image_size: int,
        max_images: int = 256,
        cache: bool = True,
        intensity: str = "percentile",
        on: str = "normals",
        transform=None,
    ) -> torch.utils.data.Dataset:
        """Un-augmented training images for the score calibration (at most ``max_images``):
        ``on="normals"`` the normal ones; ``on="training"`` the training images as they are,
        labels unread, for training data nobody has sorted (the paper's Figure 10 study)."""
        raise NotImplementedError


class DigitAnatomySource(DataSource):
    """No data given: DigitAnatomy, generated on the fly (normals for training, fixed-seed
    unseen handwriting with anomalies for validation and test)."""

    name, preset, recipe = "digitanatomy", "digitanatomy_small", "digitanatomy"

    def describe(self) -> tuple[str, str, str]:
        return (
            "digitanatomy",
            "DigitAnatomy",
            "synthetic images of handwritten digits in a fixed anatomy-like layout, generated "
            "on the fly; not radiographs",
        )

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
        transform=None,
    ):
        options = check_switches(
            intensity=intensity,
            augment_resampling=augment_resampling,
            global_augment=global_augment,
        )
        return DigitAnatomyDataset(
            digitanatomy_length,
            seed=self.seed,
            transform=transform or train_transforms(image_size, **options),
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
        transform=None,
    ):
        which = split if split in ("validation", "report") else "test"
        items = digitanatomy_split(n_normal, n_abnormal, seed=self.seed, split=which)
        return _unaugmented(items, image_size, intensity, cache, transform, skip_bad, report_path)

    def calibration(
        self,
        image_size,
        max_images=256,
        cache=True,
        intensity="percentile",
        on="normals",
        transform=None,
    ):
        _check_calibrate_on(on)  # its training images are all normal
        items = digitanatomy_split(max_images, 0, seed=self.seed, split="training")
        return _unaugmented(items, image_size, intensity, cache, transform)


class DatalistSource(DataSource):
    """Real radiographs: the ``training`` / ``validation`` / ``test`` items of a datalist."""

    name, preset, recipe = "datalist", "small", "chest"

    def __init__(self, splits: dict, seed: int = 0, origin: str = ""):
        super().__init__(seed)
        self.splits, self.origin = splits, origin

    def describe(self) -> tuple[str, str, str]:
        sources = {item.get("source", "") for item in self.splits["training"]}
        if sources == {"zhanglab"}:
            return (
                "chest_xray",
                "ZhangLab",
                "paediatric frontal chest X-rays (ZhangLab, Kermany et al. 2018, CC BY 4.0), "
                "the whole radiograph resized to the model input (antialiased bilinear)",
            )
        dataset = Path(self.origin).stem if self.origin else "datalist"
        found = ", ".join(sorted(s for s in sources if s)) or "unnamed"
        return (
            "chest_xray",
            dataset,
            f"radiographs of {dataset} (sources: {found}), the whole radiograph resized to the "
            "model input (antialiased bilinear)",
        )

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
        transform=None,
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
            transform=transform,
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
        transform=None,
    ):
        items = self.splits.get(split) or []
        if not items:
            raise ValueError(f"the data set has no {split!r} split")
        return _unaugmented(items, image_size, intensity, cache, transform, skip_bad, report_path)

    def calibration(
        self,
        image_size,
        max_images=256,
        cache=True,
        intensity="percentile",
        on="normals",
        transform=None,
    ):
        items = self.splits["training"]
        if _check_calibrate_on(on) == "normals":
            items = [it for it in items if int(it.get("label", 0)) == 0]
        if not items:
            raise ValueError(
                "calibration needs normal training images; the training split has none"
            )
        pick = np.random.default_rng(self.seed).permutation(len(items))[:max_images]
        items = [items[i] for i in sorted(pick)]
        return _unaugmented(items, image_size, intensity, cache, transform)


def _unaugmented(
    items, image_size, intensity, cache, transform, skip_bad=False, report_path=None
) -> torch.utils.data.Dataset:
    """The un-augmented dataset of ``items`` that validation and calibration read, the same
    for every source: through ``transform``, else the inference preprocessing with
    ``intensity``."""
    return make_dataset(
        items,
        image_size,
        train=False,
        cache=cache,
        skip_bad=skip_bad,
        report_path=report_path,
        transform=transform,
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
