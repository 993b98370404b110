"""DICOM radiograph decoding: the DICOM display rules in one place.

The pixel values a DICOM file stores are not the picture a radiologist sees. This module
applies, in the order the standard's display pipeline does:

1. decoding of the pixel data (uncompressed, JPEG, JPEG-LS, JPEG 2000, RLE: the
   ``pylibjpeg`` plugins that pydicom finds by itself);
2. the Modality LUT (``RescaleSlope`` / ``RescaleIntercept`` or a Modality LUT Sequence);
3. the VOI LUT (a VOI LUT Sequence, else ``WindowCenter`` / ``WindowWidth``) when present,
   so the grey levels are those the acquiring site chose for display;
4. inversion of ``MONOCHROME1`` images, so that bone is bright as in ``MONOCHROME2``;
5. orientation: pixel row 0 is the top of the displayed image, as in PNG. When
   ``PatientOrientation`` says the columns run towards the head (``H``) the image is
   flipped upside down, and when the rows run towards the patient's right (``R``) it is
   mirrored, so that every chest ends up in the standard radiographic display
   (patient's right on the viewer's left, head at the top).

The *stored value range* of the result (:func:`stored_value_range`) is what the ``"raw"``
intensity rule divides by (:mod:`squid_monai.transforms.intensity`): the full range of
the stored bit depth, ``[0, 2**BitsStored - 1]`` for unsigned pixels (signed:
``[-2**(BitsStored-1), 2**(BitsStored-1) - 1]``), mapped through the rescale slope and
intercept (a Modality LUT Sequence: ``[0, 2**bits - 1]`` of its descriptor), the same
output range pydicom's windowing maps to, so it holds with or without the VOI window (a
VOI LUT Sequence: ``[0, 2**bits - 1]`` of its descriptor). The MONOCHROME1 inversion
(step 4) keeps values inside that range.

Only projection radiographs are accepted: modalities CR, DX, DR and RG, plus Secondary
Capture files (modality OT or absent, or a Secondary Capture SOP class) that carry a
digitised radiograph. Multi-frame objects are refused, and so are images whose ``Rows`` x
``Columns`` exceed a pixel limit, before their pixel data are decoded. File contents in
memory (:class:`~squid_monai.transforms.encoded.EncodedImage`) in the Deflated transfer
syntax are refused too: pydicom inflates the whole dataset at once, without a bound.
"""

from __future__ import annotations

import os

import numpy as np

from squid_monai.transforms.encoded import DEFAULT_MAX_PIXELS, EncodedImage, check_pixels
from squid_monai.transforms.errors import RadiographError

#: Modalities that are projection radiographs.
RADIOGRAPH_MODALITIES = ("CR", "DX", "DR", "RG")
#: Modalities a Secondary Capture of a radiograph may carry.
SECONDARY_CAPTURE_MODALITIES = ("OT", "")
_SECONDARY_CAPTURE_SOP_PREFIX = "1.2.840.10008.5.1.4.1.1.7"


def is_dicom_dataset(source) -> bool:
    """Whether ``source`` is an in-memory ``pydicom.Dataset`` (e.g. what MONAI Deploy's DICOM
    loader hands over)."""
    try:
        from pydicom import Dataset
    except ImportError:  # pragma: no cover - pydicom is a dependency
        return False
    return isinstance(source, Dataset)


def dataset_name(ds) -> str:
    """How messages name an in-memory dataset: its file when it came from one."""
    filename = getattr(ds, "filename", None)
    return (
        os.fspath(filename)
        if isinstance(filename, (str, os.PathLike)) and filename
        else "<DICOM dataset>"
    )


