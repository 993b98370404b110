"""Training-time augmentation that makes global cues useless (issue 38, the cheapest lever).

On ZhangLab, pneumonia images are smoother and lower in contrast than normal ones, so a score
can separate the classes by global sharpness or contrast alone, and it loses that edge on
images from another acquisition (``docs/SHIFT_TEST.md``). With ``global_augment="acquisition"``
every normal training image is, after the paper's translation and scaling, independently
given a random linear contrast, gamma, blur, edge enhancement and noise, so that the global
level of each stops telling a normal image from an abnormal one and the model has to learn
local content. ``"field_of_view"`` does the same for the framing: a random zoom (x 0.85 to
1.25, the shift test's wider field of view and 80 % crop) and shift (up to 10 % of the side),
so that where the chest sits in the image stops being a cue. ``"acquisition+field_of_view"``
applies both (framing first). ``"none"`` (the default) is the paper's setting.

Applied to the preprocessed image in [0, 1] at the model's size; MONAI ``Rand*`` transforms,
the filters between a reflected border (MONAI's Gaussian filters pad with zeros, and a dark
border present only in training images would itself become a cue) and clipped to [0, 1].
"""

from __future__ import annotations

from monai.config import KeysCollection
from monai.transforms import (
    BorderPadd,
    CenterSpatialCropd,
    Compose,
    RandAdjustContrastd,
    RandAffined,
    RandGaussianNoised,
    RandGaussianSharpend,
    RandGaussianSmoothd,
    RandScaleIntensityFixedMeand,
    RandZoomd,
    ScaleIntensityRanged,
)

__all__ = [
    "GLOBAL_AUGMENTS",
    "check_global_augment",
    "global_augment_transforms",
    "global_augmentd",
]

#: The values of the ``global_augment`` switch: one augmentation, or two joined by "+".
GLOBAL_AUGMENTS = ("none", "acquisition", "field_of_view", "acquisition+field_of_view")
#: Reflected border around the filters, in model pixels (4 sigma of the widest kernel, 1.5).
_BORDER = 6


def check_global_augment(value: str) -> str:
    if value not in GLOBAL_AUGMENTS:
        raise ValueError(f"global_augment must be one of {GLOBAL_AUGMENTS}, got {value!r}")
    return value


def global_augment_transforms(
    keys: KeysCollection,
    image_size: int,
    value: str = "acquisition",
    allow_missing_keys: bool = False,
) -> list:
    """The transforms of ``global_augment=value`` (empty for ``"none"``): each with its own
    probability, strengths of the order of the shift test's (framing: zoom x 0.85-1.25, shift
    up to 10 %; acquisition: contrast x 0.7-1.3, gamma 0.67-1.5, blur sigma up to 1 model
    pixel, edge enhancement up to alpha 2, noise std up to 0.03)."""
    parts = check_global_augment(value).split("+")
    kw = {"keys": keys, "allow_missing_keys": allow_missing_keys}
    transforms = []
    if "field_of_view" in parts:
        transforms += _field_of_view(image_size, kw)
    if "acquisition" in parts:
        transforms += _acquisition(image_size, kw)
    return transforms


def _field_of_view(image_size: int, kw: dict) -> list:
    """Isotropic zoom x 0.85-1.25 (black border when zooming out, as a wider field of view)
    and a shift of up to 10 % of the side, each with probability 0.5."""
    side = image_size if isinstance(image_size, int) else max(image_size)
    return [
        RandZoomd(
            prob=0.5, min_zoom=0.85, max_zoom=1.25, keep_size=True, padding_mode="constant", **kw
        ),
        RandAffined(prob=0.5, translate_range=(0.1 * side, 0.1 * side), padding_mode="zeros", **kw),
    ]


def _acquisition(image_size: int, kw: dict) -> list:
    """Contrast, gamma, blur, edge enhancement and noise, the filters between a reflected
    border that is cropped away again."""
    return [
        RandScaleIntensityFixedMeand(prob=0.5, factors=0.3, **kw),
        RandAdjustContrastd(prob=0.5, gamma=(0.67, 1.5), **kw),
        BorderPadd(spatial_border=_BORDER, mode="reflect", **kw),
        RandGaussianSmoothd(prob=0.25, sigma_x=(0.3, 1.0), sigma_y=(0.3, 1.0), **kw),
        RandGaussianSharpend(
            prob=0.25,
            sigma1_x=(0.3, 0.6),
            sigma1_y=(0.3, 0.6),
            sigma2_x=(0.8, 1.5),
            sigma2_y=(0.8, 1.5),
            alpha=(0.5, 2.0),
            **kw,
        ),
        CenterSpatialCropd(roi_size=image_size, **kw),
        RandGaussianNoised(prob=0.25, std=0.03, **kw),
        ScaleIntensityRanged(a_min=0.0, a_max=1.0, b_min=0.0, b_max=1.0, clip=True, **kw),
    ]


def global_augmentd(
    keys: KeysCollection, image_size: int, value: str = "none", allow_missing_keys: bool = False
) -> Compose:
    """:func:`global_augment_transforms` as one ``Compose`` (empty for ``"none"``): the last
    block of the bundle's ``train#preprocessing``, where a config cannot splice a list."""
    return Compose(
        global_augment_transforms(keys, image_size, value, allow_missing_keys=allow_missing_keys)
    )
