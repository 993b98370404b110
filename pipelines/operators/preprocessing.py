"""Selected radiograph -> model input, with exactly the bundle's preprocessing.

Both operators go through ``squid_monai.scoring.read_image`` with the bundle's ``preprocessing``
(read from the exported model's embedded ``inference.json``; else the same
``squid_monai.transforms.inference_transforms``) and the scoring package's bad-file policy: the
DICOM display rules (MONOCHROME1, bit depth, slope/intercept, VOI, orientation), the intensity
scaling and the resize are the ones training and the bundle's inference use. The DICOM operator
hands the in-memory ``pydicom.Dataset`` over as it is: no temporary file.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path

from monai.deploy.core import ConditionType, Fragment, Operator, OperatorSpec

from pipelines.cases import Case, CaseStatus
from pipelines.operators.series_selection import SELECTED_INSTANCE_KEY, sorted_image_instances
from squid_monai.scoring import read_image
from squid_monai.transforms import RadiographError

__all__ = ["PreprocessOperator", "ImageFileLoaderOperator", "IMAGE_SUFFIXES"]

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
# errors that mean "this input cannot be read", as opposed to a defect of the app (read_image turns
# a RadiographError into a reason; pydicom may still raise these on a malformed in-memory dataset)
_READ_ERRORS = (ValueError, OSError, EOFError, AttributeError, KeyError)


class PreprocessOperator(Operator):
    """Turn the selected image of each DICOM study into the model input.

    Named inputs:
        study_selected_series_list: ``List[StudySelectedSeries]`` from a series selector (required).
            With ``RadiographSeriesSelectorOperator`` the instance it chose is used; with the SDK's
            plain selector, the first image instance (by InstanceNumber) of the first series.
        dicom_study_list: ``List[DICOMStudy]`` (optional): studies it holds that were not selected
            are reported as ``no_suitable_series`` with the modalities found.
        unreadable_cases: ``List[Case]`` (optional), from ``CheckedDICOMDataLoaderOperator``:
            passed on so that the files are reported.
    Named output:
        cases: ``List[Case]``, one per study: ``pending`` with ``image`` (1, S, S) float32 in
            [0, 1] and ``dicom_series`` set, or ``multi_frame`` / ``unreadable`` / ``error`` with the
            reason; followed by the passed-on cases.

    Args:
        image_size: S, from the exported model's card.
        preprocessing: the bundle's preprocessing (``ExportedModel.preprocessing``); default
            ``squid_monai.transforms.preprocess`` at ``image_size`` (the same transforms).
    """

    def __init__(self, fragment: Fragment, *args, image_size: int, preprocessing=None, **kwargs):
        self.image_size, self.preprocessing = int(image_size), preprocessing
        super().__init__(fragment, *args, **kwargs)

    def setup(self, spec: OperatorSpec):
        spec.input("study_selected_series_list")
        spec.input("dicom_study_list").condition(ConditionType.NONE)
        spec.input("unreadable_cases").condition(ConditionType.NONE)
        spec.output("cases")

    def compute(self, op_input, op_output, context):
        selections = op_input.receive("study_selected_series_list") or []
        studies = _receive_optional(op_input, "dicom_study_list") or []
        passed_on = _receive_optional(op_input, "unreadable_cases") or []
        cases = [self.prepare(selection) for selection in selections]
        selected_uids = {case.case_id for case in cases}
        for study in studies:
            if str(study.StudyInstanceUID) not in selected_uids:
                cases.append(_no_suitable_series(study))
        op_output.emit(cases + list(passed_on), "cases")

    def prepare(self, study_selection) -> Case:
        """One study's case: its selected image preprocessed, or the reason it cannot be."""
        study_uid = str(study_selection.study.StudyInstanceUID)
        case = Case(case_id=study_uid, kind="dicom", source={"StudyInstanceUID": study_uid})
        if not study_selection.selected_series:
            return case.fail(CaseStatus.NO_SUITABLE_SERIES, "no series selected")
        selected = study_selection.selected_series[0]
        series = selected.series
        instances = sorted_image_instances(series)
        index = selected.metadata().get(SELECTED_INSTANCE_KEY, 0)
        case.dicom_series = series
        case.source["SeriesInstanceUID"] = str(series.SeriesInstanceUID)
        if index >= len(instances):
            return case.fail(CaseStatus.NO_SUITABLE_SERIES, "selected series has no image instance")
        ds = instances[index].get_native_sop_instance()
        case.source.update(
            SOPInstanceUID=str(ds.get("SOPInstanceUID", "")),
            Modality=str(ds.get("Modality", "")),
            PhotometricInterpretation=str(ds.get("PhotometricInterpretation", "")),
            Rows=int(ds.get("Rows", 0) or 0),
            Columns=int(ds.get("Columns", 0) or 0),
        )
        frames = int(ds.get("NumberOfFrames", 1) or 1)
        if frames > 1:
            logger.warning("Study %s: multi-frame image (%d frames) not scored", study_uid, frames)
            message = f"selected image has {frames} frames; SQUID scores single 2D radiographs"
            return case.fail(CaseStatus.MULTI_FRAME, message)
        try:
            case.image, reason = read_image(ds, self.image_size, self.preprocessing)
        except _READ_ERRORS as exc:
            logger.warning("Study %s: image unreadable: %s", study_uid, _without_path(exc))
            return case.fail(CaseStatus.UNREADABLE, _without_path(exc))
        except Exception as exc:  # keep the other studies going; the case says what happened
            logger.exception("Study %s: preprocessing failed", study_uid)
            return case.fail(CaseStatus.ERROR, f"preprocessing failed: {type(exc).__name__}: {exc}")
        if reason is not None:
            logger.warning("Study %s: image unreadable: %s", study_uid, reason)
            return case.fail(CaseStatus.UNREADABLE, reason)
        return case