def read_dicom(
    path,
    apply_voi: bool = True,
    reorient: bool = True,
    modalities: tuple[str, ...] | None = RADIOGRAPH_MODALITIES,
    return_value_range: bool = False,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
) -> np.ndarray | tuple[np.ndarray, tuple[float, float]]:
    """Decode a single-frame DICOM radiograph to a (rows, cols) float32 array, bone bright.

    Args:
        path: the DICOM file, an in-memory ``pydicom.Dataset`` (decoded as it is: no
            temporary file) or a file's contents (:class:`EncodedImage`).
        apply_voi: apply the VOI LUT or window stored in the file (step 3 above).
        reorient: honour ``PatientOrientation`` (step 5 above).
        modalities: accepted modalities (Secondary Capture always accepted);
            ``None`` accepts any single-frame 2D image.
        return_value_range: also return the stored value range ``(low, high)`` of the
            result (module docstring).
        max_pixels: ``Rows`` x ``Columns`` above it are refused before decoding (``None``: no limit).
    """
    import pydicom
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    if is_dicom_dataset(path):
        ds, path = path, dataset_name(path)
    else:
        source = path
        if isinstance(source, EncodedImage):
            path = source.name
            if _transfer_syntax(source) == pydicom.uid.DeflatedExplicitVRLittleEndian:
                raise RadiographError(
                    path,
                    "deflated DICOM (transfer syntax Deflated Explicit VR Little Endian) "
                    "is not accepted from memory: it inflates without a bound",
                )
            source = source.open()
        try:
            ds = pydicom.dcmread(source, force=True)
        except Exception as err:  # pydicom raises many types for damaged files
            raise RadiographError(
                path, f"not a readable DICOM file ({type(err).__name__}: {err})"
            ) from err
        if len(ds) == 0 and _has_image_header(source):
            # pydicom returns an empty dataset when a file ends inside encapsulated pixel data
            raise RadiographError(
                path,
                f"truncated pixel data: the file ends inside its "
                f"{_syntax_name(ds)} pixel data (cut short in transfer or "
                "storage; the header is intact)",
            )
    if "PixelData" not in ds:
        raise RadiographError(path, "DICOM file has no pixel data (not an image, or not DICOM)")
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if frames > 1:
        raise RadiographError(
            path, f"multi-frame DICOM ({frames} frames): only single 2D radiographs are supported"
        )
    _check_is_radiograph(path, ds, modalities)
    check_pixels(path, int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0), max_pixels)

    try:
        pixels = ds.pixel_array
    except Exception as err:
        raise RadiographError(path, _pixel_data_problem(ds, err)) from err

    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    if samples == 3 and pixels.ndim == 3:
        # colour Secondary Capture of a radiograph: pydicom returns RGB; take the luma
        pixels = pixels[..., :3].astype(np.float32) @ np.array(
            [0.299, 0.587, 0.114], dtype=np.float32
        )
    elif pixels.ndim != 2:
        raise RadiographError(
            path, f"pixel data has shape {tuple(pixels.shape)}: not a single 2D image"
        )

    image = apply_modality_lut(pixels, ds)
    has_voi = "VOILUTSequence" in ds or ("WindowCenter" in ds and "WindowWidth" in ds)
    voi_lut = apply_voi and has_voi and samples == 1 and "VOILUTSequence" in ds
    if apply_voi and has_voi and samples == 1:
        try:
            image = apply_voi_lut(image, ds, index=0, prefer_lut=True)
        except Exception as err:
            raise RadiographError(
                path, f"invalid VOI LUT / window ({type(err).__name__}: {err})"
            ) from err
    image = np.asarray(image, dtype=np.float32)

    if str(ds.get("PhotometricInterpretation", "")).strip().upper() == "MONOCHROME1":
        finite = image[np.isfinite(image)]
        if finite.size:
            image = np.float32(finite.max() + finite.min()) - image
    if reorient:
        image = _to_display_orientation(image, ds)
    image = np.ascontiguousarray(image)
    if return_value_range:
        return image, stored_value_range(ds, voi_lut=voi_lut)
    return image


def stored_value_range(ds, voi_lut: bool = False) -> tuple[float, float]:
    """``(low, high)``: the full range of the stored bit depth of ``ds`` after the Modality
    LUT (rescale slope / intercept), or of the VOI LUT Sequence's output when ``voi_lut``
    (module docstring)."""
    if voi_lut:
        return 0.0, float(2 ** _lut_bits(ds.VOILUTSequence[0]) - 1)
    if "ModalityLUTSequence" in ds:
        return 0.0, float(2 ** _lut_bits(ds.ModalityLUTSequence[0]) - 1)
    bits = int(ds.get("BitsStored", 0) or ds.get("BitsAllocated", 8) or 8)
    if int(ds.get("PixelRepresentation", 0) or 0) == 0:
        low, high = 0.0, float(2**bits - 1)
    else:
        low, high = float(-(2 ** (bits - 1))), float(2 ** (bits - 1) - 1)
    if ds.get("RescaleSlope", None) is not None:
        slope, intercept = float(ds.RescaleSlope), float(ds.get("RescaleIntercept", 0) or 0)
        low, high = sorted((low * slope + intercept, high * slope + intercept))
    return low, high


