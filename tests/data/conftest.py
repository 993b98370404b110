"""Fixtures for the data tests: tiny image files and the shared real data (skipped when absent)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
SHARED_DATA = REPO / ".." / "shared" / "data"


def _write_image(path: Path, seed: int = 0, size: int = 12) -> Path:
    """A small random greyscale PNG/JPEG (never constant)."""
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, size=(size, size), dtype=np.uint8)
    pixels[0, 0], pixels[0, 1] = 0, 255
    Image.fromarray(pixels).save(path)
    return path


@pytest.fixture(scope="session")
def write_image():
    """``write_image(path, seed=0, size=12)`` writes a small non-constant grey image."""
    return _write_image


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared real data not found at {SHARED_DATA} (lives beside the repository)")
    return SHARED_DATA
