"""MONAI transforms that turn a file path (or an in-memory image) into a (1, H, W) tensor."""

from __future__ import annotations

import os
from collections.abc import Hashable, Mapping, Sequence

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform, Transform

from squid_monai.transforms.dicom import (
    RADIOGRAPH_MODALITIES,
    dataset_name,
    is_dicom_dataset,
    read_dicom,
)
from squid_monai.transforms.encoded import DEFAULT_MAX_PIXELS, EncodedImage
from squid_monai.transforms.errors import RadiographError
from squid_monai.transforms.reading import array_value_range, read_radiograph, validate_image

#: ``meta["filename_or_obj"]`` of images that did not come from a file.
ARRAY_SOURCE = "<array>"


class LoadRadiograph(Transform):
    """Load a radiograph as a channel-first float32 ``MetaTensor`` of shape (1, H, W).

    The input is a path (PNG, JPEG, DICOM, NIfTI; see :mod:`squid_monai.transforms.reading`),
    a file's contents in memory (:class:`~squid_monai.transforms.encoded.EncodedImage`: PNG,
    JPEG, DICOM), an in-memory ``pydicom.Dataset`` (the same DICOM rules, no temporary file), or an image
    already in memory (numpy array or tensor of shape (H, W) or (1, H, W)), so that
    generated data such as DigitAnatomy flows through the same pipeline as files.
    Values stay in the file's own units; scaling to [0, 1] is a separate step.
    ``meta["filename_or_obj"]`` records the source file (MONAI's convention), and
    ``meta["spatial_shape"]`` the original (H, W), and ``meta["value_range"]`` the stored
    value range ``[low, high]`` of the pixel type (for the ``"raw"`` intensity rule; see
    :func:`squid_monai.transforms.reading.read_radiograph`; arrays: by their data type, see
    :func:`~squid_monai.transforms.reading.array_value_range`), absent when unknown.

    Args:
        apply_voi: DICOM only: apply the stored VOI LUT / window.
        reorient: DICOM only: honour ``PatientOrientation``.
        dicom_modalities: DICOM only: accepted modalities (``None``: any).
        max_pixels: files (PNG, JPEG, DICOM) claiming more pixels are refused before
            decoding (``None``: no limit).
    """

    def __init__(
        self,
        apply_voi: bool = True,
        reorient: bool = True,
        dicom_modalities: Sequence[str] | None = RADIOGRAPH_MODALITIES,
        max_pixels: int | None = DEFAULT_MAX_PIXELS,
    ) -> None:
        self.apply_voi = apply_voi
        self.reorient = reorient
        self.dicom_modalities = tuple(dicom_modalities) if dicom_modalities is not None else None
        self.max_pixels = max_pixels

    def __call__(self, source) -> MetaTensor:
        if isinstance(source, (str, os.PathLike, EncodedImage)):
            name = source.name if isinstance(source, EncodedImage) else os.fspath(source)
            image, value_range = read_radiograph(
                source,
                apply_voi=self.apply_voi,
                reorient=self.reorient,
                dicom_modalities=self.dicom_modalities,
                return_value_range=True,
                max_pixels=self.max_pixels,
            )
        elif is_dicom_dataset(source):
            name = dataset_name(source)
            image, value_range = read_dicom(
                source,
                apply_voi=self.apply_voi,
                reorient=self.reorient,
                modalities=self.dicom_modalities,
                return_value_range=True,
                max_pixels=self.max_pixels,
            )
            image = validate_image(image, name)
        elif isinstance(source, (np.ndarray, torch.Tensor)):
            meta = source.meta if isinstance(source, MetaTensor) else {}
            name = str(meta.get("filename_or_obj", ARRAY_SOURCE))
            array = _array_to_2d(source, name)
            value_range = meta.get("value_range", array_value_range(array))
            image = validate_image(array, name)
        else:
            raise RadiographError(
                None, f"cannot load an object of type {type(source).__name__} as an image"
            )
        meta = {"filename_or_obj": name, "spatial_shape": np.asarray(image.shape)}
        if value_range is not None:
            meta["value_range"] = np.asarray(value_range, dtype=np.float64).reshape(2)
        return MetaTensor(torch.from_numpy(image)[None], meta=meta)


class LoadRadiographd(MapTransform):
    """Dictionary version of :class:`LoadRadiograph`: replaces each ``keys`` entry by its tensor."""

    def __init__(
        self,
        keys: KeysCollection,
        apply_voi: bool = True,
        reorient: bool = True,
        dicom_modalities: Sequence[str] | None = RADIOGRAPH_MODALITIES,
        allow_missing_keys: bool = False,
        max_pixels: int | None = DEFAULT_MAX_PIXELS,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.loader = LoadRadiograph(
            apply_voi=apply_voi,
            reorient=reorient,
            dicom_modalities=dicom_modalities,
            max_pixels=max_pixels,
        )

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.loader(d[key])
        return d


def _array_to_2d(source, name: str) -> np.ndarray:
    array = (
        source.detach().cpu().numpy() if isinstance(source, torch.Tensor) else np.asarray(source)
    )
    if array.ndim == 3 and array.shape[0] == 1:
        array = array[0]
    if array.ndim != 2:
        raise RadiographError(
            name, f"in-memory image must be (H, W) or (1, H, W), got shape {tuple(array.shape)}"
        )
    return array
