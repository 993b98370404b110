"""Scores with no learning, reported beside SQUID so that a gain can be told apart from a
shortcut in the data.

On ZhangLab, pneumonia radiographs are smoother and lower in contrast than normal ones, so
the negated Laplacian energy of the image alone separates the classes well. Every SQUID
result on a data set is therefore reported with :func:`sharpness_score` on the same split,
computed on exactly the images SQUID sees (the preprocessed model input).

:func:`nearest_normal_pixels` is a second one, with memory but no learning: how far an image
lies from its nearest normal training image, pixel by pixel. On ZhangLab it is stronger than
the sharpness shortcut, and stronger than the discriminator logit (docs/EXPERIMENTS.md, session 17).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["image_stack", "laplacian_energy", "nearest_normal_pixels", "sharpness_score"]

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


def image_stack(source) -> torch.Tensor:
    """The normals of :func:`nearest_normal_pixels` as one float (N, C, H, W) tensor, from a
    tensor or from a dataset of ``{"image": ...}`` items (what the bundle's calibration gives)."""
    if isinstance(source, torch.Tensor):
        return source.detach().float()
    return torch.stack([torch.as_tensor(item["image"]).float() for item in source])


def nearest_normal_pixels(images: torch.Tensor, normals: torch.Tensor) -> torch.Tensor:
    """Anomaly score of the pixel nearest neighbour: the mean squared pixel difference of each
    image of a (B, 1, H, W) batch to the nearest of the ``normals`` (N, 1, H, W) -> (B,)."""
    if images.shape[1:] != normals.shape[1:] or len(normals) == 0:
        raise ValueError(f"images {tuple(images.shape)} and normals {tuple(normals.shape)} must share (C, H, W), "
                         "with at least one normal")
    x, n = images.detach().flatten(1).double(), normals.detach().flatten(1).double()
    return (torch.cdist(x, n).pow(2).amin(1) / x.shape[1]).to(torch.float32)
