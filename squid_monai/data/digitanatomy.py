"""DigitAnatomy (SQUID.md section 7): a synthetic 'anatomy' of handwritten digits.

A *normal* image is the digits 1 to 9 in a 3 x 3 grid in reading order, each a random
handwritten sample of its class with a random zoom-in crop of 80-100 % of the digit, in
a 32 x 32 cell: 96 x 96, one channel, float in [0, 1]. An *abnormal* image breaks the
layout in one or more cells, with one of four anomaly types:

- ``missing``: the cells are blank;
- ``misordered``: the contents of two or more cells are cyclically exchanged;
- ``flipped``: the digits are mirrored left-right (only digits whose mirror image looks
  wrong: 2 3 4 5 6 7 9; 1 and 8 are nearly symmetric);
- ``zero``: a handwritten 0 replaces the digit.

Items are dicts ``{"image": (1, 96, 96) float32 array, "label": 0 | 1, "anomaly": type
or "normal", "cells": "i,j" (affected cells, 0-8 in reading order; "" when normal)}``;
strings keep the metadata collatable by a DataLoader. Images are reproducible from
(seed, index). Training and evaluation use disjoint handwriting samples
(:mod:`squid_monai.data.digits`).

Command line: ``python -m squid_monai.data.digitanatomy --output_dir DIR`` writes the
images as PNG, ``DIR/datalist.json`` (paths relative to DIR) and ``DIR/preview.png``.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import scipy.ndimage as ndi
import torch
from monai.transforms import apply_transform

from squid_monai.data.digits import SPLITS, DigitBank, load_digit_bank

ANOMALY_TYPES = ("missing", "misordered", "flipped", "zero")
NORMAL = "normal"
#: Digits whose mirror image is clearly not the digit.
FLIPPABLE_DIGITS = (2, 3, 4, 5, 6, 7, 9)
GRID = 3
#: The definition's cell size (pixels) and zoom-in crop range (fraction of the digit kept).
CELL_SIZE = 32
CROP_RANGE = (0.8, 1.0)
#: Default most cells an anomaly affects.
DEFAULT_MAX_CELLS = 3
# Random streams are keyed by (seed, split, purpose, ...), so the on-the-fly training set,
# the fixed sets and the preview never share images by accident.
_SPLIT_STREAM = {split: i for i, split in enumerate(SPLITS)}
_ON_THE_FLY, _FIXED_SET, _PREVIEW, _INPAINTING = 0, 1, 2, 3


class DigitAnatomy:
    """Renders DigitAnatomy images from a bank of handwritten digits.

    Args:
        bank: the digit samples (:func:`squid_monai.data.digits.load_digit_bank`).
        cell_size: pixels per grid cell (image side = 3 * cell_size).
        crop_range: range of the random zoom-in crop, as the kept fraction of the digit.
        max_cells: the most cells one anomaly affects (drawn uniformly from 1..max_cells;
            at least 2 for ``misordered``).
    """

    def __init__(
        self,
        bank: DigitBank,
        cell_size: int = CELL_SIZE,
        crop_range: Sequence[float] = CROP_RANGE,
        max_cells: int = DEFAULT_MAX_CELLS,
    ) -> None:
        if not 0 < crop_range[0] <= crop_range[1] <= 1:
            raise ValueError(f"crop_range must lie in (0, 1], got {crop_range}")
        if max_cells < 1:
            raise ValueError(f"max_cells must be >= 1, got {max_cells}")
        self.bank = bank
        self.cell_size = int(cell_size)
        self.crop_range = tuple(float(c) for c in crop_range)
        self.max_cells = int(max_cells)

    @property
    def image_size(self) -> int:
        return GRID * self.cell_size

    def sample(self, rng: np.random.Generator, anomaly: str = NORMAL) -> dict:
        """One item of the given anomaly type (``"normal"`` or one of ``ANOMALY_TYPES``)."""
        cells = [self._render_digit(rng, digit) for digit in range(1, GRID * GRID + 1)]
        affected: list[int] = []
        if anomaly != NORMAL:
            affected = self._apply_anomaly(rng, anomaly, cells)
        image = np.block([cells[r * GRID : (r + 1) * GRID] for r in range(GRID)]).astype(np.float32)
        return {
            "image": image[None],
            "label": int(anomaly != NORMAL),
            "anomaly": anomaly,
            "cells": ",".join(str(c) for c in affected),
        }

    def _apply_anomaly(
        self, rng: np.random.Generator, anomaly: str, cells: list[np.ndarray]
    ) -> list[int]:
        if anomaly == "missing":
            chosen = self._choose_cells(rng, range(len(cells)), 1)
            for c in chosen:
                cells[c] = np.zeros_like(cells[c])
        elif anomaly == "misordered":
            chosen = self._choose_cells(rng, range(len(cells)), 2)
            moved = [cells[c] for c in chosen]
            for c, content in zip(chosen, moved[1:] + moved[:1]):
                cells[c] = content
        elif anomaly == "flipped":
            chosen = self._choose_cells(rng, [d - 1 for d in FLIPPABLE_DIGITS], 1)
            for c in chosen:
                cells[c] = cells[c][:, ::-1]
        elif anomaly == "zero":
            chosen = self._choose_cells(rng, range(len(cells)), 1)
            for c in chosen:
                cells[c] = self._render_digit(rng, 0)
        else:
            raise ValueError(f"unknown anomaly type {anomaly!r}; expected one of {ANOMALY_TYPES}")
        return sorted(chosen)

    def _choose_cells(self, rng: np.random.Generator, candidates, minimum: int) -> list[int]:
        candidates = list(candidates)
        count = int(rng.integers(minimum, max(minimum, min(self.max_cells, len(candidates))) + 1))
        return [int(c) for c in rng.choice(candidates, size=count, replace=False)]

    def _render_digit(self, rng: np.random.Generator, digit: int) -> np.ndarray:
        """A random sample of ``digit``, randomly zoom-cropped, rendered into one cell."""
        pool = self.bank.samples[digit]
        src = pool[rng.integers(len(pool))]
        crop = rng.uniform(*self.crop_range)
        offset = rng.uniform(0.0, 1.0, size=2)
        margin = int(round(self.bank.margin * self.cell_size))
        inner = self.cell_size - 2 * margin
        h, w = src.shape
        window = np.array([h * crop, w * crop])
        origin = (np.array([h, w]) - window) * offset
        step = window / inner  # source pixels per output pixel
        out = ndi.affine_transform(
            src,
            np.diag(step),
            offset=origin + 0.5 * step - 0.5,
            output_shape=(inner, inner),
            order=3,
            mode="constant",
            cval=0.0,
        )
        if self.bank.sigma > 0:
            out = ndi.gaussian_filter(out, self.bank.sigma)
        out = np.clip(
            (out - self.bank.ink_low) / (self.bank.ink_high - self.bank.ink_low), 0.0, 1.0
        )
        cell = np.zeros((self.cell_size, self.cell_size), dtype=np.float32)
        cell[margin : margin + inner, margin : margin + inner] = out
        return cell


class DigitAnatomyDataset(torch.utils.data.Dataset):
    """On-the-fly DigitAnatomy training set: normal images only, endless variety.

    Item ``i`` is a function of (seed, epoch, i) only, so runs are reproducible whatever
    the DataLoader's workers; ``length`` sets the epoch size, and :meth:`set_epoch` draws
    fresh images for a new epoch (takes effect in workers created after the call, i.e.
    with ``persistent_workers=False``). Without ``set_epoch`` every epoch shows the same
    ``length`` images, still augmented afresh by ``transform``.

    Args:
        length: images per epoch.
        seed: the data seed.
        transform: applied to each item dict (e.g. ``train_transforms(96)``).
        split: which handwriting samples to draw from (default: the training ones).
        mnist_dir: folder with MNIST idx files; default scikit-learn's digits.
        cell_size, crop_range: see :class:`DigitAnatomy`.
    """

    def __init__(
        self,
        length: int,
        seed: int = 0,
        transform: Callable | None = None,
        split: str = "training",
        mnist_dir: str | os.PathLike | None = None,
        cell_size: int = CELL_SIZE,
        crop_range: Sequence[float] = CROP_RANGE,
    ) -> None:
        if length < 1:
            raise ValueError(f"length must be >= 1, got {length}")
        self.length = int(length)
        self.seed = int(seed)
        self.transform = transform
        self.split = split
        self.epoch = 0
        self.generator = DigitAnatomy(
            load_digit_bank(split, mnist_dir), cell_size=cell_size, crop_range=crop_range
        )

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict:
        if not -self.length <= index < self.length:
            raise IndexError(f"index {index} out of range for {self.length} items")
        index %= self.length
        rng = np.random.default_rng(
            [self.seed, _SPLIT_STREAM[self.split], _ON_THE_FLY, self.epoch, index]
        )
        item = self.generator.sample(rng, NORMAL)
        return apply_transform(self.transform, item) if self.transform is not None else item


#: The report split (a second labelled set that chooses nothing, docs/EVIDENCE.md): fresh
#: images of the test split's handwriting, from a random stream of their own, so they are
#: none of the validation or test images; adding it leaves those sets unchanged.
REPORT_SPLIT = "report"
_REPORT_SET = 4  # purpose key of the report split's stream (after 0-3 above)


def digitanatomy_split(
    n_normal: int,
    n_abnormal: int,
    seed: int = 0,
    split: str = "validation",
    mnist_dir: str | os.PathLike | None = None,
    max_cells: int = DEFAULT_MAX_CELLS,
    cell_size: int = CELL_SIZE,
    crop_range: Sequence[float] = CROP_RANGE,
) -> list[dict]:
    """A fixed evaluation (or training) set: ``n_normal`` normals then ``n_abnormal`` anomalies.

    The anomaly types take turns (missing, misordered, flipped, zero, missing, ...), so
    every type is present once ``n_abnormal >= 4``. Images use the handwriting samples of
    ``split`` (``"report"``: see :data:`REPORT_SPLIT`); the same (seed, split) always gives
    the same list.
    """
    bank, purpose = ("test", _REPORT_SET) if split == REPORT_SPLIT else (split, _FIXED_SET)
    generator = DigitAnatomy(
        load_digit_bank(bank, mnist_dir),
        cell_size=cell_size,
        crop_range=crop_range,
        max_cells=max_cells,
    )
    kinds = [NORMAL] * n_normal + [ANOMALY_TYPES[i % len(ANOMALY_TYPES)] for i in range(n_abnormal)]
    return [
        generator.sample(np.random.default_rng([seed, _SPLIT_STREAM[bank], purpose, i]), kind)
        for i, kind in enumerate(kinds)
    ]


def inpainting_set(
    n_per_type: int,
    seed: int = 0,
    split: str = "validation",
    mnist_dir: str | os.PathLike | None = None,
    max_cells: int = DEFAULT_MAX_CELLS,
) -> list[dict]:
    """Anomalous images with their *normal counterpart*: the same handwriting samples
    before the anomaly was applied, i.e. what a perfect in-painting would reconstruct.

    Each item: ``image`` and ``normal`` (1, 96, 96), ``anomaly`` and ``cells`` (the affected
    cells as a list of ints); ``n_per_type`` items of each anomaly type, in type order. A
    normal image renders its nine cells before the anomaly touches the random stream, so
    re-sampling the same stream as ``"normal"`` gives the counterpart exactly.
    """
    generator = DigitAnatomy(load_digit_bank(split, mnist_dir), max_cells=max_cells)
    items = []
    for t, kind in enumerate(ANOMALY_TYPES):
        for i in range(n_per_type):
            key = [seed, _SPLIT_STREAM[split], _INPAINTING, t, i]
            item = generator.sample(np.random.default_rng(key), kind)
            normal = generator.sample(np.random.default_rng(key), NORMAL)
            items.append(
                {
                    "image": item["image"],
                    "normal": normal["image"],
                    "anomaly": kind,
                    "cells": [int(c) for c in item["cells"].split(",")],
                }
            )
    return items


def render_preview(
    path: str | os.PathLike, seed: int = 0, columns: int = 4, split: str = "validation"
) -> Path:
    """Save a PNG grid: one row per kind (normal, then each anomaly type), ``columns`` examples each."""
    from PIL import Image

    generator = DigitAnatomy(load_digit_bank(split))
    rows = []
    for r, kind in enumerate((NORMAL, *ANOMALY_TYPES)):
        tiles = [
            generator.sample(
                np.random.default_rng([seed, _SPLIT_STREAM[split], _PREVIEW, r, c]), kind
            )["image"][0]
            for c in range(columns)
        ]
        gap = np.full((generator.image_size, 4), 0.5, dtype=np.float32)
        rows.append(np.concatenate([t for tile in tiles for t in (tile, gap)][:-1], axis=1))
    hgap = np.full((4, rows[0].shape[1]), 0.5, dtype=np.float32)
    grid = np.concatenate([t for row in rows for t in (row, hgap)][:-1], axis=0)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray((grid * 255).round().astype(np.uint8)).save(path)
    return path


def write_digitanatomy(
    output_dir: str | os.PathLike,
    n_train: int,
    n_validation_normal: int,
    n_validation_abnormal: int,
    n_test_normal: int,
    n_test_abnormal: int,
    seed: int = 0,
    mnist_dir: str | os.PathLike | None = None,
    max_cells: int = DEFAULT_MAX_CELLS,
) -> Path:
    """Write the three splits as 8-bit PNGs plus ``datalist.json``; return the datalist path."""
    from PIL import Image

    out = Path(output_dir)
    train_set = DigitAnatomyDataset(n_train, seed=seed, mnist_dir=mnist_dir) if n_train else []
    splits = {
        "training": [train_set[i] for i in range(n_train)],
        "validation": digitanatomy_split(
            n_validation_normal, n_validation_abnormal, seed, "validation", mnist_dir, max_cells
        ),
        "test": digitanatomy_split(
            n_test_normal, n_test_abnormal, seed, "test", mnist_dir, max_cells
        ),
    }
    datalist: dict = {
        "name": "DigitAnatomy",
        "seed": seed,
        "digits": "mnist" if mnist_dir else "sklearn",
    }
    for split, items in splits.items():
        (out / split).mkdir(parents=True, exist_ok=True)
        entries = []
        for i, item in enumerate(items):
            rel = f"{split}/{i:05d}_{item['anomaly']}.png"
            Image.fromarray((item["image"][0] * 255).round().astype(np.uint8)).save(out / rel)
            entries.append(
                {
                    "image": rel,
                    "label": item["label"],
                    "anomaly": item["anomaly"],
                    "cells": item["cells"],
                }
            )
        datalist[split] = entries
    path = out / "datalist.json"
    path.write_text(json.dumps(datalist, indent=1))
    return path


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m squid_monai.data.digitanatomy",
        description="Write DigitAnatomy images as PNG, a MONAI datalist JSON and a preview grid.",
    )
    parser.add_argument("--output_dir", required=True, help="folder to write into")
    parser.add_argument("--n_train", type=int, default=1000, help="normal training images")
    parser.add_argument("--n_validation_normal", type=int, default=100)
    parser.add_argument("--n_validation_abnormal", type=int, default=100)
    parser.add_argument("--n_test_normal", type=int, default=100)
    parser.add_argument("--n_test_abnormal", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--max_cells", type=int, default=DEFAULT_MAX_CELLS, help="most cells one anomaly affects"
    )
    parser.add_argument(
        "--mnist_dir",
        default=None,
        help="folder with MNIST idx files (default: scikit-learn digits)",
    )
    args = parser.parse_args(argv)
    path = write_digitanatomy(
        args.output_dir,
        args.n_train,
        args.n_validation_normal,
        args.n_validation_abnormal,
        args.n_test_normal,
        args.n_test_abnormal,
        seed=args.seed,
        mnist_dir=args.mnist_dir,
        max_cells=args.max_cells,
    )
    preview = render_preview(Path(args.output_dir) / "preview.png", seed=args.seed)
    print(f"wrote {path} and {preview}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
