"""DICOM folder loading that reports the files it cannot read instead of dropping them silently."""

from __future__ import annotations

import hashlib
import logging
import os
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import NamedTuple

from monai.deploy.core import Fragment, OperatorSpec
from monai.deploy.operators import DICOMDataLoaderOperator
from pydicom import dcmread

from pipelines.cases import Case, CaseStatus

__all__ = ["CheckedDICOMDataLoaderOperator"]

logger = logging.getLogger(__name__)

_REQUIRED_UIDS = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID")
_PREAMBLE = 128  # bytes before the "DICM" marker of a DICOM Part 10 file
_UNDEFINED_LENGTH = 0xFFFFFFFF  # encapsulated (compressed) pixel data


class CheckedDICOMDataLoaderOperator(DICOMDataLoaderOperator):
    """The SDK's ``DICOMDataLoaderOperator``, plus a report of every file it could not read.

    The SDK loader logs and drops files pydicom rejects as "not DICOM", and stops the whole app on
    other read errors (a file truncated inside its header raises ``EOFError``/``OSError``). Here
    each file is parsed once up front (large values deferred, so pixel data is not read twice);
    the ones that fail become ``UNREADABLE`` cases, and of several files with one SOPInstanceUID
    (which the SDK loader would all load, and the series selection pick one of) only one goes to
    the SDK loader, the others are reported; the rest go to the SDK loader unchanged.

    Named input:
        input_folder: optional, as in the SDK loader.
    Named outputs:
        dicom_study_list: ``List[DICOMStudy]``, exactly as the SDK loader emits it.
        unreadable_cases: ``List[Case]``, one per file not loaded (``case_id`` is the file's
            path relative to the input folder): ``unreadable`` for a DICOM file (by name or by
            its marker) that cannot be parsed or is truncated, ``ignored`` for any other file (a
            manifest, notes), ``duplicate`` / ``conflict`` for a file whose SOPInstanceUID another
            file loaded has (:func:`_one_file_per_instance`); connect it to
            ``PreprocessOperator`` so that they are reported, or leave it unconnected.

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
        super().compute(
            op_input, op_output, context
        )  # calls load_data_to_studies, emits the studies
        op_output.emit(self.unreadable, self.UNREADABLE_OUTPUT)

    def load_data_to_studies(self, input_path: Path):
        """Check every file, record the unreadable ones, keep one file per SOP instance (see
        :func:`_one_file_per_instance`), and load those as the SDK does."""
        input_path = Path(input_path)
        if not input_path.is_dir():
            raise ValueError(f"{input_path}: DICOM input folder does not exist")
        intact, damaged = [], []
        for file in _list_files(input_path):
            if file.name.lower().endswith(self.skip_suffixes):
                continue
            name = str(file.relative_to(input_path))
            if not _is_dicom_candidate(file, self.dicom_suffixes):
                logger.info(
                    "Ignored input file %s: neither a DICOM name nor the DICOM marker", name
                )
                self.unreadable.append(
                    _file_case(name, CaseStatus.IGNORED, "not a DICOM file (name and content)")
                )
                continue
            checked = _check(file, name, self._CHECK_DEFER_SIZE, self.SOP_CLASSES_TO_IGNORE)
            if checked.reason is None:
                intact.append(checked)
            elif checked.reason:  # "": a DICOMDIR or another class the SDK loader ignores
                damaged.append(checked)
        readable, cases = _one_file_per_instance(intact, damaged)
        for case in cases:
            log = logger.info if case.status is CaseStatus.DUPLICATE else logger.warning
            log("Input file %s not loaded (%s): %s", case.case_id, case.status.value, case.message)
        self.unreadable = sorted(self.unreadable + cases, key=lambda case: case.case_id)
        studies = self._load_data(readable)
        if self._must_load and not studies:
            raise ValueError(f"{input_path}: no DICOM study found")
        counts = sorted(Counter(case.status.value for case in self.unreadable).items())
        logger.info(
            "Loaded %d DICOM studies from %d files (%d not loaded: %s)",
            len(studies),
            len(readable),
            len(self.unreadable),
            ", ".join(f"{n} {status}" for status, n in counts) or "none",
        )
        return studies


class _Checked(NamedTuple):
    """One DICOM candidate after the check: ``reason`` None (loadable) or why not; the UIDs
    when its header has them (also for a file cut inside its pixel data)."""

    file: Path
    name: str
    reason: str | None
    instance_uid: str = ""
    study_uid: str = ""


def _one_file_per_instance(
    intact: list[_Checked], damaged: list[_Checked]
) -> tuple[list[str], list[Case]]:
    """The files to load, one per SOPInstanceUID, and a case for every other file, so that no
    file is substituted for another in silence: the first intact file (name order) of an
    instance is loaded; an identical copy of it, or a damaged copy (an intact one always wins,
    whatever the names), is a ``duplicate`` naming it; an intact copy with other content is a
    ``conflict`` (not scored: which copy is the original cannot be told); a damaged file with
    no intact copy is ``unreadable``."""
    first: dict[str, _Checked] = {}
    load, cases = [], []
    for item in intact:
        kept = first.setdefault(item.instance_uid, item)
        if kept is item:
            load.append(str(item.file))
        elif _digest(item.file) == _digest(kept.file):
            why = f"duplicate of {kept.name} (same SOPInstanceUID, identical content): scored once"
            cases.append(_file_case(item.name, CaseStatus.DUPLICATE, why, item))
        else:
            why = (
                f"same SOPInstanceUID as {kept.name} but different content: not scored (study "
                f"scored from {kept.name}; which copy is the original cannot be told)"
            )
            cases.append(_file_case(item.name, CaseStatus.CONFLICT, why, item))
    for item in damaged:
        kept = first.get(item.instance_uid) if item.instance_uid else None
        if kept is None:
            cases.append(_file_case(item.name, CaseStatus.UNREADABLE, item.reason, item))
        else:
            why = (
                f"duplicate of {kept.name} (same SOPInstanceUID), which was scored; this copy: "
                f"{item.reason}"
            )
            cases.append(_file_case(item.name, CaseStatus.DUPLICATE, why, item))
    return load, cases


def _digest(file: Path) -> str:
    return hashlib.sha256(file.read_bytes()).hexdigest()


def _file_case(name: str, status: CaseStatus, reason: str, checked: _Checked | None = None) -> Case:
    source = {"file": name}
    if checked is not None and checked.instance_uid:
        source.update(StudyInstanceUID=checked.study_uid, SOPInstanceUID=checked.instance_uid)
    return Case(case_id=name, kind="file", source=source).fail(status, reason)


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


def _check(file: Path, name: str, defer_size: int, ignored_classes: Iterable[str]) -> _Checked:
    """Whether pydicom can parse the file as DICOM Part 10 with the UIDs the SDK loader groups by
    (``reason`` None), is of an ignored SOP class such as a DICOMDIR (``reason`` ""), or why not:
    a file cut inside its pixel data is named so, with the UIDs its intact header carries."""
    try:
        if file.stat().st_size == 0:
            return _Checked(file, name, "empty file (0 bytes)")
        ds = dcmread(file, defer_size=defer_size)
    except Exception as exc:  # pydicom raises InvalidDicomError, EOFError, OSError, ValueError...
        return _Checked(file, name, f"not a readable DICOM file ({type(exc).__name__}: {exc})")
    if str(ds.file_meta.get("MediaStorageSOPClassUID", "")) in ignored_classes:
        return _Checked(file, name, "")
    missing = [key for key in _REQUIRED_UIDS if not ds.get(key)]
    if missing:
        # pydicom returns an empty dataset when the file ends inside encapsulated (compressed)
        # pixel data; its header, read up to the pixel data, still has the UIDs
        header = _header(file)
        if header is not None and not [key for key in _REQUIRED_UIDS if not header.get(key)]:
            why = (
                f"truncated pixel data: the file ends inside its {_syntax(ds)} pixel data (the "
                "header is intact)"
            )
            return _Checked(file, name, why, *_uids(header))
        # a file cut inside its header parses "successfully" up to the cut
        why = f"DICOM file without {', '.join(missing)} (truncated or incomplete)"
        return _Checked(file, name, why)
    pixels = ds.get_item("PixelData", keep_deferred=True) if "PixelData" in ds else None
    held = file.stat().st_size - getattr(pixels, "value_tell", 0)
    deferred = getattr(pixels, "value", b"") is None and pixels.length != _UNDEFINED_LENGTH
    if deferred and held < pixels.length:
        why = (
            f"truncated pixel data: the file holds {max(held, 0)} of its {pixels.length} bytes "
            "of pixel data (cut short in transfer or storage)"
        )
        return _Checked(file, name, why, *_uids(ds))
    return _Checked(file, name, None, *_uids(ds))


def _header(file: Path):
    try:
        return dcmread(file, stop_before_pixels=True)
    except Exception:  # noqa: BLE001 - damaged before the pixel data: the caller's reason stands
        return None


def _uids(ds) -> tuple[str, str]:
    return str(ds.SOPInstanceUID), str(ds.StudyInstanceUID)


def _syntax(ds) -> str:
    syntax = ds.file_meta.get("TransferSyntaxUID")
    return str(getattr(syntax, "name", syntax) or "unknown transfer syntax")
