"""The domain guard: does an input look like anything the model was calibrated on?

A scorer answers every input with a score, also one it has never seen the like of (a
DigitAnatomy model scores every chest radiograph at exactly 1.0). The guard says when a
score must not be read as if all were well. Its rule, in two parts:

* **Image far from every calibration normal.** At calibration, each normal calibration
  image is reduced to a :data:`THUMBNAIL` x :data:`THUMBNAIL` average-pooled thumbnail; up to
  :data:`BANK_SIZE` of them (evenly spaced through the calibration set) are kept in the
  scorer as the buffer ``domain_bank``. The ``domain_distance`` of an image is the mean
  squared pixel difference of its thumbnail to the nearest thumbnail of the bank. Each
  calibration normal's own distance to the bank (itself left out) says how far a normal
  image may lie; the limit, the buffer ``domain_limit``, is their :data:`QUANTILE` quantile
  times :data:`MARGIN`. An image beyond the limit lies several times further from the
  calibration normals than nearly all of them lie from the others. The quantile, not the
  maximum: the maximum is set by the single most unusual calibration image (on ZhangLab at
  64 px, 2.3 x the 99th percentile), the quantile is stable. Measured (docs: the bundle's
  model card): normal and anomalous validation images of the model's own data set lie at
  most 2 x the 99th percentile, every out-of-domain input tried at least 4 x (a radiograph
  on a DigitAnatomy model, a digit or an inverted radiograph on a chest model). The margin
  2.5 sits a little below the middle of the two (2.8 on a log scale): a false warning costs a
  look, a false all-clear is what the guard is there to prevent.
* **Score saturated.** A calibrated score within :data:`SATURATION` of 0 or 1 (the scored
  quantity about 14 or more calibration standard deviations from the normals' mean) ranks
  nothing: the evidence lies far outside anything seen in calibration.

Either part makes the record's ``domain`` :data:`OUT_OF_DOMAIN` with the reason; a model
folder calibrated before the guard existed (no bank, ``domain_limit`` 0) gives
:data:`NOT_RECORDED`, never an all-clear. The distance is part of the scorer's forward (its
output ``domain_distance``), so every export and every consumer computes it the same way.

Cost: a (BANK_SIZE, THUMBNAIL**2) float32 buffer (256 KiB) and one scalar per model.
Why thumbnails and not the model's own features: the check must hold for every model
family and stay meaningful when the model itself is what fails (an out-of-domain image
can look perfectly "normal" to a network's features); at 16 x 16 a radiograph and a
handwritten digit differ in layout, which is what the guard must see, and the small
differences between normal radiographs (the pathology the model scores) mostly average
out.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F

__all__ = [
    "BANK_SIZE",
    "IN_DOMAIN",
    "MARGIN",
    "NOT_RECORDED",
    "OUT_OF_DOMAIN",
    "QUANTILE",
    "SATURATION",
    "THUMBNAIL",
    "domain_status",
    "domain_warning",
    "empty_bank",
    "fit_bank",
    "recorded_domain",
    "mean_squared_distances",
    "nearest_in_bank",
    "thumbnails",
]

#: side of the thumbnails the guard compares
THUMBNAIL = 16
#: at most this many calibration thumbnails are kept
BANK_SIZE = 256
#: the limit is this quantile of the calibration normals' distances ...
QUANTILE = 0.99
#: ... times this
MARGIN = 2.5
#: a score within this of 0 or 1 is saturated
SATURATION = 1e-6
#: a bank row that is no calibration image: an image in [0, 1] lies at least 9 from it and at
#: most 1 from any real row, so it is never the nearest while a real row exists (and small
#: enough for float32 distances to agree across runtimes)
_EMPTY_ROW = 4.0

IN_DOMAIN = "in domain"
OUT_OF_DOMAIN = "OUT OF DOMAIN"
NOT_RECORDED = "domain not recorded"


def recorded_domain(domain: Mapping[str, Any] | None) -> dict[str, Any]:
    """A model's recorded domain (``network.json``'s ``domain``), or ``{"name":
    NOT_RECORDED}`` for a model folder written before the record existed (never an
    all-clear)."""
    return dict(domain) if domain else {"name": NOT_RECORDED}


def thumbnails(images: torch.Tensor) -> torch.Tensor:
    """(B, 1, H, W) in [0, 1] -> (B, THUMBNAIL**2): average pooling to THUMBNAIL x THUMBNAIL,
    flattened (H and W multiples of THUMBNAIL pool exactly, also in ONNX)."""
    return F.adaptive_avg_pool2d(images.float(), THUMBNAIL).flatten(1)


def empty_bank() -> tuple[torch.Tensor, torch.Tensor]:
    """``(domain_bank, domain_limit)`` of a scorer not calibrated with the guard."""
    return torch.full((BANK_SIZE, THUMBNAIL**2), _EMPTY_ROW), torch.tensor(0.0)


def nearest_in_bank(thumbs: torch.Tensor, bank: torch.Tensor) -> torch.Tensor:
    """Mean squared difference of each thumbnail (B, D) to its nearest bank row (K, D) -> (B,).
    Broadcast, not ``cdist``: it traces into TorchScript and ONNX as it runs eagerly; no
    ``.to(device)``, which a trace would freeze into a device constant (the bank is a buffer on
    the scorer's device, as the image is)."""
    return (thumbs.float()[:, None, :] - bank[None]).pow(2).mean(-1).amin(1)


def mean_squared_distances(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """(N, ...) and (K, ...) -> (N, K): mean squared difference of every pair, in float64
    (the nearest-neighbour baselines and the guard's calibration share it)."""
    a, b = x.detach().flatten(1).double(), y.detach().flatten(1).double()
    return torch.cdist(a, b).pow(2) / a.shape[1]


def fit_bank(thumbs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """From the (N, D) thumbnails of the normal calibration images: ``(bank, limit,
    distances)``, the bank padded to BANK_SIZE rows, the limit (MARGIN x the QUANTILE quantile
    of the distances)
    and each calibration image's distance to the bank, its own row left out (N,). Fewer than
    two images cannot say how far normals lie: the empty bank (NOT_RECORDED)."""
    thumbs = thumbs.detach().as_subclass(torch.Tensor).float().cpu()  # no MetaTensor in a buffer
    n = len(thumbs)
    if n < 2:
        bank, limit = empty_bank()
        return bank, limit, torch.full((n,), float("nan"))
    keep = torch.linspace(0, n - 1, min(n, BANK_SIZE)).round().long().unique()
    distances = mean_squared_distances(thumbs, thumbs[keep])
    distances[keep, torch.arange(len(keep))] = float("inf")  # a kept image is not its own neighbour
    nearest = distances.amin(1).float()
    bank, _ = empty_bank()
    bank[: len(keep)] = thumbs[keep].float().cpu()
    return bank, MARGIN * torch.quantile(nearest, QUANTILE), nearest


def domain_status(distance: float | None, limit: float | None, score: float | None) -> str:
    """The guard's verdict on one scored image (module docstring): :data:`OUT_OF_DOMAIN` with
    its reasons, :data:`NOT_RECORDED` when the model has no calibration bank (or the scorer
    gave no distance), else :data:`IN_DOMAIN`."""
    recorded = distance is not None and limit is not None and limit > 0
    reasons = []
    if recorded and distance > limit:
        reasons.append(
            f"image {distance / limit:.1f} x the limit from the nearest calibration normal"
        )
    if score is not None and (score < SATURATION or score > 1.0 - SATURATION):
        reasons.append("score saturated, evidence far outside the calibration normals")
    if reasons:
        return f"{OUT_OF_DOMAIN}: " + "; ".join(reasons)
    return IN_DOMAIN if recorded else NOT_RECORDED


def domain_warning(scored: int, out_of_domain: int, not_recorded: int) -> str | None:
    """The line a run's summary shows about the guard, or None when every scored image was in
    domain."""
    if out_of_domain:
        return (
            f"{out_of_domain} of {scored} scored images are {OUT_OF_DOMAIN} for this model: "
            "their scores mean nothing (see the 'domain' column)"
        )
    if not_recorded:
        return (
            f"{not_recorded} of {scored} scored images could not be checked: {NOT_RECORDED} "
            "(a model calibrated before the domain guard; calibrate or train it again)"
        )
    return None
