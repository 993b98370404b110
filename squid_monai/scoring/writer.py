"""The one writer of scoring results: one CSV layout and one set of image files.

``scores.csv`` has the columns :data:`CSV_COLUMNS`, in this order, one row per input in
input order, followed by the consumer's extra columns (the evaluation adds
``sharpness_score`` and, on DigitAnatomy, ``anomaly``). An unreadable input is a row with
its ``error`` and no score; ``domain`` is the domain guard's verdict (an ``OUT OF DOMAIN``
row's score means nothing, :mod:`.domain`). Floats are written with ``repr`` (they read back exactly).

Image files of one record (:data:`IMAGE_FILES`; all (H, W) at the model's input size):

* ``input.png``: the preprocessed model input (grey, 0..1 -> 0..255);
* ``reconstruction.png``: the reconstruction (grey, same scale);
* ``difference.png``: ``|input - reconstruction|`` (grey, same absolute scale: no
  per-image stretching, so images compare);
* ``heatmap.png``: the explanation (:mod:`.explain`; colour map, hot = drives the score up),
  only where it was computed.

Bundle inference prefixes the names with ``<row>_<file name>_`` in one ``images/``
folder; the deploy app writes them unprefixed in one folder per study.
"""

from __future__ import annotations

import csv
import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..transforms import SUPPORTED_EXTENSIONS
from .domain import NOT_RECORDED
from .record import ScoreRecord

__all__ = [
    "CSV_COLUMNS",
    "IMAGE_FILES",
    "ScoreWriter",
    "ScoreWriterHandler",
    "csv_row",
    "save_images",
    "stem",
    "unique_stems",
]

#: the common columns of every ``scores.csv``
CSV_COLUMNS = (
    "image",
    "label",
    "score",
    "logit",
    "decision",
    "threshold",
    "error",
    "domain",
    "domain_distance",
    "reconstruction",
    "difference",
    "heatmap",
)
#: the columns of :data:`CSV_COLUMNS` that name image files
_FILE_COLUMNS = ("reconstruction", "difference", "heatmap")
#: file name of each image of a record
IMAGE_FILES = {
    "input": "input.png",
    "reconstruction": "reconstruction.png",
    "difference": "difference.png",
    "heatmap": "heatmap.png",
}
_HEATMAP_COLORMAP = "jet"


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    return repr(value) if isinstance(value, float) else value


def csv_row(record: ScoreRecord, files: dict[str, Any] | None = None) -> dict[str, Any]:
    """The CSV row of a record (``files``: image name -> path written)."""
    row = {
        key: str((files or {}).get(key, ""))
        if key in _FILE_COLUMNS
        else _cell(getattr(record, key))
        for key in CSV_COLUMNS
    }
    row.update({key: _cell(value) for key, value in record.extra.items()})
    return row


