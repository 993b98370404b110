"""DICOM folder loading that reports the files it cannot read instead of dropping them silently."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Iterable

from monai.deploy.core import Fragment, OperatorSpec
from monai.deploy.operators import DICOMDataLoaderOperator
from pydicom import dcmread

from pipelines.cases import CaseStatus, Case

__all__ = ["CheckedDICOMDataLoaderOperator"]

logger = logging.getLogger(__name__)

_REQUIRED_UIDS = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID")
_PREAMBLE = 128  # bytes before the "DICM" marker of a DICOM Part 10 file


class CheckedDICOMDataLoaderOperator(DICOMDataLoaderOperator):
    """The SDK's ``DICOMDataLoaderOperator``, plus a report of every file it could not read.

    The SDK loader logs and drops files pydicom rejects as "not DICOM", and stops the whole app on
    other read errors (a file truncated inside its header raises ``EOFError``/``OSError``). Here
    each file is parsed once up front (large values deferred, so pixel data is not read twice);
    the ones that fail become ``UNREADABLE`` cases, the rest go to the SDK loader unchanged.

    Named input:
        input_folder: optional, as in the SDK loader.
    Named outputs:
        dicom_study_list: ``List[DICOMStudy]``, exactly as the SDK loader emits it.
        unreadable_cases: ``List[Case]``, one per file not loaded (``case_id`` is the file's
            path relative to the input folder): ``unreadable`` for a DICOM file (by name or by
            its marker) that cannot be parsed, ``ignored`` for any other file (a manifest, notes);
            connect it to ``PreprocessOperator`` so that they are reported, or leave it unconnected.

    Args:
        skip_suffixes: file name endings that are not DICOM candidates here (PNG/JPEG go
            through ``ImageFileLoaderOperator``); they are neither loaded nor reported.
        dicom_suffixes: name endings taken as DICOM even without the ``DICM`` marker ("" = none).
        other args: see ``DICOMDataLoaderOperator`` (``must_load`` defaults to False here so
            that a folder without DICOM is reported rather than an exception).
    """

    UNREADABLE_OUTPUT = "unreadable_cases"
    _CHECK_DEFER_SIZE = 1024  # bytes: values larger than this are not read by the check

    def __init__(
        self,
        fragment: Fragment,
        *args,
        skip_suffixes: Iterable[str] = (".png", ".jpg", ".jpeg"),
        dicom_suffixes: Iterable[str] = ("", ".dcm", ".dicom"),
        must_load: bool = False,
        **kwargs,
    ):
        self.skip_suffixes = tuple(s.lower() for s in skip_suffixes)
        self.dicom_suffixes = tuple(s.lower() for s in dicom_suffixes)
        self.unreadable: list[Case] = []
        super().__init__(fragment, *args, must_load=must_load, **kwargs)

    def setup(self, spec: OperatorSpec):
        super().setup(spec)
        spec.output(self.UNREADABLE_OUTPUT)

    def compute(self, op_input, op_output, context):
        self.unreadable = []
        super().compute(op_input, op_output, context)  # calls load_data_to_studies, emits the studies
        op_output.emit(self.unreadable, self.UNREADABLE_OUTPUT)

    def load_data_to_studies(self, input_path: Path):
        """Check every file, record the unreadable ones, and load the rest as the SDK does."""
        input_path = Path(input_path)
        if not input_path.is_dir():
            raise ValueError(f"{input_path}: DICOM input folder does not exist")
        readable = []
        for file in _list_files(input_path):
            if file.name.lower().endswith(self.skip_suffixes):
                continue
            name = str(file.relative_to(input_path))
            if not _is_dicom_candidate(file, self.dicom_suffixes):
                logger.info("Ignored input file %s: neither a DICOM name nor the DICOM marker", name)
                self.unreadable.append(_file_case(name, CaseStatus.IGNORED, "not a DICOM file (name and content)"))
                continue
            reason = _unreadable_reason(file, self._CHECK_DEFER_SIZE, self.SOP_CLASSES_TO_IGNORE)
            if reason is None:
                readable.append(str(file))
            elif reason:  # "" is a DICOMDIR or another class the SDK loader ignores by design
                logger.warning("Unreadable input file %s: %s", name, reason)
                self.unreadable.append(_file_case(name, CaseStatus.UNREADABLE, reason))
        studies = self._load_data(readable)
        if self._must_load and not studies:
            raise ValueError(f"{input_path}: no DICOM study found")
        logger.info(
            "Loaded %d DICOM studies from %d files (%d not loaded)", len(studies), len(readable), len(self.unreadable)
        )
        return studies


def _file_case(name: str, status: CaseStatus, reason: str) -> Case:
    return Case(case_id=name, kind="file", source={"file": name}).fail(status, reason)


def _is_dicom_candidate(file: Path, dicom_suffixes: tuple[str, ...]) -> bool:
    """A DICOM name (``.dcm``, no extension: PACS exports often have none) or the ``DICM`` marker."""
    if file.suffix.lower() in dicom_suffixes:
        return True
    try:
        with open(file, "rb") as f:
            return f.read(_PREAMBLE + 4)[_PREAMBLE:] == b"DICM"
    except OSError:
        return True  # let the check report why it cannot be read


def _list_files(folder: Path) -> list[Path]:
    files = []
    for root, dirs, names in os.walk(folder):
        dirs.sort()
        files.extend(Path(root) / name for name in sorted(names))
    return files


def _unreadable_reason(file: Path, defer_size: int, ignored_classes: Iterable[str]) -> str | None:
    """None if pydicom can parse the file as DICOM Part 10 with the UIDs the SDK loader groups by,
    "" for a file of an ignored SOP class (DICOMDIR), else why it cannot be loaded."""
    try:
        ds = dcmread(file, defer_size=defer_size)
    except Exception as exc:  # pydicom raises InvalidDicomError, EOFError, OSError, ValueError...
        return f"not a readable DICOM file ({type(exc).__name__}: {exc})"
    if str(ds.file_meta.get("MediaStorageSOPClassUID", "")) in ignored_classes:
        return ""
    missing = [key for key in _REQUIRED_UIDS if not ds.get(key)]
    if missing:  # a file cut inside its header parses "successfully" up to the cut
        return f"DICOM file without {', '.join(missing)} (truncated or incomplete)"
    return None
