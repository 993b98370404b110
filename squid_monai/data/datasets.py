"""Datasets for training and evaluation: MONAI caching, and skipping of bad images.

``make_dataset`` is what the bundle configs call. Recommended configuration (the
default): a ``monai.data.CacheDataset`` holding the deterministic part of the pipeline
(decode, scale, resize: each file is decoded once, up front, by ``num_workers`` threads);
the random augmentation runs on a copy of the cached 128 x 128 tensor at every access.
At 128 x 128 float32 the cache costs 64 KiB per image (about 80 MiB for ZhangLab's
normals), and DataLoader worker processes share it copy-on-write.

Bad images: by default the first unreadable image stops the run with a
``RadiographError`` that names the file (use ``python -m squid_monai.data.datalist check``
to find all of them up front). With ``skip_bad=True`` the dataset logs each bad file
once with the reason, returns the next good item instead, and records the file:
``dataset.skipped`` (dict file -> reason, in the process that met the error) and, when
``report_path`` is given, one JSON line per skipped file appended to that file, which
collects the reports of all DataLoader workers; :func:`read_skip_report` reads it back.
With caching, every bad file is already found (and reported) while the cache fills, in
the main process.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence

import torch
from monai.data import CacheDataset, Dataset

from squid_monai.data.datalist import load_datalist
from squid_monai.transforms import (
    RadiographError,
    find_radiograph_error,
    inference_transforms,
    train_transforms,
)

logger = logging.getLogger(__name__)


class SkipBadItems(torch.utils.data.Dataset):
    """Wrap a dataset so that items failing with ``RadiographError`` are reported and skipped.

    Item ``i`` is the first good item at ``i, i+1, ...`` (wrapping around), so the length
    and the sampler are unchanged. Any other exception is a bug and propagates.

    Args:
        dataset: the dataset to wrap.
        report_path: optional file to append ``{"image": ..., "reason": ...}`` JSON lines to.
    """

    def __init__(
        self, dataset: torch.utils.data.Dataset, report_path: str | os.PathLike | None = None
    ) -> None:
        self.dataset = dataset
        self.report_path = os.fspath(report_path) if report_path is not None else None
        self.skipped: dict[str, str] = {}
        self._bad_indices: set[int] = set()
        for index, error in getattr(dataset, "failures", {}).items():
            self._record(index, error)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        n = len(self)
        for step in range(n):
            i = (index + step) % n
            if i in self._bad_indices:
                continue
            try:
                return self.dataset[i]
            except Exception as err:
                bad = find_radiograph_error(err)
                if bad is None:
                    raise
                self._record(i, bad)
        raise RuntimeError(f"all {n} items of the dataset are bad images: nothing to return")

    @property
    def skipped_files(self) -> list[str]:
        return sorted(self.skipped)

    def _record(self, index: int, error: RadiographError) -> None:
        self._bad_indices.add(index)
        if error.path in self.skipped:
            return
        self.skipped[error.path] = error.reason
        logger.warning("skipping bad image %s: %s", error.path, error.reason)
        if self.report_path is not None:
            with open(self.report_path, "a", encoding="utf-8") as f:
                f.write(json.dumps({"image": error.path, "reason": error.reason}) + "\n")


class SafeCacheDataset(CacheDataset):
    """``CacheDataset`` that keeps filling its cache past bad images.

    A ``RadiographError`` while caching item ``i`` is stored in ``failures[i]`` (and raised
    again whenever item ``i`` is requested), instead of aborting the whole cache; wrap
    the dataset in :class:`SkipBadItems` to skip those items.
    """

    def __init__(self, *args, **kwargs) -> None:
        self.failures: dict[int, RadiographError] = {}
        super().__init__(*args, **kwargs)

    def _load_cache_item(self, idx: int):
        try:
            return super()._load_cache_item(idx)
        except Exception as err:
            bad = find_radiograph_error(err)
            if bad is None:
                raise
            self.failures[idx] = bad
            return None

    def _transform(self, index: int):
        failure = self.failures.get(index % len(self))
        if failure is not None:
            raise RadiographError(failure.path, failure.reason)
        return super()._transform(index)


def make_dataset(
    items: Sequence[dict] | str | os.PathLike,
    image_size: int,
    train: bool,
    cache: bool = True,
    skip_bad: bool = False,
    split: str = "training",
    num_workers: int | None = None,
    report_path: str | os.PathLike | None = None,
    progress: bool = False,
    transform=None,
    **transform_options,
) -> torch.utils.data.Dataset:
    """The dataset for one split, with the shared train or inference preprocessing.

    Args:
        items: dict items ``{"image": path or array, "label": ...}``, or a MONAI datalist
            JSON file (image paths relative to the file's folder), read at key ``split``.
        image_size: side of the square model input.
        train: ``train_transforms`` (with augmentation) if true, else ``inference_transforms``.
        cache: cache the deterministic part in memory (``CacheDataset``).
        skip_bad: report and skip bad images instead of failing (see module docstring).
        split: datalist key when ``items`` is a file.
        num_workers: threads that fill the cache (default: one per CPU).
        report_path: with ``skip_bad``, file that collects the skipped files.
        progress: show a progress bar while caching.
        transform: the preprocessing (the bundle's ``train#preprocessing`` /
            ``validate#preprocessing``); default: the shared pipeline of ``train``.
        **transform_options: passed to ``train_transforms`` / ``inference_transforms`` when
            no ``transform`` is given.
    """
    if isinstance(items, (str, os.PathLike)):
        items = load_datalist(items, split)
    items = list(items)
    if transform is None:
        make = train_transforms if train else inference_transforms
        transform = make(image_size, **transform_options)
    if cache:
        cache_class = SafeCacheDataset if skip_bad else CacheDataset
        dataset = cache_class(
            data=items,
            transform=transform,
            cache_rate=1.0,
            num_workers=num_workers,
            progress=progress,
        )
    else:
        dataset = Dataset(data=items, transform=transform)
    return SkipBadItems(dataset, report_path=report_path) if skip_bad else dataset


def read_skip_report(report_path: str | os.PathLike) -> dict[str, str]:
    """The skipped files (file -> reason) recorded in a ``report_path`` file; empty if none."""
    if not os.path.exists(report_path):
        return {}
    skipped: dict[str, str] = {}
    with open(report_path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                entry = json.loads(line)
                skipped.setdefault(entry["image"], entry["reason"])
    return skipped
