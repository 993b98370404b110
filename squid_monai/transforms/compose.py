"""The training and inference preprocessing: one definition for every consumer.

``inference_transforms`` is load -> robust scaling to [0, 1] -> resize. ``train_transforms``
is exactly that followed by the paper's random translation/scaling, so that a
``CacheDataset`` caches the deterministic part (each file is decoded once) and only the
augmentation runs per epoch. ``preprocess`` runs ``inference_transforms`` on one image (a
path, an array or an in-memory DICOM dataset) for scripts, the MLflow model and the deploy
operators: one definition, not a twin.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import Compose

from squid_monai.transforms.dicom import RADIOGRAPH_MODALITIES
from squid_monai.transforms.errors import find_radiograph_error
from squid_monai.transforms.intensity import (
    DEFAULT_LOWER_PERCENTILE,
    DEFAULT_UPPER_PERCENTILE,
    RobustScaleIntensityd,
)
from squid_monai.transforms.loading import LoadRadiographd
from squid_monai.transforms.spatial import (
    PAPER_SCALE_DELTA,
    PAPER_TRANSLATE_FRACTION,
    RandScaleTranslated,
    ResizeRadiographd,
)


def inference_transforms(
    image_size: int | Sequence[int],
    keys: KeysCollection = ("image",),
    lower_percentile: float = DEFAULT_LOWER_PERCENTILE,
    upper_percentile: float = DEFAULT_UPPER_PERCENTILE,
    apply_voi: bool = True,
    dicom_modalities: Sequence[str] | None = RADIOGRAPH_MODALITIES,
    allow_missing_keys: bool = False,
) -> Compose:
    """Deterministic preprocessing of dict items ``{"image": path or array, ...}``.

    Output: ``item["image"]`` a float32 ``MetaTensor`` (1, S, S) in [0, 1] with
    ``meta["filename_or_obj"]``; other keys (label, metadata) pass through unchanged.
    """
    return Compose(
        [
            LoadRadiographd(
                keys, apply_voi=apply_voi, dicom_modalities=dicom_modalities, allow_missing_keys=allow_missing_keys
            ),
            RobustScaleIntensityd(
                keys, lower=lower_percentile, upper=upper_percentile, allow_missing_keys=allow_missing_keys
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
) -> Compose:
    """``inference_transforms`` followed by the paper's random translation and scaling."""
    deterministic = inference_transforms(
        image_size,
        keys,
        lower_percentile=lower_percentile,
        upper_percentile=upper_percentile,
        apply_voi=apply_voi,
        dicom_modalities=dicom_modalities,
        allow_missing_keys=allow_missing_keys,
    )
    augment = RandScaleTranslated(
        keys,
        translate=translate,
        scale=scale,
        prob=augment_prob,
        padding_mode=padding_mode,
        allow_missing_keys=allow_missing_keys,
    )
    return Compose([*deterministic.transforms, augment])


def preprocess(
    image: str | os.PathLike | torch.Tensor,
    image_size: int | Sequence[int],
    lower_percentile: float = DEFAULT_LOWER_PERCENTILE,
    upper_percentile: float = DEFAULT_UPPER_PERCENTILE,
    apply_voi: bool = True,
    dicom_modalities: Sequence[str] | None = RADIOGRAPH_MODALITIES,
) -> torch.Tensor:
    """``inference_transforms`` of one image: a plain float32 tensor (1, S, S) in [0, 1].

    ``image`` is a file path, an in-memory ``pydicom.Dataset`` or an (H, W) / (1, H, W)
    array. Bad input raises ``RadiographError`` itself (MONAI's ``Compose`` wraps it in a
    RuntimeError, which is unwrapped here).
    """
    transforms = inference_transforms(image_size, lower_percentile=lower_percentile, upper_percentile=upper_percentile,
                                      apply_voi=apply_voi, dicom_modalities=dicom_modalities)
    try:
        out = transforms({"image": image})["image"]
    except RuntimeError as err:
        found = find_radiograph_error(err)
        if found is None:
            raise
        raise found from None
    return out.as_tensor() if isinstance(out, MetaTensor) else out
