"""Scores with no learning, reported beside the learned detector (any model family) so that
a gain can be told apart from a shortcut in the data.

On ZhangLab, pneumonia radiographs are smoother and lower in contrast than normal ones, so
the negated Laplacian energy of the image alone separates the classes well. Every learned
result on a data set is therefore reported with :func:`sharpness_score` on the same split,
computed on exactly the images the model sees (the preprocessed model input).

:func:`nearest_normal_pixels` is a second one, with memory but no learning: how far an image
lies from its nearest normal training image, pixel by pixel. On ZhangLab it is stronger than
the sharpness shortcut, and stronger than the discriminator logit (docs/EXPERIMENTS.md, session 17).

:class:`ControlEnsemble` sums the two, each standardised on the normal calibration images: on
the official ZhangLab test split it came within 2 to 3 points of the learned chest recipes
(issue 38), so it is the baseline every report carries.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .scoring.domain import mean_squared_distances

__all__ = [
    "CONTROL_PARTS",
    "ControlEnsemble",
    "image_stack",
    "laplacian_energy",
    "nearest_normal_pixels",
    "nearest_other_normal",
    "sharpness_score",
]

# 4-neighbour discrete Laplacian
_LAPLACIAN = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]])


def laplacian_energy(images: torch.Tensor) -> torch.Tensor:
    """Mean squared 4-neighbour Laplacian of each image of a (B, 1, H, W) batch -> (B,).

    Only the interior is used (no padding), so the image border does not add a fake edge.
    """
    if images.ndim != 4 or images.shape[1] != 1 or min(images.shape[-2:]) < 3:
        raise ValueError(
            f"expected a (B, 1, H, W) batch with H, W >= 3, got shape {tuple(images.shape)}"
        )
    x = images.detach().to(torch.float64)
    kernel = _LAPLACIAN.to(x)[None, None]
    return F.conv2d(x, kernel).pow(2).mean(dim=(1, 2, 3)).to(torch.float32)


def sharpness_score(images: torch.Tensor) -> torch.Tensor:
    """Anomaly score of the sharpness shortcut: ``-laplacian_energy`` (smoother = higher =
    "more abnormal"), same orientation as the detectors' scores."""
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
        raise ValueError(
            f"images {tuple(images.shape)} and normals {tuple(normals.shape)} must share (C, H, W), "
            "with at least one normal"
        )
    return mean_squared_distances(images, normals).amin(1).to(torch.float32)


#: The no-learning scores the control ensemble sums, in its order.
CONTROL_PARTS = ("sharpness", "pixel_knn")


def nearest_other_normal(normals: torch.Tensor) -> torch.Tensor:
    """:func:`nearest_normal_pixels` of each of the ``normals`` (N, 1, H, W) to the *other*
    normals (N,): an image's distance to itself (0) would bias its statistics low."""
    if len(normals) < 2:
        raise ValueError(
            f"the pixel nearest neighbour of a normal needs at least two normals, got {len(normals)}"
        )
    distance = mean_squared_distances(normals, normals)
    distance.fill_diagonal_(float("inf"))
    return distance.amin(1).to(torch.float32)


class ControlEnsemble:
    """The control every learned score must beat: sharpness plus the pixel nearest neighbour,
    each standardised by its mean and std on the normal calibration images and summed, built
    as the ``combined`` score builds its sum (:meth:`SQUIDScorer.fit_normals`: the statistics
    of the normals alone, a calibration image's own copy left out of its nearest-neighbour
    distance, the std clamped at 1e-8). No learning, no labels, and nothing of the images it
    scores enters its statistics.

    ``ControlEnsemble(normals)`` with the (N, 1, H, W) calibration normals (preprocessed as the
    scored images); ``parts(images)`` -> ``{"sharpness", "pixel_knn", "control"}`` (B,) each,
    abnormal = high; ``ensemble(images)`` -> the sum alone.
    """

    def __init__(self, normals: torch.Tensor):
        self.normals = normals.detach().float()
        own = torch.stack([sharpness_score(self.normals), nearest_other_normal(self.normals)], 1)
        self.mean, self.std = own.mean(0), own.std(0).clamp_min(1e-8)

    def parts(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        values = torch.stack(
            [sharpness_score(images), nearest_normal_pixels(images, self.normals)], 1
        )
        out = dict(zip(CONTROL_PARTS, values.unbind(1)))
        out["control"] = ((values - self.mean) / self.std).sum(1)
        return out

    def ensemble(self, images: torch.Tensor) -> torch.Tensor:
        return self.parts(images)["control"]
