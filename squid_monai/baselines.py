"""Scores with no learning, reported beside SQUID so that a gain can be told apart from a
shortcut in the data.

On ZhangLab, pneumonia radiographs are smoother and lower in contrast than normal ones, so
the negated Laplacian energy of the image alone separates the classes well. Every SQUID
result on a data set is therefore reported with :func:`sharpness_score` on the same split,
computed on exactly the images SQUID sees (the preprocessed model input).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["laplacian_energy", "sharpness_score"]

# 4-neighbour discrete Laplacian
_LAPLACIAN = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]])


def laplacian_energy(images: torch.Tensor) -> torch.Tensor:
    """Mean squared 4-neighbour Laplacian of each image of a (B, 1, H, W) batch -> (B,).

    Only the interior is used (no padding), so the image border does not add a fake edge.
    """
    if images.ndim != 4 or images.shape[1] != 1 or min(images.shape[-2:]) < 3:
        raise ValueError(f"expected a (B, 1, H, W) batch with H, W >= 3, got shape {tuple(images.shape)}")
    x = images.detach().to(torch.float64)
    kernel = _LAPLACIAN.to(x)[None, None]
    return F.conv2d(x, kernel).pow(2).mean(dim=(1, 2, 3)).to(torch.float32)


def sharpness_score(images: torch.Tensor) -> torch.Tensor:
    """Anomaly score of the sharpness shortcut: ``-laplacian_energy`` (smoother = higher =
    "more abnormal"), same orientation as SQUID's score."""
    return -laplacian_energy(images)
