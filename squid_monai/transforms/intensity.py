"""Robust intensity scaling of a radiograph to [0, 1].

Default: clip at the 0.5th and 99.5th percentiles of the image and map that range
linearly to [0, 1]. Why percentiles rather than min-max: radiographs routinely carry a
few extreme pixels that say nothing about anatomy (burned-in text and side markers,
collimator edges, dead detector pixels, padding values in 12/16-bit DICOMs). With
min-max a single such pixel compresses the whole chest into a narrow band; the
percentile window ignores up to 0.5 % of pixels at each end, which keeps the same
anatomy at the same grey level across sources, bit depths and vendors. Being symmetric,
it also keeps an inverted image exactly inverted (scale(-x) = 1 - scale(x)).
``lower=0, upper=100`` gives plain min-max scaling.

Images whose percentile window is empty (almost all pixels equal) fall back to min-max;
a constant image raises :class:`RadiographError`.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform, Transform

from squid_monai.transforms.errors import RadiographError

#: Default clipping percentiles (see the module docstring for why).
DEFAULT_LOWER_PERCENTILE = 0.5
DEFAULT_UPPER_PERCENTILE = 99.5


class RobustScaleIntensity(Transform):
    """Clip an image at the given percentiles and scale it linearly to [0, 1] (float32)."""

    def __init__(self, lower: float = DEFAULT_LOWER_PERCENTILE, upper: float = DEFAULT_UPPER_PERCENTILE) -> None:
        if not 0.0 <= lower < upper <= 100.0:
            raise ValueError(f"percentiles must satisfy 0 <= lower < upper <= 100, got {lower}, {upper}")
        self.lower = float(lower)
        self.upper = float(upper)

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        img = torch.as_tensor(img) if not isinstance(img, torch.Tensor) else img
        values = img.detach().cpu().numpy().astype(np.float32, copy=False)
        low, high = np.percentile(values, [self.lower, self.upper]).astype(np.float32)
        if not high > low:
            low, high = values.min(), values.max()
        if not high > low:
            name = img.meta.get("filename_or_obj") if isinstance(img, MetaTensor) else None
            raise RadiographError(name, f"constant image (every pixel is {float(low):g}): cannot scale to [0, 1]")
        # float32 throughout, so that the pixel at the upper bound maps to exactly 1
        return ((img.float() - low) / (high - low)).clamp_(0.0, 1.0)


class RobustScaleIntensityd(MapTransform):
    """Dictionary version of :class:`RobustScaleIntensity`."""

    def __init__(
        self,
        keys: KeysCollection,
        lower: float = DEFAULT_LOWER_PERCENTILE,
        upper: float = DEFAULT_UPPER_PERCENTILE,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.scaler = RobustScaleIntensity(lower=lower, upper=upper)

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.scaler(d[key])
        return d