class ImageFileLoaderOperator(Operator):
    """PNG/JPEG files of a folder -> model inputs, one case per file (no DICOM output).

    Named input:
        cases: only with ``receives_cases=True``: ``List[Case]`` from upstream (e.g. the DICOM
            cases of a mixed folder), emitted first. Without it this is a source operator: give
            it a ``CountCondition(fragment, 1)``.
    Named output:
        cases: ``List[Case]`` with ``kind="image"`` and ``case_id`` the file stem (made unique).

    Args:
        input_folder: searched recursively for ``suffixes``.
        image_size: S, from the exported model's card.
        preprocessing: as in ``PreprocessOperator``.
        receives_cases: declare the (then required) ``cases`` input.
    """

    def __init__(
        self,
        fragment: Fragment,
        *args,
        input_folder: str | Path,
        image_size: int,
        suffixes: Iterable[str] = IMAGE_SUFFIXES,
        receives_cases: bool = False,
        preprocessing=None,
        **kwargs,
    ):
        self.input_folder = Path(input_folder)
        self.image_size, self.preprocessing = int(image_size), preprocessing
        self.suffixes = tuple(s.lower() for s in suffixes)
        self.receives_cases = receives_cases
        super().__init__(fragment, *args, **kwargs)

    def setup(self, spec: OperatorSpec):
        if self.receives_cases:
            spec.input("cases")
        spec.output("cases")

    def compute(self, op_input, op_output, context):
        upstream = list(op_input.receive("cases") or []) if self.receives_cases else []
        images = [self.prepare(path, case_id) for path, case_id in self.list_images()]
        op_output.emit(upstream + images, "cases")

    def list_images(self) -> list[tuple[Path, str]]:
        """(file, unique case id) for every image file under the input folder."""
        files = sorted(
            p
            for p in self.input_folder.rglob("*")
            if p.is_file() and p.name.lower().endswith(self.suffixes)
        )
        seen: dict[str, int] = {}
        listed = []
        for path in files:
            stem = path.stem
            seen[stem] = seen.get(stem, 0) + 1
            listed.append((path, stem if seen[stem] == 1 else f"{stem}_{seen[stem]}"))
        return listed

    def prepare(self, path: Path, case_id: str) -> Case:
        name = str(path.relative_to(self.input_folder))
        case = Case(case_id=case_id, kind="image", source={"file": name})
        try:
            case.image, reason = read_image(path, self.image_size, self.preprocessing)
        except _READ_ERRORS as exc:
            logger.warning("Image %s unreadable: %s", name, _without_path(exc))
            return case.fail(CaseStatus.UNREADABLE, _without_path(exc))
        except Exception as exc:
            logger.exception("Image %s: preprocessing failed", name)
            return case.fail(CaseStatus.ERROR, f"preprocessing failed: {type(exc).__name__}: {exc}")
        if reason is not None:
            logger.warning("Image %s unreadable: %s", name, reason)
            return case.fail(CaseStatus.UNREADABLE, reason)
        return case


def _no_suitable_series(study) -> Case:
    study_uid = str(study.StudyInstanceUID)
    found = sorted({f"{s.Modality or '?'}" for s in study.get_all_series()})
    message = f"no frontal chest radiograph series (found modalities: {', '.join(found) or 'none'})"
    logger.warning("Study %s not scored: %s", study_uid, message)
    case = Case(case_id=study_uid, kind="dicom", source={"StudyInstanceUID": study_uid})
    return case.fail(CaseStatus.NO_SUITABLE_SERIES, message)


def _receive_optional(op_input, name: str) -> list | None:
    try:
        return op_input.receive(name)
    except Exception:  # unconnected optional port
        return None


def _without_path(exc: BaseException) -> str:
    """The reason without the file path (paths can name patients; the case says which study it is)."""
    return exc.reason if isinstance(exc, RadiographError) else f"{type(exc).__name__}: {exc}"
