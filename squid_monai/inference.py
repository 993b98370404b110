"""Scoring new images with a trained bundle: what ``inference.json`` wires together.

Input is a folder (searched recursively), a list of files, a text file with one path per
line, a MONAI datalist JSON, or a single image, in any format the transforms read (PNG,
JPEG, DICOM, NIfTI). This module only turns ``--input`` into items and batches; the
scoring, the records and the files are :mod:`squid_monai.scoring`'s:

* ``scores.csv`` in the one layout of :mod:`squid_monai.scoring.writer` (image, label if
  the datalist has one, score, logit, decision, threshold, error, image file paths); a
  file that cannot be read is a row with its error and no score;
* per image ``images/<n>_<name>_reconstruction.png``, ``..._difference.png`` and
  ``..._heatmap.png`` (Grad-CAM of the discriminator).

Batch-size invariance: with ``per_image_forward`` (default) the network runs on one image
at a time while loading, preprocessing and writing stay batched, so an image's score is
bitwise identical whatever the batch size (:func:`squid_monai.scoring.forward`). Turn it
off for throughput; scores then agree to float rounding.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from monai.data import load_decathlon_datalist

from .scoring import ScoreRecord, ScoreWriter, explainer_for, read_image, score_images, unique_stems
from .transforms import SUPPORTED_EXTENSIONS

__all__ = ["SQUIDInference", "collect_inputs"]

logger = logging.getLogger(__name__)

_LIST_SUFFIXES = (".txt", ".lst")
_DATALIST_SUFFIXES = (".json",)


def collect_inputs(source: Any, datalist_key: str = "test") -> list[dict]:
    """Turn the ``--input`` of ``inference.json`` into items ``{"image": path[, "label"]}``.

    ``source`` is a folder (every file with a supported extension, or without extension
    for DICOM, recursively, hidden files skipped, sorted), a list of paths or items, a
    ``.txt`` file with one path per line, a datalist ``.json`` (MONAI format, paths relative
    to its folder, list ``datalist_key``), or one image file.
    """
    if source is None or (isinstance(source, str) and not source.strip()):
        raise ValueError("no input: pass --input <folder | file | list | datalist.json>")
    if isinstance(source, (list, tuple)):
        return [_as_item(s) for s in source]
    path = Path(os.fspath(source)).expanduser()
    if path.is_dir():
        items = [{"image": str(p)} for p in _image_files(path)]
        if not items:
            raise ValueError(f"{path}: no image files in the folder (supported: {', '.join(SUPPORTED_EXTENSIONS)})")
        return items
    if not path.exists():
        raise FileNotFoundError(f"{path}: input not found")
    name = path.name.lower()
    if name.endswith(_DATALIST_SUFFIXES):
        return _read_datalist(path, datalist_key)
    if name.endswith(_LIST_SUFFIXES):
        lines = [ln.strip() for ln in path.read_text().splitlines()]
        return [{"image": str(_relative_to(path.parent, ln))} for ln in lines if ln and not ln.startswith("#")]
    return [{"image": str(path)}]


class _PreprocessedItems(torch.utils.data.Dataset):
    """Items -> ``{"index", "image" (1, S, S) or None, "error"}`` (the scoring package's
    bad-file policy, :func:`~squid_monai.scoring.read_image`)."""

    def __init__(self, items: Sequence[dict], image_size: int, transform_options: dict | None = None):
        self.items, self.image_size, self.options = list(items), image_size, dict(transform_options or {})

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict:
        image, error = read_image(self.items[index]["image"], self.image_size, **self.options)
        return {"index": index, "image": image, "error": error}


class SQUIDInference:
    """Score items and write ``scores.csv`` and the per-image PNGs (see module docstring).

    Args:
        scorer: the trained scorer.
        output_dir: folder of ``scores.csv`` and ``images/``.
        image_size: model input side (``Recipe.image_size``).
        device: where the scorer runs.
        batch_size: images loaded, scored and explained together.
        num_workers: DataLoader processes for reading and preprocessing.
        heatmaps: compute the Grad-CAM heat maps (the slowest part: a backward pass).
        images: write the per-image PNGs at all.
        threshold: decision threshold; None: the one stored in the model.
        per_image_forward: network forward one image at a time (batch-size invariance).
        heatmap_colormap: matplotlib colour map of the heat map PNGs.
        transform_options: passed to :func:`squid_monai.transforms.preprocess`.
    """

    def __init__(
        self,
        scorer: torch.nn.Module,
        output_dir: str | os.PathLike,
        image_size: int,
        device: str | torch.device = "cpu",
        batch_size: int = 16,
        num_workers: int = 0,
        heatmaps: bool = True,
        images: bool = True,
        threshold: float | None = None,
        per_image_forward: bool = True,
        heatmap_colormap: str = "jet",
        transform_options: dict | None = None,
    ):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.scorer, self.output_dir, self.image_size = scorer, Path(output_dir), int(image_size)
        self.device = torch.device(device)
        self.batch_size, self.num_workers = int(batch_size), int(num_workers)
        self.heatmaps, self.images, self.per_image_forward = heatmaps, images, per_image_forward
        self.threshold = float(scorer.threshold) if threshold is None else float(threshold)
        self.heatmap_colormap, self.transform_options = heatmap_colormap, transform_options

    def __call__(self, source: Any, datalist_key: str = "test") -> dict:
        """Score ``source`` (see :func:`collect_inputs`); returns a summary with the CSV path."""
        return self.run(collect_inputs(source, datalist_key))

    def run(self, items: Sequence[dict]) -> dict:
        items = list(items)
        stems = unique_stems([it["image"] for it in items])
        loader = torch.utils.data.DataLoader(
            _PreprocessedItems(items, self.image_size, self.transform_options), batch_size=self.batch_size,
            shuffle=False, num_workers=self.num_workers, collate_fn=list,
        )
        explainer = explainer_for(self.scorer) if self.images and self.heatmaps else None
        with ScoreWriter(self.output_dir, images=self.images, heatmap_colormap=self.heatmap_colormap) as writer:
            for batch in loader:
                records = self._score(batch, items, explainer)
                writer.write_all(records, [stems[b["index"]] for b in batch])
        counts = writer.counts
        summary = {**counts, "threshold": self.threshold, "csv": str(writer.path)}
        logger.info("scored %d of %d images (%d flagged abnormal, %d unreadable): %s", counts["scored"],
                    counts["images"], counts["abnormal"], counts["errors"], writer.path)
        return summary

    def _score(self, batch: list[dict], items: list[dict], explainer) -> list[ScoreRecord]:
        good = [b for b in batch if b["image"] is not None]
        scored = {}
        if good:
            images = torch.stack([b["image"] for b in good]).to(self.device, torch.float32)
            records = score_images(self.scorer, images, names=[items[b["index"]]["image"] for b in good],
                                   threshold=self.threshold, labels=[items[b["index"]].get("label") for b in good],
                                   per_image=self.per_image_forward, explainer=explainer, pixels=self.images)
            scored = {b["index"]: r for b, r in zip(good, records)}
        out = []
        for b in batch:
            item = items[b["index"]]
            if b["image"] is None:
                logger.warning("not scored: %s: %s", item["image"], b["error"])
                out.append(ScoreRecord.unreadable(item["image"], b["error"], item.get("label"), self.threshold))
            else:
                out.append(scored[b["index"]])
        return out


def _image_files(folder: Path) -> list[Path]:
    files = []
    for root, dirs, names in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in names:
            lower = name.lower()
            if name.startswith("."):
                continue
            if lower.endswith(tuple(SUPPORTED_EXTENSIONS)) or "." not in name:
                files.append(Path(root) / name)
    return sorted(files)


def _read_datalist(path: Path, key: str) -> list[dict]:
    try:
        content = json.loads(path.read_text())
    except ValueError as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from err
    if not isinstance(content, dict) or key not in content:
        keys = sorted(content) if isinstance(content, dict) else type(content).__name__
        raise ValueError(f"{path}: datalist has no {key!r} list (found {keys}); choose one with --datalist_key")
    return [_as_item(it) for it in load_decathlon_datalist(str(path), is_segmentation=False, data_list_key=key)]


def _as_item(entry: Any) -> dict:
    if isinstance(entry, dict):
        if "image" not in entry:
            raise ValueError(f"input item without 'image': {entry}")
        return dict(entry)
    return {"image": os.fspath(entry)}


def _relative_to(base: Path, name: str) -> Path:
    p = Path(name).expanduser()
    return p if p.is_absolute() else base / p
