"""Makers of test inputs for the deploy tests: a stand-in exported model, DICOM files written
with pydicom (handed to tests through conftest fixtures or imported directly).

The stand-in has the exported SQUIDScorer's TorchScript interface (dict with score, logit,
reconstruction) but no learning: the reconstruction is a 3 x 3 blur and the logit the negated
mean blur residual. It keeps the app tests fast and independent of training.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

STANDIN_SIZE = 32
STANDIN_CARD = {
    "image_size": STANDIN_SIZE,
    "mean": -2.0,
    "std": 0.5,
    "threshold": 0.5,
    "model_name": "squid-standin",
    "model_version": "0.0.1",
}
CR_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.1"
CT_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.2"


class StandInScorer(torch.nn.Module):
    """Exported-model interface without learning (see module docstring)."""

    def __init__(self, mean: float, std: float):
        super().__init__()
        self.mean = mean
        self.std = std

    def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        reconstruction = F.avg_pool2d(image, 3, 1, 1, count_include_pad=False)
        logit = -100.0 * (image - reconstruction).abs().mean(dim=(1, 2, 3))
        score = 1.0 - torch.sigmoid((logit - self.mean) / self.std)
        return {"score": score, "logit": logit, "reconstruction": reconstruction}


def save_standin(path: Path, embed_card: bool = True, sidecar: dict | None = None) -> Path:
    """Script and save the stand-in; its card embedded as ``squid.json`` and/or as a sidecar."""
    module = torch.jit.script(StandInScorer(STANDIN_CARD["mean"], STANDIN_CARD["std"]))
    extra = {"squid.json": json.dumps(STANDIN_CARD)} if embed_card else {}
    torch.jit.save(module, str(path), _extra_files=extra)
    if sidecar is not None:
        path.with_suffix(".json").write_text(json.dumps(sidecar))
    return path


def chest_pixels(rows: int = 64, cols: int = 48, bits: int = 12, seed: int = 0) -> np.ndarray:
    """A chest-like test picture in MONOCHROME2 convention (bright = dense), uint16."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:rows, 0:cols]
    lungs = np.exp(
        -(((x - cols * 0.3) / (cols * 0.15)) ** 2 + ((y - rows / 2) / (rows * 0.3)) ** 2)
    )
    lungs += np.exp(
        -(((x - cols * 0.7) / (cols * 0.15)) ** 2 + ((y - rows / 2) / (rows * 0.3)) ** 2)
    )
    picture = 0.8 - 0.6 * lungs + 0.05 * rng.standard_normal((rows, cols))
    top = 2**bits - 1
    return np.clip(picture * top, 0, top).astype(np.uint16)


def write_dicom(
    path: Path,
    pixels: np.ndarray,
    modality: str = "CR",
    photometric: str = "MONOCHROME2",
    bits: int = 12,
    study_uid: str | None = None,
    series_uid: str | None = None,
    view_position: str | None = "PA",
    body_part: str | None = "CHEST",
    slope: float = 1.0,
    intercept: float = 0.0,
) -> Path:
    """A minimal valid DICOM Part 10 image (single or multi-frame: pixels (rows, cols) or (frames, rows, cols))."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CT_SOP_CLASS if modality == "CT" else CR_SOP_CLASS
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = (
        meta.MediaStorageSOPClassUID,
        meta.MediaStorageSOPInstanceUID,
    )
    ds.StudyInstanceUID = study_uid or generate_uid()
    ds.SeriesInstanceUID = series_uid or generate_uid()
    ds.PatientName, ds.PatientID = "TEST^PATIENT", "SECRET-ID-123"
    ds.StudyDate, ds.Modality, ds.InstanceNumber, ds.SeriesNumber = "20240101", modality, 1, 1
    if view_position is not None:
        ds.ViewPosition = view_position
    if body_part is not None:
        ds.BodyPartExamined = body_part
    if pixels.ndim == 3:
        ds.NumberOfFrames = pixels.shape[0]
    ds.Rows, ds.Columns = pixels.shape[-2:]
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, bits, bits - 1, 0
    if modality == "CT":
        ds.ImagePositionPatient, ds.ImageOrientationPatient = [0, 0, 0], [1, 0, 0, 0, 1, 0]
    if slope != 1.0 or intercept != 0.0:
        ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
    ds.PixelData = pixels.astype(np.uint16).tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path
