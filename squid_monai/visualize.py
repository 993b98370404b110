"""Figures for evaluation and explanation: ROC, score histogram, confusion matrix, image
grids and heat-map overlays (the heat maps themselves, the score's gradient or Grad-CAM of the discriminator, are
computed by :mod:`squid_monai.scoring.explain`; the difference image by
:func:`squid_monai.scoring.difference_map`).

Figures are drawn on :class:`matplotlib.figure.Figure` objects with an Agg canvas, never
through ``pyplot``: nothing is registered in pyplot's global figure list (so nothing leaks
in long trainings that plot every validation), no GUI backend is ever selected, and the
module is safe in worker threads. Every plotting function saves a PNG and returns its path.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from sklearn.metrics import roc_curve

from squid_monai.metrics import binary_metrics, check_labels_scores, roc_auc

__all__ = [
    "image_grid",
    "overlay_heatmap",
    "plot_confusion_matrix",
    "plot_roc",
    "plot_score_histogram",
    "tile_images",
]

_CLASS_NAMES = ("normal", "abnormal")


def _new_figure(figsize: tuple[float, float]) -> Figure:
    fig = Figure(figsize=figsize)
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, path: str | Path, dpi: int = 100) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=dpi, bbox_inches="tight")
    fig.clf()  # release artists now rather than at garbage collection
    return path


def _to_numpy(x: Any) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().float().cpu().numpy()
    return np.asarray(x, dtype=np.float32)


def plot_roc(labels: Any, scores: Any, path: str | Path, title: str | None = None) -> Path:
    """ROC curve (abnormal = positive) with the AUC in the legend and the chance diagonal."""
    y, s = check_labels_scores(labels, scores, both_classes=True)
    fpr, tpr, _ = roc_curve(y, s)
    fig = _new_figure((4.5, 4.5))
    ax = fig.add_subplot()
    ax.plot(fpr, tpr, lw=2, label=f"AUC = {roc_auc(y, s):.3f}")
    ax.plot([0, 1], [0, 1], ls="--", c="grey", lw=1, label="chance")
    ax.set(
        xlim=(0, 1),
        ylim=(0, 1.01),
        xlabel="false-positive rate (1 - specificity)",
        ylabel="true-positive rate (sensitivity)",
        title=title or "ROC",
    )
    ax.legend(loc="lower right")
    return _save(fig, path)


def plot_score_histogram(
    labels: Any,
    scores: Any,
    path: str | Path,
    thresholds: Mapping[str, float] | None = None,
    title: str | None = None,
) -> Path:
    """Score histograms of normal and abnormal images on shared bins, with named thresholds
    drawn as vertical lines (e.g. ``{"validation": 0.61, "normal-only": 0.7}``)."""
    y, s = check_labels_scores(labels, scores, both_classes=False)
    bins = np.histogram_bin_edges(s, bins="auto")
    fig = _new_figure((6, 4))
    ax = fig.add_subplot()
    for cls, name in enumerate(_CLASS_NAMES):
        sel = s[y == cls]
        if sel.size:
            ax.hist(sel, bins=bins, alpha=0.55, label=f"{name} (n={sel.size})")
    for i, (name, thr) in enumerate((thresholds or {}).items()):
        ax.axvline(float(thr), ls="--", c=f"C{i + 2}", label=f"{name} = {float(thr):.3g}")
    ax.set(
        xlabel="anomaly score (higher = more abnormal)",
        ylabel="images",
        title=title or "Scores by class",
    )
    ax.legend()
    return _save(fig, path)


def plot_confusion_matrix(
    labels: Any, scores: Any, threshold: float, path: str | Path, title: str | None = None
) -> Path:
    """2 x 2 confusion matrix at ``threshold`` (decision ``score > threshold``)."""
    m = binary_metrics(labels, scores, threshold)
    counts = np.array([[m["tn"], m["fp"]], [m["fn"], m["tp"]]])
    fig = _new_figure((4, 4))
    ax = fig.add_subplot()
    ax.imshow(counts, cmap="Blues", vmin=0)
    for (i, j), c in np.ndenumerate(counts):
        ax.text(
            j,
            i,
            str(c),
            ha="center",
            va="center",
            color="white" if c > counts.max() / 2 else "black",
            fontsize=14,
        )
    ax.set_xticks([0, 1], [f"pred. {n}" for n in _CLASS_NAMES])
    ax.set_yticks([0, 1], [f"true {n}" for n in _CLASS_NAMES])
    ax.set_title(
        title or f"threshold {float(threshold):.3g}: acc {m['accuracy']:.3f}, F1 {m['f1']:.3f}"
    )
    return _save(fig, path)


def _as_bhw(x: Any, what: str) -> np.ndarray:
    """(B,1,H,W), (B,H,W) or (H,W) -> (B,H,W) float32 numpy."""
    a = _to_numpy(x)
    if a.ndim == 4:
        if a.shape[1] != 1:
            raise ValueError(f"{what}: expected one channel (B,1,H,W), got shape {a.shape}")
        a = a[:, 0]
    elif a.ndim == 2:
        a = a[None]
    elif a.ndim != 3:
        raise ValueError(f"{what}: expected (B,1,H,W), (B,H,W) or (H,W), got shape {a.shape}")
    return a


def tile_images(rows: Sequence[Any], max_images: int = 8, pad: int = 2) -> np.ndarray:
    """Tile rows of (B,1,H,W) images into one (R*H + (R-1)*pad, N*W + (N-1)*pad) array.

    ``N = min(max_images, smallest B)``; padding is NaN so it renders as background.
    """
    if not rows:
        raise ValueError("image grid needs at least one row")
    arrays = [_as_bhw(r, f"row {i}") for i, r in enumerate(rows)]
    shapes = {a.shape[1:] for a in arrays}
    if len(shapes) != 1:
        raise ValueError(f"image grid rows differ in image size: {sorted(shapes)}")
    (h, w), n = shapes.pop(), min(max_images, *(a.shape[0] for a in arrays))
    if n < 1:
        raise ValueError("image grid needs at least one image per row and max_images >= 1")
    grid = np.full((len(arrays) * (h + pad) - pad, n * (w + pad) - pad), np.nan, np.float32)
    for r, a in enumerate(arrays):
        for c in range(n):
            grid[r * (h + pad) : r * (h + pad) + h, c * (w + pad) : c * (w + pad) + w] = a[c]
    return grid


def image_grid(
    rows: Sequence[Any],
    row_titles: Sequence[str],
    path: str | Path,
    max_images: int = 8,
    value_ranges: Sequence[tuple[float, float] | None] | None = None,
) -> Path:
    """Save a grid with one row per entry of ``rows`` (e.g. input / reconstruction /
    |difference|) and up to ``max_images`` columns.

    Each row gets its own grey scale: ``value_ranges[i]`` if given, else the row's min-max
    (so a faint difference image is still visible).
    """
    if len(row_titles) != len(rows):
        raise ValueError(f"{len(rows)} rows but {len(row_titles)} row titles")
    if value_ranges is not None and len(value_ranges) != len(rows):
        raise ValueError(f"{len(rows)} rows but {len(value_ranges)} value ranges")
    n_cols = min(max_images, *(_as_bhw(r, f"row {i}").shape[0] for i, r in enumerate(rows)))
    tiles = [tile_images([r], max_images=n_cols) for r in rows]
    aspect = tiles[0].shape[1] / tiles[0].shape[0]
    fig = _new_figure((max(2.0, 1.6 * aspect), 1.6 * len(rows)))
    for i, (tile, name) in enumerate(zip(tiles, row_titles)):
        ax = fig.add_subplot(len(rows), 1, i + 1)
        vr = value_ranges[i] if value_ranges is not None else None
        vmin, vmax = vr if vr is not None else (np.nanmin(tile), np.nanmax(tile))
        ax.imshow(tile, cmap="gray", vmin=vmin, vmax=vmax if vmax > vmin else vmin + 1e-6)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_ylabel(name)
    return _save(fig, path)


def overlay_heatmap(
    image: Any, heatmap: Any, path: str | Path, alpha: float = 0.45, title: str | None = None
) -> Path:
    """Save the grey image with the heat map (values in [0, 1]) blended on top, with a colour bar."""
    img = np.squeeze(_to_numpy(image))
    hm = np.squeeze(_to_numpy(heatmap))
    if img.ndim != 2 or img.shape != hm.shape:
        raise ValueError(
            f"overlay needs one 2-D image and a heat map of the same shape, got "
            f"{tuple(np.shape(image))} and {tuple(np.shape(heatmap))}"
        )
    fig = _new_figure((4, 4))
    ax = fig.add_subplot()
    ax.imshow(img, cmap="gray")
    shown = ax.imshow(hm, cmap="jet", alpha=alpha, vmin=0.0, vmax=1.0)
    fig.colorbar(shown, ax=ax, fraction=0.046, pad=0.04)
    ax.set_axis_off()
    if title:
        ax.set_title(title)
    return _save(fig, path)
