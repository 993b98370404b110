"""Reading any supported radiograph file into one 2D float32 array, row 0 at the top.

Formats (chosen by file name; a file without a known extension is read as DICOM when
it carries the ``DICM`` marker; file contents in memory, an
:class:`~squid_monai.transforms.encoded.EncodedImage`, by their signature: PNG, JPEG or
DICOM):

- PNG / JPEG through Pillow: 8- or 16-bit, greyscale, palette or RGB(A). Colour images
  become grey by ITU-R 601 luma (R = G = B images keep their values exactly). EXIF
  orientation is applied, so row 0 is the top of the picture as a viewer shows it.
- DICOM through pydicom: see :mod:`squid_monai.transforms.dicom` for the display rules.
- NIfTI (``.nii``, ``.nii.gz``) through nibabel: 2D, or 3D/4D with only two non-singleton
  axes. NIfTI voxel axis 0 is taken as the image's x (columns, left to right) and axis 1
  as its y (rows, top to bottom): the convention MONAI and ITK use when they write a 2D
  image, so a PNG saved as NIfTI by MONAI comes back upright. The affine is not used to
  reorient (2D radiographs stored as NIfTI seldom carry a meaningful one).

Every image is then checked: at least :data:`MIN_SIDE` pixels a side, finite, not
constant. Before decoding, a PNG, JPEG or DICOM image whose header claims more than
``max_pixels`` pixels is refused (a decompression bomb).
Failures raise :class:`RadiographError` naming the file and the problem.

``return_value_range=True`` also gives the *stored value range* ``(low, high)`` of the
file's pixel type, which the ``"raw"`` intensity rule divides by
(:mod:`squid_monai.transforms.intensity`): PNG / JPEG ``[0, 255]`` for 8-bit modes,
``[0, 65535]`` for 16-bit greyscale, ``[0, 1]`` for 1-bit; DICOM see
:func:`squid_monai.transforms.dicom.stored_value_range`; NIfTI the range of its integer
data type through its scaling slope / intercept (``None`` for floating-point data, which
has no stored bit depth).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from squid_monai.transforms.dicom import RADIOGRAPH_MODALITIES, read_dicom
from squid_monai.transforms.encoded import (
    DEFAULT_MAX_PIXELS,
    EncodedImage,
    check_pixels,
    encoded_format,
    has_dicom_marker,
)
from squid_monai.transforms.errors import RadiographError

#: File name endings and the reader each one selects.
SUPPORTED_EXTENSIONS = {
    ".png": "pil",
    ".jpg": "pil",
    ".jpeg": "pil",
    ".dcm": "dicom",
    ".dicom": "dicom",
    ".nii": "nifti",
    ".nii.gz": "nifti",
}
#: The fewest pixels per side an image may have: fewer carry no picture (a single pixel is
#: not "constant", it is too small).
MIN_SIDE = 2
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


def image_format(path: str | os.PathLike) -> str:
    """Return ``"pil"``, ``"dicom"`` or ``"nifti"`` for ``path``; raise for anything else."""
    name = Path(path).name.lower()
    for ext in sorted(SUPPORTED_EXTENSIONS, key=len, reverse=True):
        if name.endswith(ext):
            return SUPPORTED_EXTENSIONS[ext]
    if _has_dicom_marker(path):
        return "dicom"
    raise RadiographError(
        path,
        f"unsupported file type (supported: {', '.join(SUPPORTED_EXTENSIONS)}, or DICOM without extension)",
    )


def read_radiograph(
    source: str | os.PathLike | EncodedImage,
    apply_voi: bool = True,
    reorient: bool = True,
    dicom_modalities: tuple[str, ...] | None = RADIOGRAPH_MODALITIES,
    return_value_range: bool = False,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
) -> np.ndarray | tuple[np.ndarray, tuple[float, float] | None]:
    """Read ``source`` (a path, or file contents in memory) into a validated (rows, cols)
    float32 array in the file's own units.

    ``apply_voi``, ``reorient`` and ``dicom_modalities`` only concern DICOM files
    (see :func:`squid_monai.transforms.dicom.read_dicom`). ``return_value_range``: return
    ``(image, (low, high) or None)``, the stored value range (module docstring).
    ``max_pixels``: larger images are refused before decoding (``None``: no limit).
    """
    if isinstance(source, EncodedImage):
        name, kind = source.name, encoded_format(source)
    else:
        name = source = os.fspath(source)
        if not os.path.exists(name):
            raise RadiographError(name, "file not found")
        if os.path.isdir(name):
            raise RadiographError(name, "is a directory, not an image file")
        if os.path.getsize(name) == 0:
            raise RadiographError(name, "empty file (0 bytes)")
        kind = image_format(name)
    try:
        if kind == "pil":
            image, value_range = _read_pil(source, max_pixels)
        elif kind == "nifti":
            image, value_range = _read_nifti(source)  # local files only: no pixel limit
        else:
            image, value_range = read_dicom(
                source,
                apply_voi=apply_voi,
                reorient=reorient,
                modalities=dicom_modalities,
                return_value_range=True,
                max_pixels=max_pixels,
            )
    except RadiographError:
        raise
    except Exception as err:  # noqa: BLE001
        if not isinstance(source, EncodedImage):
            raise
        # bytes from a client: whatever a decoder trips over is a property of the data, not a bug here
        raise RadiographError(
            name, f"cannot decode the image ({type(err).__name__}: {err})"
        ) from err
    image = validate_image(image, name)
    return (image, value_range) if return_value_range else image


def array_value_range(array: np.ndarray) -> tuple[float, float]:
    """The stored value range of an in-memory image by its data type: the full range of an
    integer type (``uint8``: ``[0, 255]``), ``[0, 1]`` for bool and floating point (an
    image already in [0, 1], such as DigitAnatomy)."""
    dtype = np.asarray(array).dtype
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return float(info.min), float(info.max)
    return 0.0, 1.0


def validate_image(image: np.ndarray, path: str | os.PathLike | None = None) -> np.ndarray:
    """Check that ``image`` is a usable 2D picture; return it as contiguous float32."""
    image = np.asarray(image)
    if image.ndim != 2:
        raise RadiographError(path, f"expected a 2D image, got shape {tuple(image.shape)}")
    if image.size == 0:
        raise RadiographError(path, f"empty image (shape {tuple(image.shape)})")
    if min(image.shape) < MIN_SIDE:
        rows, cols = image.shape
        raise RadiographError(
            path,
            f"image of {rows} x {cols} pixels is too small to be a "
            f"radiograph (at least {MIN_SIDE} x {MIN_SIDE})",
        )
    image = np.ascontiguousarray(image, dtype=np.float32)
    finite = np.isfinite(image)
    if not finite.all():
        raise RadiographError(
            path, f"{int(image.size - finite.sum())} pixel values are NaN or infinite"
        )
    low, high = float(image.min()), float(image.max())
    if high <= low:
        raise RadiographError(path, f"constant image (every pixel is {low:g}): nothing to see")
    return image


def _has_dicom_marker(path) -> bool:
    try:
        with open(path, "rb") as f:
            return has_dicom_marker(f.read(132))
    except OSError:
        return False


def _read_pil(
    source: str | EncodedImage, max_pixels: int | None
) -> tuple[np.ndarray, tuple[float, float] | None]:
    from PIL import Image, ImageOps, UnidentifiedImageError

    name, fp = (
        (source.name, source.open()) if isinstance(source, EncodedImage) else (source, source)
    )
    try:
        with Image.open(fp) as img:  # reads the header only
            frames = getattr(img, "n_frames", 1)
            if frames > 1:
                raise RadiographError(
                    name, f"multi-frame image ({frames} frames): only single 2D radiographs"
                )
            check_pixels(name, img.height, img.width, max_pixels)
            img.load()  # decode now: truncated files fail here, not later
            img = ImageOps.exif_transpose(img)
            return _pil_to_grey(img), _pil_value_range(img.mode)
    except RadiographError:
        raise
    except Image.DecompressionBombError as err:
        raise RadiographError(name, f"refused before decoding: {err}") from err
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as err:
        # Pillow names an in-memory file by its object's repr: name it as the caller does
        detail = str(err).replace(repr(fp), repr(name))
        raise RadiographError(
            name, f"cannot decode image ({type(err).__name__}: {detail})"
        ) from err


def _pil_to_grey(img) -> np.ndarray:
    """One grey channel from any Pillow mode, keeping 16-bit precision where present."""
    mode = img.mode
    if mode in ("1", "L", "I", "F") or mode.startswith("I;16"):
        return np.asarray(img, dtype=np.float32)
    if mode == "LA":
        return np.asarray(img.getchannel("L"), dtype=np.float32)
    rgb = np.asarray(img.convert("RGB"), dtype=np.float32)
    if np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 0], rgb[..., 2]):
        return np.ascontiguousarray(
            rgb[..., 0]
        )  # R = G = B: exactly (the float32 luma is off by ~1e-5)
    return rgb @ _LUMA


def _pil_value_range(mode: str) -> tuple[float, float] | None:
    """Stored range of a Pillow mode: 16-bit greyscale (``I;16*``, and ``I``, which is how
    16-bit PNGs may open), 1-bit, floating point (none), else 8 bits per channel."""
    if mode.startswith("I"):
        return 0.0, 65535.0
    if mode == "1":
        return 0.0, 1.0
    if mode == "F":
        return None
    return 0.0, 255.0


def _read_nifti(path: str) -> tuple[np.ndarray, tuple[float, float] | None]:
    import nibabel as nib

    try:
        nifti = nib.load(path)
        data = np.asarray(nifti.get_fdata(dtype=np.float32))
        value_range = _nifti_value_range(nifti)
    except Exception as err:  # nibabel raises many types for damaged files
        raise RadiographError(path, f"cannot read NIfTI ({type(err).__name__}: {err})") from err
    axes = [n for n in data.shape if n != 1]
    if len(axes) != 2:
        raise RadiographError(
            path,
            f"NIfTI image of shape {tuple(data.shape)} is not 2D (a 3D volume or several channels): "
            "only 2D radiographs are supported",
        )
    return data.reshape(axes).T, value_range  # (x, y) -> (rows, cols)


def _nifti_value_range(nifti) -> tuple[float, float] | None:
    dtype = nifti.get_data_dtype()
    if not np.issubdtype(dtype, np.integer):
        return None
    low, high = array_value_range(np.empty(0, dtype))
    slope, inter = (getattr(nifti.dataobj, name, None) for name in ("slope", "inter"))
    slope = 1.0 if slope is None or not np.isfinite(slope) or slope == 0 else float(slope)
    inter = 0.0 if inter is None or not np.isfinite(inter) else float(inter)
    low, high = sorted((low * slope + inter, high * slope + inter))
    return low, high
