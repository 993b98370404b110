"""Banks of handwritten digit samples for DigitAnatomy, split so evaluation sees unseen handwriting.

Two sources:

- scikit-learn's bundled handwritten digits (default; 1,797 samples of 8 x 8, ships with
  the package, so DigitAnatomy works offline). Each class is split by a fixed permutation
  into training / validation / test samples (fractions below), independent of any
  experiment seed, so no handwriting sample used for training ever appears in
  evaluation images, whatever seeds the experiments use.
- MNIST idx files (``train-images-idx3-ubyte[.gz]`` and friends) in a folder the user
  names: the MNIST training files feed the training split, and the t10k files are
  halved (fixed permutation) into validation and test. MNIST's own split keeps the
  writers of the two apart.
"""

from __future__ import annotations

import gzip
import os
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np

SPLITS = ("training", "validation", "test")
#: Fraction of each digit class's scikit-learn samples in each split.
SKLEARN_SPLIT_FRACTIONS = {"training": 0.6, "validation": 0.2, "test": 0.2}
#: Seed of the fixed permutation that assigns samples to splits (part of the data set's
#: definition, not an experiment setting: changing it would mix training and evaluation).
BANK_SPLIT_SEED = 2023

# How a low-resolution sample becomes a clean pen stroke (scikit-learn's 8 x 8 digits):
# after cubic upsampling, a light Gaussian blur (sigma in cell pixels) rounds the stroke
# and a linear ramp between the two ink levels sharpens its edges.
_SKLEARN_STROKE = {"sigma": 0.8, "ink_low": 0.2, "ink_high": 0.7}
_MNIST_STROKE = {"sigma": 0.0, "ink_low": 0.0, "ink_high": 1.0}
#: Blank border, as a fraction of the cell, around a tightly cropped scikit-learn digit
#: (MNIST digits already sit inside a border).
_SKLEARN_MARGIN = 0.1


@dataclass(frozen=True)
class DigitBank:
    """Digit samples per class (float in [0, 1]) and how to render them into a cell."""

    samples: dict[int, np.ndarray]
    margin: float
    sigma: float
    ink_low: float
    ink_high: float
    source: str


def load_digit_bank(
    split: str = "training", mnist_dir: str | os.PathLike | None = None
) -> DigitBank:
    """The digit samples of ``split`` ('training', 'validation' or 'test')."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if mnist_dir is None:
        return _sklearn_bank(split)
    return _mnist_bank(str(Path(mnist_dir).resolve()), split)


@cache
def _sklearn_bank(split: str) -> DigitBank:
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = digits.images.astype(np.float32) / 16.0
    rng = np.random.default_rng(BANK_SPLIT_SEED)
    samples = {}
    for label in range(10):
        idx = rng.permutation(np.flatnonzero(digits.target == label))
        bounds = np.cumsum([0] + [round(SKLEARN_SPLIT_FRACTIONS[s] * len(idx)) for s in SPLITS])
        bounds[-1] = len(idx)
        k = SPLITS.index(split)
        samples[label] = images[idx[bounds[k] : bounds[k + 1]]]
    return DigitBank(samples, margin=_SKLEARN_MARGIN, source="sklearn", **_SKLEARN_STROKE)


@cache
def _mnist_bank(folder: str, split: str) -> DigitBank:
    prefix = "train" if split == "training" else "t10k"
    images = _read_idx(_find_idx(folder, f"{prefix}-images-idx3-ubyte")).astype(np.float32) / 255.0
    labels = _read_idx(_find_idx(folder, f"{prefix}-labels-idx1-ubyte"))
    if len(images) != len(labels):
        raise ValueError(f"{folder}: {len(images)} MNIST images but {len(labels)} labels")
    if split != "training":
        order = np.random.default_rng(BANK_SPLIT_SEED).permutation(len(images))
        half = len(order) // 2
        keep = order[:half] if split == "validation" else order[half:]
        images, labels = images[keep], labels[keep]
    samples = {d: images[labels == d] for d in range(10)}
    missing = [d for d, s in samples.items() if len(s) == 0]
    if missing:
        raise ValueError(f"{folder}: no MNIST samples of digit(s) {missing} in the {split} split")
    return DigitBank(samples, margin=0.0, source="mnist", **_MNIST_STROKE)


def _find_idx(folder: str, stem: str) -> Path:
    for name in (
        stem,
        stem + ".gz",
        stem.replace("-idx", ".idx"),
        stem.replace("-idx", ".idx") + ".gz",
    ):
        path = Path(folder) / name
        if path.is_file():
            return path
    raise FileNotFoundError(f"{folder}: no MNIST file {stem}[.gz]")


def _read_idx(path: Path) -> np.ndarray:
    """Read an idx file (MNIST's big-endian format: magic, dimensions, uint8 data)."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise ValueError(f"{path}: not an idx file of unsigned bytes")
    ndim = raw[3]
    dims = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise ValueError(f"{path}: truncated idx file ({data.size} of {int(np.prod(dims))} values)")
    return data.reshape(dims)
