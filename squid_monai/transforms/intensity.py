"""Intensity scaling of a radiograph to [0, 1]: two rules (SQUID.md section 7, U2).

``"percentile"`` (default, :class:`RobustScaleIntensity`): clip at the 0.5th and 99.5th percentiles of the image and map that range
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

``"raw"`` (:class:`RawScaleIntensity`): the authors' rule, torchvision ``ToTensor()`` on
an 8-bit image, i.e. pixel / 255, generalised to any bit depth: the value divided by the
full range of the *stored* bit depth, ``(value - low) / (high - low)`` with ``[low, high]``
the range the pixel type can hold (``meta["value_range"]``, set by
:class:`~squid_monai.transforms.loading.LoadRadiograph`). So

- 8-bit PNG / JPEG (and 8-bit DICOM): exactly pixel / 255;
- 16-bit PNG: value / 65535;
- DICOM: value / (2**BitsStored - 1) for unsigned pixels without rescaling (a 12-bit
  detector: / 4095), taken after the reader's Modality LUT (rescale slope / intercept:
  ``[low, high]`` is the stored range mapped through them), VOI window (pydicom maps it to
  that same range) and MONOCHROME1 inversion (which stays within the image's own range);
  see :func:`squid_monai.transforms.dicom.stored_value_range`;
- in-memory arrays: by data type (``uint8`` / 255, ``uint16`` / 65535); floating-point
  arrays are taken as already in [0, 1] (DigitAnatomy), unchanged.

No contrast stretch: the global brightness and contrast of the acquisition stay in the
image (on ZhangLab they differ between classes). Results are clamped to [0, 1]. An image
whose stored range is unknown (floating-point NIfTI) raises :class:`RadiographError`.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform, Transform

from squid_monai.transforms.errors import RadiographError

#: The intensity rules (see the module docstring).
INTENSITY_RULES = ("percentile", "raw")
#: Default clipping percentiles (see the module docstring for why).
DEFAULT_LOWER_PERCENTILE = 0.5
DEFAULT_UPPER_PERCENTILE = 99.5


class RobustScaleIntensity(Transform):
    """Clip an image at the given percentiles and scale it linearly to [0, 1] (float32).

    Not MONAI's ``ScaleIntensityRangePercentiles(lower, upper, b_min=0, b_max=1, clip=True)``,
    although that gives the same image, bit for bit, on 8-bit radiographs (all 5216 ZhangLab
    training images) and DigitAnatomy (``tests/transforms/test_monai_equivalents.py``): MONAI
    takes the percentiles of images up to 1e6 pixels with ``torch.quantile`` in float32, where
    this interpolates them in float64, so on 12- and 16-bit images the window can move by a
    float32 step (1e-9 on the [0, 1] scale, in 1 % of the pixels of a 16-bit ramp; up to 6e-8
    on floating-point noise): not the inputs the trained models saw. And
    it leaves two cases unscaled: an empty window (almost all pixels equal) makes it divide by
    zero, warn and return the image shifted; here the window falls back to min-max, and a
    constant image is a ``RadiographError`` naming the file.
    """

    def __init__(
        self, lower: float = DEFAULT_LOWER_PERCENTILE, upper: float = DEFAULT_UPPER_PERCENTILE
    ) -> None:
        if not 0.0 <= lower < upper <= 100.0:
            raise ValueError(
                f"percentiles must satisfy 0 <= lower < upper <= 100, got {lower}, {upper}"
            )
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
            raise RadiographError(
                name, f"constant image (every pixel is {float(low):g}): cannot scale to [0, 1]"
            )
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


class RawScaleIntensity(Transform):
    """The ``"raw"`` rule: ``(value - low) / (high - low)`` with ``[low, high]`` the stored
    value range in ``img.meta["value_range"]`` (module docstring), clamped to [0, 1]."""

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        meta = img.meta if isinstance(img, MetaTensor) else {}
        if "value_range" not in meta:
            raise RadiographError(
                meta.get("filename_or_obj"),
                'the "raw" intensity rule needs the stored bit depth of the image, '
                'which is not known here (floating-point data?): use the "percentile" rule',
            )
        low, high = (
            float(v) for v in np.asarray(meta["value_range"], dtype=np.float64).reshape(-1)[:2]
        )
        if not high > low:
            raise RadiographError(
                meta.get("filename_or_obj"), f"empty stored value range [{low:g}, {high:g}]"
            )
        # float32 arithmetic; low = 0 gives exactly value / full scale (8-bit: pixel / 255)
        return ((img.float() - low) / (high - low)).clamp_(0.0, 1.0)


class RawScaleIntensityd(MapTransform):
    """Dictionary version of :class:`RawScaleIntensity`."""

    def __init__(self, keys: KeysCollection, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.scaler = RawScaleIntensity()

    __call__ = RobustScaleIntensityd.__call__


def check_intensity_rule(rule: str) -> str:
    """``rule`` if it is one of :data:`INTENSITY_RULES`, else a ``ValueError``."""
    if rule not in INTENSITY_RULES:
        raise ValueError(f"intensity rule must be one of {INTENSITY_RULES}, got {rule!r}")
    return rule


def intensity_transform(
    rule: str = "percentile",
    lower: float = DEFAULT_LOWER_PERCENTILE,
    upper: float = DEFAULT_UPPER_PERCENTILE,
) -> Transform:
    """The array transform of an intensity ``rule`` (percentiles only concern ``"percentile"``)."""
    if check_intensity_rule(rule) == "raw":
        return RawScaleIntensity()
    return RobustScaleIntensity(lower=lower, upper=upper)


def intensity_transformd(
    keys: KeysCollection,
    rule: str = "percentile",
    lower: float = DEFAULT_LOWER_PERCENTILE,
    upper: float = DEFAULT_UPPER_PERCENTILE,
    allow_missing_keys: bool = False,
) -> MapTransform:
    """The dictionary transform of an intensity ``rule``."""
    if check_intensity_rule(rule) == "raw":
        return RawScaleIntensityd(keys, allow_missing_keys=allow_missing_keys)
    return RobustScaleIntensityd(
        keys, lower=lower, upper=upper, allow_missing_keys=allow_missing_keys
    )
