"""Plots write real PNGs; image grids (Grad-CAM: tests/scoring/test_explain.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from squid_monai.scoring import difference_map
from squid_monai.visualize import (
    image_grid,
    plot_confusion_matrix,
    plot_roc,
    plot_score_histogram,
    tile_images,
)


def _png_size(path) -> tuple[int, int]:
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(path) as im:
        im.load()
        return im.size


def _labels_scores():
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1], 20)
    return labels, rng.normal(labels, 1.0)


def test_plots_write_nonempty_pngs(tmp_path):
    labels, scores = _labels_scores()
    paths = [
        plot_roc(labels, scores, tmp_path / "roc.png", title="val"),
        plot_score_histogram(
            labels, scores, tmp_path / "sub" / "hist.png", {"val": 0.5, "normal-only": 1.2}
        ),
        plot_confusion_matrix(labels, scores, 0.5, tmp_path / "cm.png"),
    ]
    for p in paths:
        w, h = _png_size(p)
        assert w > 100 and h > 100 and p.stat().st_size > 2000
    with pytest.raises(ValueError, match="only normal"):
        plot_roc(np.zeros(4), np.arange(4.0), tmp_path / "bad.png")


def test_no_pyplot_figures_leak(tmp_path):
    import matplotlib.pyplot as plt

    before = plt.get_fignums()
    labels, scores = _labels_scores()
    plot_roc(labels, scores, tmp_path / "roc.png")
    image_grid([torch.rand(2, 1, 8, 8)], ["x"], tmp_path / "g.png")
    assert plt.get_fignums() == before


def test_tile_images_shape_and_content():
    a = torch.rand(10, 1, 12, 16)
    b = np.random.rand(5, 1, 12, 16)
    grid = tile_images([a, b, a], max_images=8, pad=2)
    # columns limited by the smallest batch (5), 3 rows, 2-pixel gaps
    assert grid.shape == (3 * 12 + 2 * 2, 5 * 16 + 4 * 2)
    np.testing.assert_allclose(grid[14:26, 18:34], b[1, 0], rtol=1e-6)
    assert np.isnan(grid[12:14]).all()
    assert tile_images([a], max_images=3).shape == (12, 3 * 16 + 2 * 2)
    with pytest.raises(ValueError, match="image size"):
        tile_images([a, torch.rand(2, 1, 8, 8)])


def test_image_grid_png_grows_with_rows(tmp_path):
    x = torch.rand(6, 1, 16, 16)
    r = torch.rand(6, 1, 16, 16)
    one = image_grid([x], ["input"], tmp_path / "one.png", max_images=4)
    three = image_grid(
        [x, r, difference_map(x, r)],
        ["input", "student", "|difference|"],
        tmp_path / "three.png",
        max_images=4,
        value_ranges=[(0, 1), (0, 1), None],
    )
    (_, h1), (w3, h3) = _png_size(one), _png_size(three)
    assert h3 > 2 * h1 and w3 > 100
    with pytest.raises(ValueError, match="row titles"):
        image_grid([x, r], ["input"], tmp_path / "bad.png")
