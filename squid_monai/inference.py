"""Scoring new images with a trained bundle: what ``inference.json`` wires together.

Input is a folder (searched recursively), a list of files, a text file with one path per
line, a MONAI datalist JSON, or a single image, in any format the transforms read (PNG,
JPEG, DICOM, NIfTI). ``inference.json`` has MONAI's inference shape: ``preprocessing``
(``inference_transforms``), ``dataset`` (:class:`~squid_monai.scoring.ScoringItems` over
:func:`collect_inputs`), ``inferer`` (``PerImageInferer``), ``evaluator``
(:class:`ScoringEvaluator`) and the ``writer`` handler
(:class:`~squid_monai.scoring.ScoreWriterHandler`). This module only turns ``--input``
into items and adapts the engine; the scoring, the records and the files are
:mod:`squid_monai.scoring`'s:

* ``scores.csv`` in the one layout of :mod:`squid_monai.scoring.writer` (image, label if
  the datalist has one, score, logit, decision, threshold, error, image file paths); a
  file that cannot be read is a row with its error and no score;
* per image ``images/<n>_<name>_reconstruction.png``, ``..._difference.png`` and
  ``..._heatmap.png`` (what drives the score: :mod:`squid_monai.scoring.explain`).

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
from monai.data import DataLoader, load_decathlon_datalist
from monai.engines import Evaluator
from monai.engines.utils import IterationEvents
from monai.inferers import Inferer, SimpleInferer

from .scoring import (
    PerImageInferer,
    ScoreRecord,
    ScoreWriterHandler,
    ScoringItems,
    explainer_for,
    score_images,
)
from .scoring.domain import IN_DOMAIN, domain_warning
from .transforms import SUPPORTED_EXTENSIONS, inference_transforms

__all__ = ["Inference", "ScoringEvaluator", "collect_inputs", "print_scores", "report"]

logger = logging.getLogger(__name__)

_LIST_SUFFIXES = (".txt", ".lst")
_DATALIST_SUFFIXES = (".json",)


def collect_inputs(source: Any, datalist_key: str = "test") -> list[dict]:
    """Turn the ``--input`` of ``inference.json`` into items ``{"image": path[, "label"]}``.

    ``source`` is a folder (every file, recursively, hidden files skipped, sorted: one that is
    not an image of a supported format is a row with its reason), a list of paths or items, a
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
            supported = ", ".join(SUPPORTED_EXTENSIONS)
            raise ValueError(f"{path}: no files in the folder (supported: {supported})")
        return items
    if not path.exists():
        raise FileNotFoundError(f"{path}: input not found")
    name = path.name.lower()
    if name.endswith(_DATALIST_SUFFIXES):
        return _read_datalist(path, datalist_key)
    if name.endswith(_LIST_SUFFIXES):
        lines = [ln.strip() for ln in path.read_text().splitlines()]
        return [
            {"image": str(_relative_to(path.parent, ln))}
            for ln in lines
            if ln and not ln.startswith("#")
        ]
    return [{"image": str(path)}]


class ScoringEvaluator(Evaluator):
    """Scores every batch of a :class:`~squid_monai.scoring.ScoringItems` loader into
    :class:`~squid_monai.scoring.ScoreRecord` s (``engine.state.output["records"]``, in input
    order, unreadable files included), for a writer handler to write: the ``evaluator`` of
    ``inference.json``.

    Args:
        device: where the scorer runs.
        val_data_loader: batches of ``ScoringItems`` items (``collate_fn=list``).
        network: the trained scorer.
        inferer: ``PerImageInferer`` (bitwise batch-size invariance) or ``SimpleInferer``.
        threshold: decision threshold; None: the one stored in the model.
        explainer: heat maps of the reconstructions (``scoring.explainer_for``); None: none.
        pixels: keep reconstruction and difference in the records (for the image files).
        val_handlers: e.g. a :class:`~squid_monai.scoring.ScoreWriterHandler`.
    """

    def __init__(
        self,
        device: str | torch.device,
        val_data_loader,
        network: torch.nn.Module,
        inferer: Inferer | None = None,
        threshold: float | None = None,
        explainer=None,
        pixels: bool = True,
        val_handlers: Sequence | None = None,
        amp: bool = False,
    ):
        super().__init__(
            device=torch.device(device),
            val_data_loader=val_data_loader,
            val_handlers=val_handlers,
            amp=amp,
            decollate=False,
        )
        self.network, self.inferer = network, inferer or PerImageInferer()
        self.threshold = float(network.threshold) if threshold is None else float(threshold)
        self.explainer, self.pixels = explainer, pixels

    def _iteration(
        self, engine: ScoringEvaluator, batchdata: list[dict]
    ) -> dict[str, list[ScoreRecord]]:
        good = [b for b in batchdata if b["image"] is not None]
        scored = {}
        if good:
            images = torch.stack([b["image"] for b in good]).to(engine.state.device, torch.float32)
            output = self.inferer(images, self.network)
            engine.fire_event(IterationEvents.FORWARD_COMPLETED)
            records = score_images(
                self.network,
                images,
                [b["name"] for b in good],
                self.threshold,
                [b["label"] for b in good],
                explainer=self.explainer,
                pixels=self.pixels,
                output=output,
            )
            scored = {b["index"]: r for b, r in zip(good, records)}
        records = []
        for b in batchdata:
            if b["image"] is None:
                logger.warning("not scored: %s: %s", b["name"], b["error"])
                records.append(
                    ScoreRecord.unreadable(b["name"], b["error"], b["label"], self.threshold)
                )
            else:
                records.append(scored[b["index"]])
        engine.state.output = {"records": records}
        engine.fire_event(IterationEvents.MODEL_COMPLETED)
        return engine.state.output


