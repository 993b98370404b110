"""Writers of small synthetic radiograph files (DICOM, PNG, NIfTI) for the transform tests,
handed to tests as fixtures (no test imports this module)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
SHARED_DATA = REPO / ".." / "shared" / "data"

DX_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.1.1"  # Digital X-Ray Image Storage - For Presentation
SC_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.7"  # Secondary Capture Image Storage


def ramp(rows: int = 24, cols: int = 20, high: int = 4000, dtype=np.uint16) -> np.ndarray:
    """A test image that is not symmetric in any direction: a ramp plus a bright top-left corner."""
    y, x = np.mgrid[0:rows, 0:cols]
    image = (y * cols + x) / (rows * cols - 1) * high * 0.8
    image[: rows // 4, : cols // 4] = high
    return image.astype(dtype)


def write_dicom(
    path: Path,
    pixels: np.ndarray,
    photometric: str = "MONOCHROME2",
    bits_stored: int = 12,
    modality: str = "DX",
    sop_class: str = DX_SOP_CLASS,
    slope: float | None = None,
    intercept: float | None = None,
    window: tuple[float, float] | None = None,
    frames: int = 1,
    orientation: list[str] | None = None,
    compress: str | None = None,
) -> Path:
    """Write a minimal valid DICOM file with ``pixels`` ((rows, cols), or (frames, rows, cols))."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = modality
    ds.PatientID = "TEST"
    signed = np.issubdtype(pixels.dtype, np.signedinteger)
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.Rows, ds.Columns = pixels.shape[-2:]
    ds.BitsAllocated = pixels.dtype.itemsize * 8
    ds.BitsStored = bits_stored
    ds.HighBit = bits_stored - 1
    ds.PixelRepresentation = int(signed)
    if frames > 1:
        ds.NumberOfFrames = frames
    if slope is not None:
        ds.RescaleSlope = slope
        ds.RescaleIntercept = intercept if intercept is not None else 0
        ds.RescaleType = "US"
    if window is not None:
        ds.WindowCenter, ds.WindowWidth = window
    if orientation is not None:
        ds.PatientOrientation = orientation
    ds.PixelData = np.ascontiguousarray(pixels).tobytes()
    if compress is not None:
        ds.compress(compress)
    ds.save_as(path, enforce_file_format=True)
    return path


def write_png(path: Path, image: np.ndarray, mode: str | None = None) -> Path:
    from PIL import Image

    Image.fromarray(image, mode=mode).save(path) if mode else Image.fromarray(image).save(path)
    return path


def write_nifti(path: Path, data: np.ndarray) -> Path:
    import nibabel as nib

    nib.save(nib.Nifti1Image(data, affine=np.eye(4)), str(path))
    return path


@pytest.fixture
def make_dicom():
    """``make_dicom(path, pixels, **tags)``: see ``write_dicom``."""
    return write_dicom


@pytest.fixture
def make_png():
    return write_png


@pytest.fixture
def make_nifti():
    return write_nifti


@pytest.fixture
def ramp_image():
    """``ramp_image(rows, cols, high, dtype)``: see ``ramp``."""
    return ramp


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared real data not found at {SHARED_DATA} (lives beside the repository)")
    return SHARED_DATA
