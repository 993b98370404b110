"""The lung field of a chest radiograph found without labels, and the synthetic lesions pasted
into it (AnatPaste, Sato et al., "AnatPaste: anatomy-aware self-supervised learning for
anomaly detection in chest radiographs"; the CutPaste variant pastes anywhere).

Both act on one preprocessed image (1, H, W) in [0, 1] (tensor or array) and are used by the
families that learn from synthetic anomalies: the ``anatpaste`` family (normal vs pasted) and
SQUID's ``synthetic_anomaly`` switch (pasted in, clean out). They are array transforms applied
by those trainers to each image of a batch, not dictionary transforms of the shared data
pipeline, because the trainers need the clean image and the pasted one side by side.

Facts of the authors' public code carried over (sizes are given at their 256 px and scaled
with the image side):

* lung field (:func:`lung_field`): contrast-limited adaptive histogram equalisation (clip
  0.01, 256 bins), Otsu's threshold (256 bins); the field is the dark side of the threshold
  (their code compares the image with its own boolean threshold map, which keeps exactly the
  non-zero pixels at or below Otsu's level: the air in the lungs, not the bright mediastinum
  and bones); a 3 x 3 opening, the components touching the border removed (the air outside
  the body), a 3 x 3 dilation, and components under 400 pixels removed;
* paste (:class:`AnatPaste`): a patch of area U(0.02, 0.15) of the image and aspect ratio
  log-uniform in (0.3, 1/0.3), cut at a uniform place of the same image, brightness and
  contrast jittered by up to 10 %; its centre is a uniform pixel of the lung field; the
  blending weight is an ellipse or a rectangle (even odds) filling the patch box less a margin
  of 10 pixels, of opacity U{150..254}/255, blurred by a Gaussian of standard deviation
  U{0..14} pixels, times the lung field; with no lung field found, a uniform centre and the
  whole image;
* the CutPaste variant (``in_lung=False``): the patch pasted whole (opacity 1, no blur, no
  shape) at a uniform place where it fits.

Choices where the code leaves it open: the margin is capped so that the shape keeps at least
one pixel per side (the original's drawing fails or draws nothing for narrow patches); the
blending weight outside the patch box (where blur spreads it) blends towards 0, as the
original's black canvas does; the image jitter is brightness then contrast (the original
draws the order at random); small components are removed as components (the original clears
their bounding boxes).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from monai.config import NdarrayOrTensor
from monai.transforms import RandomizableTransform, Transform
from scipy import ndimage
from skimage.exposure import equalize_adapthist
from skimage.filters import threshold_otsu
from skimage.segmentation import clear_border

__all__ = ["PASTES", "AnatPaste", "LungField", "lung_field", "paste_batch", "paste_transform"]

#: The values of a ``paste`` switch: AnatPaste (inside the lung field) or CutPaste (anywhere).
PASTES = ("anatpaste", "cutpaste")

#: The authors' working size: pixel counts and lengths below are given at it.
REFERENCE_SIZE = 256


def _plane(image: NdarrayOrTensor) -> np.ndarray:
    """(1, H, W) or (H, W) image -> float64 (H, W) array in [0, 1]."""
    array = image.detach().cpu().numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
    if array.ndim == 3:
        if array.shape[0] != 1:
            raise ValueError(f"expected one channel (1, H, W), got shape {array.shape}")
        array = array[0]
    if array.ndim != 2:
        raise ValueError(f"expected an image (1, H, W) or (H, W), got shape {array.shape}")
    return np.clip(array.astype(np.float64), 0.0, 1.0)


def lung_field(image: NdarrayOrTensor, min_area: float = 400.0) -> np.ndarray:
    """The lung field of a radiograph (see the module docstring), a boolean (H, W) array.

    ``min_area``: the smallest component kept, in pixels at 256 px (scaled by the image's
    area)."""
    plane = _plane(image)
    if plane.max() <= plane.min():
        return np.zeros(plane.shape, bool)  # a flat image has no anatomy to find
    equalised = equalize_adapthist(plane, clip_limit=0.01, nbins=256)
    dark = (equalised <= threshold_otsu(equalised, nbins=256)) & (equalised > 0)
    square = np.ones((3, 3), bool)
    opened = ndimage.binary_opening(dark, square)
    field = ndimage.binary_dilation(clear_border(opened), square)
    labels, count = ndimage.label(field)
    if count:
        areas = np.bincount(labels.ravel())
        small = areas < min_area * plane.size / REFERENCE_SIZE**2
        small[0] = True  # the background
        field = ~small[labels]
    return field


class LungField(Transform):
    """MONAI transform: image (1, H, W) in [0, 1] -> its lung field (1, H, W) as 0 / 1 floats
    of the input's type (:func:`lung_field`)."""

    def __init__(self, min_area: float = 400.0):
        self.min_area = min_area

    def __call__(self, image: NdarrayOrTensor) -> NdarrayOrTensor:
        field = lung_field(image, self.min_area)[None].astype(np.float32)
        if isinstance(image, torch.Tensor):
            return torch.as_tensor(field, device=image.device, dtype=image.dtype)
        return field