class Inference:
    """Score items and write ``scores.csv`` and the per-image PNGs: the pieces of
    ``inference.json`` (``inference_transforms`` -> ``ScoringItems`` -> ``ScoringEvaluator``
    -> ``ScoreWriterHandler``) assembled in Python.

    Args:
        scorer: the trained scorer.
        output_dir: folder of ``scores.csv`` and ``images/``.
        image_size: model input side (``Recipe.image_size``).
        device: where the scorer runs.
        batch_size: images loaded, scored and explained together.
        num_workers: DataLoader processes for reading and preprocessing.
        heatmaps: compute the heat maps (the slowest part: a backward pass per batch).
        explain: what a heat map explains (``squid_monai.scoring.EXPLAINERS``): ``score``, the
            gradient of the reported score; ``discriminator``, Grad-CAM of the discriminator.
        images: write the per-image PNGs at all.
        threshold: decision threshold; None: the one stored in the model.
        per_image_forward: network forward one image at a time (batch-size invariance).
        heatmap_colormap: matplotlib colour map of the heat map PNGs.
        transform_options: passed to :func:`squid_monai.transforms.inference_transforms`.
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
        explain: str = "score",
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
        self.heatmaps, self.explain, self.images, self.per_image_forward = (
            heatmaps,
            explain,
            images,
            per_image_forward,
        )
        self.threshold = float(scorer.threshold) if threshold is None else float(threshold)
        self.heatmap_colormap, self.transform_options = heatmap_colormap, transform_options

    def __call__(self, source: Any, datalist_key: str = "test") -> dict:
        """Score ``source`` (see :func:`collect_inputs`); returns a summary with the CSV path."""
        return self.run(collect_inputs(source, datalist_key))

    def run(self, items: Sequence[dict]) -> dict:
        dataset = ScoringItems(
            items, inference_transforms(self.image_size, **(self.transform_options or {}))
        )
        loader = DataLoader(
            dataset,
            batch_size=self.batch_size,
            shuffle=False,
            num_workers=self.num_workers,
            collate_fn=list,
        )
        writer = ScoreWriterHandler(
            self.output_dir, images=self.images, heatmap_colormap=self.heatmap_colormap
        )
        evaluator = ScoringEvaluator(
            self.device,
            loader,
            self.scorer,
            PerImageInferer() if self.per_image_forward else SimpleInferer(),
            self.threshold,
            explainer_for(self.scorer, self.explain) if self.images and self.heatmaps else None,
            pixels=self.images,
            val_handlers=[writer],
        )
        evaluator.run()
        return writer.summary


def report(summary: dict) -> dict:
    """Log (and return) the summary of an inference run."""
    logger.info(
        "scored %d of %d images (%d flagged abnormal, %d unreadable): %s",
        summary["scored"],
        summary["images"],
        summary["abnormal"],
        summary["errors"],
        summary["csv"],
    )
    warning = domain_warning(
        summary["scored"], summary["out_of_domain"], summary["domain_not_recorded"]
    )
    if warning:
        logger.warning("domain guard: %s", warning)
        summary["domain_warning"] = warning
    return summary


def print_scores(summary: dict, limit: int = 20) -> None:
    """Print the first ``limit`` rows of the run's ``scores.csv`` (image, score, decision and
    any domain-guard warning, or the error of an unreadable file), so that a user sees the
    scores without opening it."""
    import csv

    if not limit:
        return
    with open(summary["csv"], newline="") as f:
        rows = list(csv.DictReader(f))
    for row in rows[:limit]:
        if row.get("error"):
            print(f"{row['image']}: error: {row['error']}")
        else:
            decision = "abnormal" if row.get("decision") == "1" else "normal"
            domain = row.get("domain", "")
            warning = f"; WARNING: {domain}" if domain and domain != IN_DOMAIN else ""
            print(f"{row['image']}: score {float(row['score']):.4f} ({decision}){warning}")
    if len(rows) > limit:
        print(f"... {len(rows) - limit} more rows in {summary['csv']}")


def _image_files(folder: Path) -> list[Path]:
    """Every file of ``folder`` but hidden ones: a file the readers do not take (a ``.npy``
    array, notes) becomes a row with its reason, never a silent omission."""
    files = []
    for root, dirs, names in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        files.extend(Path(root) / name for name in names if not name.startswith("."))
    return sorted(files)


def _read_datalist(path: Path, key: str) -> list[dict]:
    try:
        content = json.loads(path.read_text())
    except ValueError as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from err
    if not isinstance(content, dict) or key not in content:
        keys = sorted(content) if isinstance(content, dict) else type(content).__name__
        raise ValueError(
            f"{path}: datalist has no {key!r} list (found {keys}); choose one with --datalist_key"
        )
    return [
        _as_item(it)
        for it in load_decathlon_datalist(str(path), is_segmentation=False, data_list_key=key)
    ]


def _as_item(entry: Any) -> dict:
    if isinstance(entry, dict):
        if "image" not in entry:
            raise ValueError(f"input item without 'image': {entry}")
        return dict(entry)
    return {"image": os.fspath(entry)}


def _relative_to(base: Path, name: str) -> Path:
    p = Path(name).expanduser()
    return p if p.is_absolute() else base / p
