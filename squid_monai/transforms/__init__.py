"""Radiograph preprocessing as MONAI transforms: reading, intensity, spatial, and the
train / inference pipelines every part of the project shares."""

from squid_monai.transforms.compose import inference_transforms, preprocess, train_transforms
from squid_monai.transforms.dicom import RADIOGRAPH_MODALITIES, read_dicom
from squid_monai.transforms.encoded import DEFAULT_MAX_PIXELS, ENCODED_FORMATS, EncodedImage
from squid_monai.transforms.errors import RadiographError, find_radiograph_error
from squid_monai.transforms.intensity import (
    INTENSITY_RULES,
    RawScaleIntensity,
    RawScaleIntensityd,
    RobustScaleIntensity,
    RobustScaleIntensityd,
)
from squid_monai.transforms.loading import LoadRadiograph, LoadRadiographd
from squid_monai.transforms.reading import (
    SUPPORTED_EXTENSIONS,
    image_format,
    read_radiograph,
    validate_image,
)
from squid_monai.transforms.spatial import (
    AUGMENT_RESAMPLINGS,
    RandScaleTranslate,
    RandScaleTranslated,
    ResizeRadiograph,
    ResizeRadiographd,
)

__all__ = [
    "AUGMENT_RESAMPLINGS",
    "DEFAULT_MAX_PIXELS",
    "ENCODED_FORMATS",
    "EncodedImage",
    "INTENSITY_RULES",
    "RADIOGRAPH_MODALITIES",
    "SUPPORTED_EXTENSIONS",
    "LoadRadiograph",
    "LoadRadiographd",
    "RadiographError",
    "RandScaleTranslate",
    "RandScaleTranslated",
    "RawScaleIntensity",
    "RawScaleIntensityd",
    "ResizeRadiograph",
    "ResizeRadiographd",
    "RobustScaleIntensity",
    "RobustScaleIntensityd",
    "find_radiograph_error",
    "image_format",
    "inference_transforms",
    "preprocess",
    "read_dicom",
    "read_radiograph",
    "train_transforms",
    "validate_image",
]
