"""Random erasing of training inputs, or synthetic lesions pasted into them: an in-painting
objective for the student (beyond the paper, switches; off by default).

Why: trained on normal images only, the student learns to pass each cell through the encoder
skips, so an anomalous cell is copied, not in-painted (docs/EXPERIMENTS.md, "Making SQUID detect",
diagnosis). Erasing a random rectangle from some of a batch's inputs while every loss target
stays the clean image (the objective of RIAD, Zavrtanik et al., Pattern Recognition 2021)
makes a skip that carries nothing useful a case the decoder has to fill from the
memory-read bottleneck. The rectangles are not aligned with SQUID's tiles.

The synthetic lesions (:func:`paste_lesions`, the ``synthetic_anomaly`` switch) join SQUID with
AnatPaste (Sato et al.): instead of a black rectangle, a patch of the image itself blended into
its lung field (:mod:`squid_monai.transforms.anatomy`), which looks like a local opacity rather
than missing data, so that the generator learns to in-paint lesions away and its residual marks
them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from ...transforms.anatomy import AnatPaste, paste_batch

__all__ = ["erase_random_rectangles", "check_erasing", "paste_lesions"]


def check_erasing(fraction: float, size: Sequence[float]) -> tuple[float, float]:
    """The (min, max) rectangle side, after checking both settings (ValueError naming them)."""
    check_fraction(fraction, "input_erasing")
    bounds = tuple(float(s) for s in size)
    if len(bounds) != 2 or not 0.0 < bounds[0] <= bounds[1] <= 1.0:
        raise ValueError(
            f"erasing_size must be (min, max) with 0 < min <= max <= 1, got {tuple(size)}"
        )
    return bounds


def erase_random_rectangles(
    image: torch.Tensor, fraction: float, size: Sequence[float] = (0.125, 0.333), fill: float = 0.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Erase one random rectangle in ``round(fraction * B)`` of the B images (at most B - 1).

    Args:
        image: (B, C, H, W) batch; not modified.
        fraction: share of the batch to erase, in [0, 1); at least one image of a batch of
            two or more stays clean, so the memory queue always receives normal tokens.
        size: (min, max) side of the rectangle as a fraction of the image side, drawn
            independently for height and width.
        fill: the erased pixels' value (0: black, the background of both data sets' inputs
            after the intensity rule).

    Returns:
        the erased batch and a (B,) bool tensor, True for the images left unchanged. The
        draws use torch's global generator, which the training checkpoints save and restore.
    """
    low, high = check_erasing(fraction, size)
    b, _, h, w = image.shape
    clean = torch.ones(b, dtype=torch.bool, device=image.device)
    k = min(round(fraction * b), b - 1)
    if k <= 0:
        return image, clean
    chosen = torch.randperm(b, device=image.device)[:k]
    sides = []
    for extent in (h, w):
        lo, hi = max(1, math.ceil(low * extent)), max(1, math.floor(high * extent))
        side = torch.randint(lo, max(lo, hi) + 1, (k,), device=image.device)
        start = (torch.rand(k, device=image.device) * (extent - side + 1)).floor().long()
        sides.append((start, side))
    (top, height), (left, width) = sides
    rows = torch.arange(h, device=image.device)
    cols = torch.arange(w, device=image.device)
    inside_r = (rows[None] >= top[:, None]) & (rows[None] < (top + height)[:, None])  # (k, H)
    inside_c = (cols[None] >= left[:, None]) & (cols[None] < (left + width)[:, None])  # (k, W)
    mask = torch.zeros(b, 1, h, w, dtype=torch.bool, device=image.device)
    mask[chosen] = (inside_r[:, :, None] & inside_c[:, None, :])[:, None]
    clean[chosen] = False
    return image.masked_fill(mask, fill), clean


def check_fraction(fraction: float, name: str) -> float:
    """``fraction`` as a float in [0, 1) (ValueError naming the setting)."""
    if not 0.0 <= float(fraction) < 1.0:
        raise ValueError(f"{name} must be in [0, 1), got {fraction}")
    return float(fraction)


def paste_lesions(
    image: torch.Tensor, fraction: float, transform: AnatPaste
) -> tuple[torch.Tensor, torch.Tensor]:
    """Paste a synthetic lesion (``transform``) into ``round(fraction * B)`` of the B images
    (at most B - 1, as :func:`erase_random_rectangles`).

    Returns the batch (a new tensor; ``image`` is not modified) and a (B,) bool tensor, True
    for the images left unchanged. The images are chosen with torch's global generator, the
    lesions drawn by ``transform`` seeded from NumPy's global generator (:func:`~squid_monai.transforms.anatomy.paste_batch`)."""
    b = image.shape[0]
    clean = torch.ones(b, dtype=torch.bool, device=image.device)
    k = min(round(check_fraction(fraction, "synthetic_fraction") * b), b - 1)
    if k <= 0:
        return image, clean
    chosen = torch.randperm(b, device=image.device)[:k]
    pasted = image.clone()
    pasted[chosen] = paste_batch(transform, image[chosen])[0]
    clean[chosen] = False
    return pasted, clean
