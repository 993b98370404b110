"""Scoring new images with a trained bundle: what ``inference.json`` wires together.

Input is a folder (searched recursively), a list of files, a text file with one path per
line, a MONAI datalist JSON, or a single image, in any format the transforms read (PNG,
JPEG, DICOM, NIfTI). Every image goes through the shared inference preprocessing and
:class:`~squid_monai.scoring.SQUIDScorer` (the one scoring path). Written per run:

* ``scores.csv``: one row per input, in input order: image, label (if the datalist has
  one), score, logit, decision (1 = likely abnormal), threshold, error, and the paths of the
  three PNGs below. A file that cannot be read is a row with its error and no score; the
  other images are still scored.
* per image ``<n>_<name>_reconstruction.png`` (the student reconstruction),
  ``..._difference.png`` (|input - reconstruction|, 0..1 mapped to 0..255, no
  per-image stretching, so images compare) and ``..._heatmap.png`` (Grad-CAM of the
  discriminator on the reconstruction, explaining the anomaly score; colour map, hot =
  drives the score up).

Batch-size invariance: CPU (and GPU) kernels choose their blocking by batch size, so a
batched forward differs from a single-image forward in the last bits, and the calibration
(a division by the std of normal logits, often small) magnifies that. With
``per_image_forward`` (default) the network runs on one image at a time while loading,
preprocessing and writing stay batched, so an image's score is a pure function of the
image: bitwise identical whatever the batch size. Turn it off for throughput; scores then
agree to float rounding.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.data import load_decathlon_datalist

from .networks import get_config
from .scoring import SQUIDScorer
from .transforms import SUPPORTED_EXTENSIONS, RadiographError, preprocess

__all__ = ["CSV_COLUMNS", "SQUIDInference", "collect_inputs", "network_recipe", "recipe_image_size", "score_batch"]

logger = logging.getLogger(__name__)

#: columns of ``scores.csv``
CSV_COLUMNS = ("image", "label", "score", "logit", "decision", "threshold", "error",
               "reconstruction", "difference", "heatmap")
_LIST_SUFFIXES = (".txt", ".lst")
_DATALIST_SUFFIXES = (".json",)


def network_recipe(model_dir: str | os.PathLike, preset: str, overrides: dict | None = None) -> dict:
    """The network recipe of the trained model (``network.json`` in ``model_dir``), or
    ``{"preset": preset, "overrides": overrides}`` when there is none yet (an untrained
    bundle: ``verify_net_in_out`` and other checks still need a network)."""
    path = Path(model_dir) / "network.json"
    if path.is_file():
        try:
            recipe = json.loads(path.read_text())
        except ValueError as err:
            raise ValueError(f"{path}: not valid JSON ({err})") from err
        if "preset" not in recipe:
            raise ValueError(f"{path}: network recipe without 'preset'")
        return {"preset": recipe["preset"], "overrides": dict(recipe.get("overrides") or {})}
    return {"preset": preset, "overrides": dict(overrides or {})}


def recipe_image_size(recipe: dict) -> int:
    """Side of the square model input of a network recipe."""
    return int(get_config(recipe["preset"], **recipe.get("overrides", {}))["image_size"])


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


def score_batch(scorer: SQUIDScorer, images: torch.Tensor, per_image: bool = True) -> dict[str, torch.Tensor]:
    """``scorer(images)``, one image at a time when ``per_image`` (see module docstring)."""
    if not per_image or images.shape[0] <= 1:
        return scorer(images)
    outs = [scorer(images[i:i + 1]) for i in range(images.shape[0])]
    return {key: torch.cat([o[key] for o in outs]) for key in outs[0]}


class _PreprocessedItems(torch.utils.data.Dataset):
    """Items -> ``{"index", "image" (1, S, S) or None, "error"}``: a bad file is an error
    string, not an exception, so that one file cannot stop a run."""

    def __init__(self, items: Sequence[dict], image_size: int, transform_options: dict | None = None):
        self.items, self.image_size, self.options = list(items), image_size, dict(transform_options or {})

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict:
        try:
            image, error = preprocess(self.items[index]["image"], self.image_size, **self.options), None
        except RadiographError as err:
            image, error = None, err.reason
        return {"index": index, "image": image, "error": error}


class SQUIDInference:
    """Score items and write ``scores.csv`` and the per-image PNGs (see module docstring).

    Args:
        scorer: the trained :class:`SQUIDScorer`.
        output_dir: folder of ``scores.csv`` and ``images/``.
        image_size: model input side (``recipe_image_size``).
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
        scorer: SQUIDScorer,
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
        self.output_dir.mkdir(parents=True, exist_ok=True)
        csv_path = self.output_dir / "scores.csv"
        stems = _unique_stems([it["image"] for it in items])
        loader = torch.utils.data.DataLoader(
            _PreprocessedItems(items, self.image_size, self.transform_options), batch_size=self.batch_size,
            shuffle=False, num_workers=self.num_workers, collate_fn=list,
        )
        gradcam = None
        if self.images and self.heatmaps:
            from .visualize import DiscriminatorGradCAM

            gradcam = DiscriminatorGradCAM(self.scorer.discriminator)
        counts = {"images": len(items), "scored": 0, "errors": 0, "abnormal": 0}
        with open(csv_path, "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=CSV_COLUMNS)
            writer.writeheader()
            for batch in loader:
                for row in self._score(batch, items, stems, gradcam):
                    counts["scored" if not row["error"] else "errors"] += 1
                    counts["abnormal"] += row["decision"] == 1
                    writer.writerow(row)
                f.flush()
        summary = {**counts, "threshold": self.threshold, "csv": str(csv_path)}
        logger.info("scored %d of %d images (%d flagged abnormal, %d unreadable): %s", counts["scored"],
                    counts["images"], counts["abnormal"], counts["errors"], csv_path)
        return summary

    def _score(self, batch: list[dict], items: list[dict], stems: list[str], gradcam) -> Iterable[dict]:
        good = [b for b in batch if b["image"] is not None]
        out: dict[str, torch.Tensor] = {}
        maps = None
        if good:
            images = torch.stack([b["image"] for b in good]).to(self.device, torch.float32)
            scored = score_batch(self.scorer, images, self.per_image_forward)
            out = {k: v.detach().float().cpu() for k, v in scored.items()}
            if gradcam is not None:
                maps = gradcam(out["reconstruction"].to(self.device))
            images = images.cpu()
        position = {b["index"]: i for i, b in enumerate(good)}
        for b in batch:
            index = b["index"]
            item = items[index]
            row = {"image": str(item["image"]), "label": item.get("label", ""), "threshold": self.threshold,
                   "error": b["error"] or "", "score": "", "logit": "", "decision": "",
                   "reconstruction": "", "difference": "", "heatmap": ""}
            if b["image"] is None:
                logger.warning("not scored: %s: %s", item["image"], b["error"])
                yield row
                continue
            i = position[index]
            score = float(out["score"][i])
            row.update(score=repr(score), logit=repr(float(out["logit"][i])), decision=int(score > self.threshold))
            if self.images:
                row.update(self._write_pngs(stems[index], images[i, 0].numpy(), out["reconstruction"][i, 0].numpy(),
                                            None if maps is None else maps[i]))
            yield row

    def _write_pngs(self, stem: str, image: np.ndarray, reconstruction: np.ndarray, heatmap: np.ndarray | None) -> dict:
        folder = self.output_dir / "images"
        folder.mkdir(exist_ok=True)
        paths = {"reconstruction": folder / f"{stem}_reconstruction.png",
                 "difference": folder / f"{stem}_difference.png"}
        _save_grey(paths["reconstruction"], reconstruction)
        _save_grey(paths["difference"], np.abs(image - reconstruction))
        if heatmap is not None:
            paths["heatmap"] = folder / f"{stem}_heatmap.png"
            _save_colour(paths["heatmap"], heatmap, self.heatmap_colormap)
        return {k: str(v) for k, v in paths.items()}


def _save_grey(path: Path, values: np.ndarray) -> None:
    from PIL import Image

    Image.fromarray(np.round(np.clip(values, 0.0, 1.0) * 255.0).astype(np.uint8), mode="L").save(path)


def _save_colour(path: Path, values: np.ndarray, colormap: str) -> None:
    from matplotlib import colormaps
    from PIL import Image

    rgba = colormaps[colormap](np.clip(values, 0.0, 1.0))
    Image.fromarray(np.round(rgba[..., :3] * 255.0).astype(np.uint8), mode="RGB").save(path)


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


def _unique_stems(paths: Sequence[Any]) -> list[str]:
    """``<row number>_<file name>`` made file-system safe: unique even when two inputs
    share a name (``a/x.png``, ``b/x.png``) and sortable in input order."""
    width = max(4, len(str(len(paths))))
    stems = []
    for i, p in enumerate(paths):
        name = Path(str(p)).name
        for ext in sorted(SUPPORTED_EXTENSIONS, key=len, reverse=True):
            if name.lower().endswith(ext):
                name = name[: -len(ext)]
                break
        stems.append(f"{i:0{width}d}_{re.sub(r'[^A-Za-z0-9_.-]+', '_', name)[:80] or 'image'}")
    return stems