def _syntax_name(ds) -> str:
    syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    return str(getattr(syntax, "name", syntax) or "unknown transfer syntax")


def _has_image_header(source) -> bool:
    """Whether the file (a path or an open file's contents) has an image header (``Rows``)
    when read up to its pixel data: what a file cut inside its pixel data still has."""
    import pydicom

    try:
        if hasattr(source, "seek"):
            source.seek(0)
        return "Rows" in pydicom.dcmread(source, force=True, stop_before_pixels=True)
    except Exception:  # noqa: BLE001 - a damaged header: the caller's message stands
        return False


def _pixel_data_problem(ds, err: Exception) -> str:
    """Why ``ds.pixel_array`` failed, named by its cause: uncompressed pixel data shorter than
    the header says (truncated), a missing decoder plugin, or damaged compressed data."""
    from pydicom.pixels import get_decoder

    name = _syntax_name(ds)
    syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    detail = f"{type(err).__name__}: {err}"
    if syntax is not None and not syntax.is_compressed:
        frames = int(ds.get("NumberOfFrames", 1) or 1)
        samples, bits = int(ds.get("SamplesPerPixel", 1) or 1), int(ds.get("BitsAllocated", 0) or 0)
        pixels = int(ds.get("Rows", 0) or 0) * int(ds.get("Columns", 0) or 0) * frames * samples
        expected = (pixels * bits + 7) // 8
        held = len(ds.PixelData or b"")
        if held < expected:
            return (
                f"truncated pixel data: the file holds {held} of the {expected} bytes its "
                "header (Rows x Columns x BitsAllocated) needs (cut short in transfer or "
                "storage)"
            )
        return f"cannot decode the pixel data ({name}): {detail}"
    try:
        available = syntax is not None and get_decoder(syntax).is_available
    except (NotImplementedError, ValueError):  # no decoder for this transfer syntax at all
        available = False
    if not available:
        return (
            f"cannot decode pixel data (transfer syntax {name}; needs a pydicom pixel-data "
            f"plugin such as pylibjpeg-libjpeg / pylibjpeg-openjpeg): {detail}"
        )
    return f"damaged or truncated compressed pixel data ({name}): the decoder fails ({detail})"


def _transfer_syntax(image: EncodedImage) -> str | None:
    """The transfer syntax UID of a DICOM file's contents, read from its file meta group
    alone (always explicit VR little endian, right after the ``DICM`` marker)."""
    from pydicom.filereader import data_element_generator

    fp = image.open()
    fp.seek(132)
    try:
        for element in data_element_generator(
            fp, False, True, stop_when=lambda tag, vr, length: tag.group != 2
        ):
            if element.tag == 0x00020010:
                return element.value.decode("ascii", "replace").strip("\0 ")
    except Exception:  # noqa: BLE001 - a damaged meta group: dcmread reports it
        return None
    return None


def _lut_bits(item) -> int:
    return int(list(item.LUTDescriptor)[2])


def _check_is_radiograph(path, ds, modalities) -> None:
    if modalities is None:
        return
    modality = str(ds.get("Modality", "") or "").strip().upper()
    sop_class = str(ds.get("SOPClassUID", "") or "")
    if modality in modalities:
        return
    if modality in SECONDARY_CAPTURE_MODALITIES or sop_class.startswith(
        _SECONDARY_CAPTURE_SOP_PREFIX
    ):
        return
    raise RadiographError(
        path,
        f"modality {modality!r} is not a projection radiograph (accepted: {', '.join(modalities)} "
        "or Secondary Capture)",
    )


def _to_display_orientation(image: np.ndarray, ds) -> np.ndarray:
    orientation = ds.get("PatientOrientation", None)
    if orientation is None or isinstance(orientation, str) or len(orientation) != 2:
        return image
    row_dir, col_dir = (str(v).strip().upper() for v in orientation)
    if col_dir.startswith("H"):
        image = image[::-1, :]
    if row_dir.startswith("R"):
        image = image[:, ::-1]
    return image