def save_images(
    record: ScoreRecord,
    folder: str | os.PathLike,
    prefix: str = "",
    image: Any = None,
    heatmap_colormap: str = _HEATMAP_COLORMAP,
) -> dict[str, Path]:
    """Write the image files of a scored record into ``folder`` (names ``prefix`` +
    :data:`IMAGE_FILES`); ``image``: the model input, written as ``input.png`` when given.
    Returns name -> path of what was written."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    grey = {
        "input": None if image is None else _plane(image),
        "reconstruction": record.reconstruction,
        "difference": record.difference,
    }
    for name, values in grey.items():
        if values is not None:
            written[name] = _save_grey(folder / f"{prefix}{IMAGE_FILES[name]}", values)
    if record.heatmap is not None:
        written["heatmap"] = _save_colour(
            folder / f"{prefix}{IMAGE_FILES['heatmap']}", record.heatmap, heatmap_colormap
        )
    return written


class ScoreWriter:
    """Writes ``scores.csv`` (and, with ``images``, each record's image files under
    ``<output_dir>/images/``), row by row, flushed after each :meth:`write_all` call.

    Use as a context manager: ``with ScoreWriter(folder) as w: w.write_all(records, stems)``.

    Args:
        output_dir: folder of ``scores.csv`` and ``images/``.
        images: write the image files.
        extra_columns: columns after :data:`CSV_COLUMNS` (from ``record.extra``).
        heatmap_colormap: matplotlib colour map of ``heatmap.png``.
    """

    def __init__(
        self,
        output_dir: str | os.PathLike,
        images: bool = True,
        extra_columns: Sequence[str] = (),
        heatmap_colormap: str = _HEATMAP_COLORMAP,
    ):
        self.output_dir, self.images = Path(output_dir), images
        self.columns = (*CSV_COLUMNS, *extra_columns)
        self.heatmap_colormap = heatmap_colormap
        self.path = self.output_dir / "scores.csv"
        self.counts = {
            "images": 0,
            "scored": 0,
            "errors": 0,
            "abnormal": 0,
            "out_of_domain": 0,
            "domain_not_recorded": 0,
        }
        self._file = self._csv = None

    def __enter__(self) -> ScoreWriter:
        self.output_dir.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "w", newline="", encoding="utf-8")
        self._csv = csv.DictWriter(self._file, fieldnames=self.columns)
        self._csv.writeheader()
        return self

    def __exit__(self, *exc) -> None:
        self._file.close()

    def write(self, record: ScoreRecord, stem: str | None = None) -> dict[str, Any]:
        """One row (and its images, named ``<stem>_...``); returns the row."""
        files = {}
        if self.images and record.scored:
            files = save_images(
                record,
                self.output_dir / "images",
                f"{stem or 'image'}_",
                heatmap_colormap=self.heatmap_colormap,
            )
        row = csv_row(record, files)
        self._csv.writerow(row)
        self.counts["images"] += 1
        self.counts["scored" if record.scored else "errors"] += 1
        self.counts["abnormal"] += record.decision == 1
        self.counts["out_of_domain"] += record.out_of_domain
        self.counts["domain_not_recorded"] += record.scored and record.domain == NOT_RECORDED
        return row

    def write_all(self, records: Iterable[ScoreRecord], stems: Iterable[str] | None = None) -> None:
        stems = iter(stems) if stems is not None else None
        for record in records:
            self.write(record, next(stems) if stems is not None else None)
        self._file.flush()


def stem(row: int, name: Any, rows: int = 0) -> str:
    """``<row number>_<file name>`` made file-system safe: unique even when two inputs
    share a name (``a/x.png``, ``b/x.png``) and sortable in input order (``rows``: how many
    rows the file has, for the width of the number)."""
    width = max(4, len(str(rows)))
    name = Path(str(name)).name
    for ext in sorted(SUPPORTED_EXTENSIONS, key=len, reverse=True):
        if name.lower().endswith(ext):
            name = name[: -len(ext)]
            break
    return f"{row:0{width}d}_{re.sub(r'[^A-Za-z0-9_.-]+', '_', name)[:80] or 'image'}"


def unique_stems(paths: Sequence[Any]) -> list[str]:
    """:func:`stem` of every input."""
    return [stem(i, p, len(paths)) for i, p in enumerate(paths)]


class ScoreWriterHandler:
    """:class:`ScoreWriter` as an Ignite handler (the ``writer`` of ``inference.json``):
    writes the records of ``engine.state.output[output_key]`` after every iteration, in
    order; ``summary`` holds the counts and the CSV path when the run completes.

    Args: as :class:`ScoreWriter`, plus ``output_key``.
    """

    def __init__(
        self,
        output_dir: str | os.PathLike,
        images: bool = True,
        extra_columns: Sequence[str] = (),
        heatmap_colormap: str = _HEATMAP_COLORMAP,
        output_key: str = "records",
    ):
        self.writer = ScoreWriter(
            output_dir,
            images=images,
            extra_columns=extra_columns,
            heatmap_colormap=heatmap_colormap,
        )
        self.output_key = output_key
        self.summary: dict[str, Any] = {}
        self._rows = 0

    def attach(self, engine) -> None:
        from ignite.engine import Events

        engine.add_event_handler(Events.STARTED, self._open)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._write)
        engine.add_event_handler(Events.COMPLETED, self._close)

    def _open(self, engine) -> None:
        self.writer.counts = dict.fromkeys(self.writer.counts, 0)
        self._rows, self._threshold = 0, None
        self._total = len(getattr(engine.state.dataloader, "dataset", ()) or ())
        self.writer.__enter__()

    def _write(self, engine) -> None:
        records = engine.state.output[self.output_key]
        stems = [stem(self._rows + i, r.image, self._total) for i, r in enumerate(records)]
        self._rows += len(records)
        self.writer.write_all(records, stems)
        self._threshold = next(
            (r.threshold for r in records if r.threshold is not None), self._threshold
        )

    def _close(self, engine) -> None:
        self.writer.__exit__()
        self.summary = {
            **self.writer.counts,
            "threshold": self._threshold,
            "csv": str(self.writer.path),
        }


def _plane(values: Any) -> np.ndarray:
    array = (
        values.detach().float().cpu().numpy()
        if hasattr(values, "detach")
        else np.asarray(values, np.float32)
    )
    return array.reshape(array.shape[-2:])


def _save_grey(path: Path, values: Any) -> Path:
    from PIL import Image

    Image.fromarray(
        np.round(np.clip(_plane(values), 0.0, 1.0) * 255.0).astype(np.uint8), mode="L"
    ).save(path)
    return path


def _save_colour(path: Path, values: Any, colormap: str) -> Path:
    from matplotlib import colormaps
    from PIL import Image

    rgba = colormaps[colormap](np.clip(_plane(values), 0.0, 1.0))
    Image.fromarray(np.round(rgba[..., :3] * 255.0).astype(np.uint8), mode="RGB").save(path)
    return path
