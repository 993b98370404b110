"""The heat map into PACS: a DICOM Secondary Capture of the heat map over the model input,
written with highdicom into the source study, so that any viewer shows where the exported
model's score comes from (:mod:`pipelines.heatmap`: what the map is).

The SC copies the Patient and Study modules of the scored image (same StudyInstanceUID: PACS
files it with the study), lists that image in its Source Image Sequence, and names the model
and what the map shows in its Series Description and Image Comments. The SR of the same
study references it (:class:`~pipelines.operators.result_writing.TextSRWriterOperator`).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from monai.deploy.core import Fragment, Operator
from pydicom import Dataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import generate_uid

from pipelines.cases import Case, CaseStatus
from pipelines.heatmap import DESCRIPTIONS, overlay
from pipelines.operators.case_stage import CaseStage

__all__ = ["HEATMAP_SERIES_NUMBER", "HeatmapSCWriterOperator", "heatmap_sc", "scored_instance"]

logger = logging.getLogger(__name__)

#: Series Number of the heat-map series (the SR writer's series is the SDK's)
HEATMAP_SERIES_NUMBER = 9001
MANUFACTURER = "squid-monai"


def scored_instance(case: Case) -> Dataset:
    """The pydicom dataset of the image the case scored (its SOP Instance UID in ``source``)."""
    wanted = case.source.get("SOPInstanceUID")
    for instance in case.dicom_series.get_sop_instances():
        ds = instance.get_native_sop_instance()
        if str(ds.get("SOPInstanceUID", "")) == wanted:
            return ds
    raise LookupError(f"the scored image {wanted} is no longer in its series")


def heatmap_sc(source: Dataset, case: Case):
    """The Secondary Capture (``highdicom.sc.SCImage``) of ``case``'s heat map over its model
    input, in the study of ``source``, the scored image."""
    import highdicom as hd

    kind = case.model.get("heatmap", "")
    rgb = overlay(np.asarray(case.image)[0], case.record.heatmap)
    name, version = case.model.get("model_name", ""), case.model.get("model_version", "")
    sc = hd.sc.SCImage.from_ref_dataset(
        ref_dataset=source,
        pixel_array=rgb,
        photometric_interpretation="RGB",
        bits_allocated=8,
        coordinate_system="PATIENT",
        series_instance_uid=generate_uid(),
        series_number=HEATMAP_SERIES_NUMBER,
        sop_instance_uid=generate_uid(),
        instance_number=1,
        manufacturer=MANUFACTURER,
        patient_orientation=_orientation(source),
    )
    sc.SeriesDescription = f"Anomaly heat map ({kind}). Research use only, not for diagnostic use."
    sc.ImageComments = (
        f"Heat map of model {name} version {version}: "
        f"{DESCRIPTIONS.get(kind, kind)}, hot = drives the anomaly score up, over "
        f"the model input; score {case.score:.6f}, threshold {case.threshold:.6f}."
    )
    sc.ManufacturerModelName, sc.SoftwareVersions = name, version
    reference = Dataset()
    reference.ReferencedSOPClassUID = source.SOPClassUID
    reference.ReferencedSOPInstanceUID = source.SOPInstanceUID
    sc.SourceImageSequence = DicomSequence([reference])
    return sc


def _orientation(source: Dataset) -> tuple[str, str]:
    """The scored image's Patient Orientation; without one, a chest radiograph's display
    convention (rows towards the patient's left, columns towards the feet: ``L\\F``)."""
    values = [str(v) for v in (source.get("PatientOrientation") or [])]
    return (values[0], values[1]) if len(values) == 2 and all(values) else ("L", "F")


def _uids(ds: Dataset) -> dict[str, str]:
    keys = ("StudyInstanceUID", "SeriesInstanceUID", "SOPClassUID", "SOPInstanceUID")
    return {key: str(ds[key].value) for key in keys}


class HeatmapSCWriterOperator(CaseStage, Operator):
    """Write the heat-map Secondary Capture of each scored DICOM study.

    Named input:
        cases: ``List[Case]``; scored ``dicom`` cases with a heat map get an SC, the
            others pass unchanged.
    Named output:
        cases: the same list, ``outputs["heatmap_sc"]`` set for each SC written and
            ``references`` holding the UIDs of the scored image (``source``) and of the SC
            (``heatmap_sc``) for the SR; a failure is added to the case's ``problems``.

    Args:
        output_folder: root of the per-study folders (the SC lies beside the SR).
    """

    def __init__(self, fragment: Fragment, *args, output_folder: str | Path, **kwargs):
        self.output_folder = Path(output_folder)
        super().__init__(fragment, *args, **kwargs)

    def wants(self, case: Case) -> bool:
        scored = case.kind == "dicom" and case.status is CaseStatus.SCORED
        return scored and case.record is not None and case.record.heatmap is not None

    def handle(self, case: Case) -> None:
        folder = self.output_folder / case.folder
        try:
            source = scored_instance(case)
            case.references["source"] = _uids(source)
            sc = heatmap_sc(source, case)
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / f"{sc.SOPInstanceUID}.dcm"
            sc.save_as(path, enforce_file_format=True)
        except Exception as exc:
            logger.exception("Case %s: heat-map Secondary Capture not written", case.case_id)
            case.problems.append(f"heat-map SC not written: {type(exc).__name__}: {exc}")
            return
        case.references["heatmap_sc"] = _uids(sc)
        case.outputs["heatmap_sc"] = str(path.relative_to(self.output_folder))