class AnatPaste(RandomizableTransform):
    """MONAI transform: image (1, H, W) in [0, 1] -> ``(pasted, weight)``, the image with a
    patch of itself blended in and the blending weight (1, H, W) in [0, 1] (0 where the image
    is untouched), both of the input's type (see the module docstring).

    Args:
        in_lung: AnatPaste (True: blurred shapes inside the lung field) or CutPaste (False:
            the whole patch anywhere).
        area_ratio: the patch's area as a fraction of the image, (low, high).
        aspect_ratio: the aspect ratio is log-uniform in (aspect_ratio, 1 / aspect_ratio).
        jitter: the patch's brightness and contrast factors are U(1 - jitter, 1 + jitter).
        opacity: the shape's opacity is U{low..high - 1} / 255.
        blur: the shape's Gaussian standard deviation is U{low..high - 1} pixels at 256 px.
        margin: the shape's inset from the patch box, pixels at 256 px.
        min_area: the lung field's smallest component (:func:`lung_field`).
    """

    def __init__(
        self,
        in_lung: bool = True,
        area_ratio: tuple[float, float] = (0.02, 0.15),
        aspect_ratio: float = 0.3,
        jitter: float = 0.1,
        opacity: tuple[int, int] = (150, 255),
        blur: tuple[int, int] = (0, 15),
        margin: float = 10.0,
        min_area: float = 400.0,
    ):
        RandomizableTransform.__init__(self, prob=1.0)
        if not 0 < area_ratio[0] <= area_ratio[1] < 1:
            raise ValueError(f"area_ratio must be 0 < low <= high < 1, got {area_ratio}")
        if not 0 < aspect_ratio <= 1:
            raise ValueError(f"aspect_ratio must be in (0, 1], got {aspect_ratio}")
        self.in_lung, self.area_ratio, self.aspect_ratio = bool(in_lung), area_ratio, aspect_ratio
        self.jitter, self.opacity, self.blur, self.margin = jitter, opacity, blur, margin
        self.min_area = min_area

    def _box(self, height: int, width: int) -> tuple[int, int]:
        """The patch's (height, width): the area and the log-uniform aspect ratio."""
        area = self.R.uniform(*self.area_ratio) * height * width
        aspect = math.exp(self.R.uniform(math.log(self.aspect_ratio), -math.log(self.aspect_ratio)))
        cut_w = min(width, max(1, round(math.sqrt(area * aspect))))
        cut_h = min(height, max(1, round(math.sqrt(area / aspect))))
        return cut_h, cut_w

    def _patch(self, plane: np.ndarray, cut_h: int, cut_w: int) -> np.ndarray:
        """A patch cut at a uniform place of the image, brightness then contrast jittered."""
        top = int(self.R.uniform(0, plane.shape[0] - cut_h))
        left = int(self.R.uniform(0, plane.shape[1] - cut_w))
        patch = plane[top : top + cut_h, left : left + cut_w] * self.R.uniform(
            1 - self.jitter, 1 + self.jitter
        )
        patch = np.clip(patch, 0.0, 1.0)
        contrast = self.R.uniform(1 - self.jitter, 1 + self.jitter)
        return np.clip(contrast * patch + (1 - contrast) * patch.mean(), 0.0, 1.0)

    def _shape(self, height: int, width: int, centre: tuple[int, int], cut: tuple[int, int]):
        """The unblurred blending weight: an ellipse or a rectangle in the patch box less the
        margin, at a random opacity."""
        scale = min(height, width) / REFERENCE_SIZE
        (cy, cx), (cut_h, cut_w) = centre, cut
        margin_y = min(self.margin * scale, max(0.0, (cut_h // 2 - 1)))
        margin_x = min(self.margin * scale, max(0.0, (cut_w // 2 - 1)))
        y0, y1 = cy - cut_h // 2 + margin_y, cy + cut_h // 2 - margin_y
        x0, x1 = cx - cut_w // 2 + margin_x, cx + cut_w // 2 - margin_x
        ys, xs = np.mgrid[0:height, 0:width].astype(np.float64)
        if self.R.random_sample() < 0.5:  # ellipse in the box (pixel centres)
            ry, rx = max((y1 - y0) / 2, 0.5), max((x1 - x0) / 2, 0.5)
            inside = ((ys - (y0 + y1) / 2) / ry) ** 2 + ((xs - (x0 + x1) / 2) / rx) ** 2 <= 1
        else:
            inside = (ys >= y0) & (ys <= y1) & (xs >= x0) & (xs <= x1)
        opacity = self.R.randint(*self.opacity) / 255.0
        sigma = self.R.randint(*self.blur) * scale
        weight = inside * opacity
        return ndimage.gaussian_filter(weight, sigma, mode="constant") if sigma > 0 else weight

    def paste(self, plane: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(pasted, weight) for one (H, W) image in [0, 1] (the randomised work)."""
        height, width = plane.shape
        cut_h, cut_w = self._box(height, width)
        patch = self._patch(plane, cut_h, cut_w)
        canvas, weight = np.zeros_like(plane), np.zeros_like(plane)
        if not self.in_lung:  # CutPaste: the whole patch where it fits
            top = int(self.R.uniform(0, height - cut_h))
            left = int(self.R.uniform(0, width - cut_w))
            canvas[top : top + cut_h, left : left + cut_w] = patch
            weight[top : top + cut_h, left : left + cut_w] = 1.0
        else:
            field = lung_field(plane, self.min_area)
            if field.any():
                index = self.R.choice(np.flatnonzero(field))
                centre = (int(index // width), int(index % width))
            else:  # no lung field found: anywhere, as the original
                centre = (self.R.randint(height), self.R.randint(width))
                field = np.ones_like(field)
            top, left = centre[0] - cut_h // 2, centre[1] - cut_w // 2
            y0, x0 = max(top, 0), max(left, 0)
            y1, x1 = min(top + cut_h, height), min(left + cut_w, width)
            canvas[y0:y1, x0:x1] = patch[y0 - top : y1 - top, x0 - left : x1 - left]
            weight = self._shape(height, width, centre, (cut_h, cut_w)) * field
        return plane * (1 - weight) + canvas * weight, weight

    def __call__(self, image: NdarrayOrTensor) -> tuple[NdarrayOrTensor, NdarrayOrTensor]:
        self.randomize(None)
        pasted, weight = self.paste(_plane(image))
        pasted, weight = pasted[None].astype(np.float32), weight[None].astype(np.float32)
        if isinstance(image, torch.Tensor):
            return (
                torch.as_tensor(pasted, device=image.device, dtype=image.dtype),
                torch.as_tensor(weight, device=image.device, dtype=image.dtype),
            )
        return pasted, weight


def paste_transform(paste: str = "anatpaste") -> AnatPaste:
    """The augmentation a ``paste`` switch names (:data:`PASTES`), with the authors' ranges."""
    if paste not in PASTES:
        raise ValueError(f"paste must be one of {PASTES}, got {paste!r}")
    return AnatPaste(in_lung=paste == "anatpaste")


def paste_batch(transform: AnatPaste, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(pasted, weight) for a batch (B, 1, H, W): ``transform`` on each image, on the CPU,
    returned on the batch's device and dtype. The transform is first seeded from NumPy's global
    generator (one draw), which the bundle seeds and its checkpoints save: a run is repeatable,
    and a resumed one draws the lesions an uninterrupted one would."""
    transform.set_random_state(seed=int(np.random.randint(2**31)))
    pairs = [transform(x) for x in image.detach().float().cpu()]
    pasted = torch.stack([p for p, _ in pairs]).to(image)
    weight = torch.stack([w for _, w in pairs]).to(image)
    return pasted, weight
