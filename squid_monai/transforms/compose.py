"""The training and inference preprocessing: one definition for every consumer.

``inference_transforms`` is load -> intensity scaling to [0, 1] -> resize. ``train_transforms``
is exactly that followed by the paper's random translation/scaling, so that a
``CacheDataset`` caches the deterministic part (each file is decoded once) and only the
augmentation runs per epoch. ``preprocess`` runs ``inference_transforms`` on one image (a
path, a file's contents, an array or an in-memory DICOM dataset) for scripts, the MLflow model and the deploy
operators: one definition, not a twin.

Switches (SQUID.md section 7; the defaults are the first build's behaviour):

- ``intensity``: ``"percentile"`` (0.5-99.5 percentile stretch) or ``"raw"`` (value / full
  range of the stored bit depth: pixel / 255 on 8-bit images, the authors' rule); see
  :mod:`squid_monai.transforms.intensity`. It must be the same for training, validation
  and inference: every pipeline here takes it, and the bundle passes one config key to all.
- ``augment_resampling`` (training only): ``"bilinear"`` or ``"nearest"`` (the authors'
  torchvision resampling, whole-pixel shifts); see :mod:`squid_monai.transforms.spatial`.
- ``global_augment`` (training only): ``"none"`` (the paper), ``"acquisition"`` (random
  contrast, gamma, blur, sharpening and noise after the spatial augmentation, so that global
  cues stop telling normal from abnormal), ``"field_of_view"`` (random zoom and shift) or
  both, ``"acquisition+field_of_view"``; see :mod:`squid_monai.transforms.augment`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import Compose

from squid_monai.transforms.augment import check_global_augment, global_augment_transforms
from squid_monai.transforms.dicom import RADIOGRAPH_MODALITIES
from squid_monai.transforms.encoded import DEFAULT_MAX_PIXELS
from squid_monai.transforms.errors import find_radiograph_error
from squid_monai.transforms.intensity import (
    DEFAULT_LOWER_PERCENTILE,
    DEFAULT_UPPER_PERCENTILE,
    check_intensity_rule,
    intensity_transformd,
)
from squid_monai.transforms.loading import LoadRadiographd
from squid_monai.transforms.spatial import (
    PAPER_SCALE_DELTA,
    PAPER_TRANSLATE_FRACTION,
    RandScaleTranslated,
    ResizeRadiographd,
    check_resampling,
)


def check_switches(**switches: str) -> dict:
    """The given preprocessing switches (``intensity``, ``augment_resampling``,
    ``global_augment``), checked: a ``ValueError`` names an unknown key or value. For the
    configs' ``**options``."""
    checks = {
        "intensity": check_intensity_rule,
        "augment_resampling": check_resampling,
        "global_augment": check_global_augment,
    }
    unknown = set(switches) - set(checks)
    if unknown:
        raise ValueError(
            f"unknown preprocessing switch(es) {sorted(unknown)}; known: {sorted(checks)}"
        )
    return {key: checks[key](value) for key, value in switches.items()}


def inference_transforms(
    image_size: int | Sequence[int],
    keys: KeysCollection = ("image",),
    lower_percentile: float = DEFAULT_LOWER_PERCENTILE,
    upper_percentile: float = DEFAULT_UPPER_PERCENTILE,
    apply_voi: bool = True,
    dicom_modalities: Sequence[str] | None = RADIOGRAPH_MODALITIES,
    allow_missing_keys: bool = False,
    intensity: str = "percentile",
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
) -> Compose:
    """Deterministic preprocessing of dict items ``{"image": path or array, ...}``;
    ``intensity``: ``"percentile"`` or ``"raw"`` (module docstring); ``max_pixels``: larger
    files are refused before decoding.

    Output: ``item["image"]`` a float32 ``MetaTensor`` (1, S, S) in [0, 1] with
    ``meta["filename_or_obj"]``; other keys (label, metadata) pass through unchanged.
    """
    return Compose(
        [
            LoadRadiographd(
                keys,
                apply_voi=apply_voi,
                dicom_modalities=dicom_modalities,
                allow_missing_keys=allow_missing_keys,
                max_pixels=max_pixels,
            ),
            intensity_transformd(
                keys,
                intensity,
                lower=lower_percentile,
                upper=upper_percentile,
                allow_missing_keys=allow_missing_keys,
            ),
            ResizeRadiographd(keys, image_size=image_size, allow_missing_keys=allow_missing_keys),
        ]
    )


def train_transforms(
    image_size: int | Sequence[int],
    keys: KeysCollection = ("image",),
    translate: float = PAPER_TRANSLATE_FRACTION,
    scale: float = PAPER_SCALE_DELTA,
    augment_prob: float = 1.0,
    padding_mode: str = "zeros",
    lower_percentile: float = DEFAULT_LOWER_PERCENTILE,
    upper_percentile: float = DEFAULT_UPPER_PERCENTILE,
    apply_voi: bool = True,
    dicom_modalities: Sequence[str] | None = RADIOGRAPH_MODALITIES,
    allow_missing_keys: bool = False,
    intensity: str = "percentile",
    augment_resampling: str = "bilinear",
    global_augment: str = "none",
) -> Compose:
    """``inference_transforms`` followed by the paper's random translation and scaling
    (``augment_resampling``: ``"bilinear"`` or ``"nearest"``) and the ``global_augment``
    (module docstring)."""
    deterministic = inference_transforms(
        image_size,
        keys,
        lower_percentile=lower_percentile,
        upper_percentile=upper_percentile,
        apply_voi=apply_voi,
        dicom_modalities=dicom_modalities,
        allow_missing_keys=allow_missing_keys,
        intensity=intensity,
    )
    augment = RandScaleTranslated(
        keys,
        translate=translate,
        scale=scale,
        prob=augment_prob,
        padding_mode=padding_mode,
        mode=augment_resampling,
        allow_missing_keys=allow_missing_keys,
    )
    size = image_size if isinstance(image_size, int) else tuple(image_size)
    extra = global_augment_transforms(
        keys, size, global_augment, allow_missing_keys=allow_missing_keys
    )
    return Compose([*deterministic.transforms, augment, *extra])


def preprocess(
    image: str | os.PathLike | torch.Tensor,
    image_size: int | Sequence[int],
    lower_percentile: float = DEFAULT_LOWER_PERCENTILE,
    upper_percentile: float = DEFAULT_UPPER_PERCENTILE,
    apply_voi: bool = True,
    dicom_modalities: Sequence[str] | None = RADIOGRAPH_MODALITIES,
    intensity: str = "percentile",
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
) -> torch.Tensor:
    """``inference_transforms`` of one image: a plain float32 tensor (1, S, S) in [0, 1]
    (``intensity``: ``"percentile"`` or ``"raw"``, as the model was trained).

    ``image`` is a file path, a file's contents (``EncodedImage``), an in-memory
    ``pydicom.Dataset`` or an (H, W) / (1, H, W) array. Bad input raises ``RadiographError``
    itself (MONAI's ``Compose`` wraps it in a RuntimeError, which is unwrapped here).
    """
    transforms = inference_transforms(
        image_size,
        lower_percentile=lower_percentile,
        upper_percentile=upper_percentile,
        apply_voi=apply_voi,
        dicom_modalities=dicom_modalities,
        intensity=intensity,
        max_pixels=max_pixels,
    )
    try:
        out = transforms({"image": image})["image"]
    except RuntimeError as err:
        found = find_radiograph_error(err)
        if found is None:
            raise
        raise found from None
    return out.as_tensor() if isinstance(out, MetaTensor) else out
