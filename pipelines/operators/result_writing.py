"""SQUID results out: a DICOM text SR per scored study, PNG images and JSON summaries.

Output layout under ``output_folder``::

    run_summary.json              every case of the run, counts, the exit code
    <case_id>/squid_result.json   one study (StudyInstanceUID) or image file (its stem)
    <case_id>/input.png           the model input (S x S, after the bundle's preprocessing)
    <case_id>/reconstruction.png  SQUID's reconstruction of it
    <case_id>/difference.png      |input - reconstruction| (grey, absolute scale)
    <case_id>/heatmap.png         the heat map (:mod:`pipelines.heatmap`), jet colours
    <case_id>/<SOPInstanceUID>.dcm  the SR, and the heat-map Secondary Capture (DICOM studies
                                  only; :mod:`pipelines.operators.heatmap_writing`)

The image files are written by ``squid_monai.scoring.save_images``, so each name means what it
means in the bundle's inference output; ``heatmap.png`` is the exported model's score
gradient, coloured in NumPy (the MAP image has no matplotlib).
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections import Counter
from pathlib import Path

from monai.deploy.core import Fragment, Operator, OperatorSpec
from monai.deploy.operators import DICOMTextSRWriterOperator, EquipmentInfo, ModelInfo
from PIL import Image
from pydicom import Dataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import generate_uid

from pipelines.cases import Case, CaseStatus, ExitCode, exit_code_for
from pipelines.heatmap import colour
from pipelines.operators.case_stage import CaseStage
from squid_monai.scoring import IMAGE_FILES, save_images
from squid_monai.scoring.domain import NOT_RECORDED, OUT_OF_DOMAIN

__all__ = [
    "TextSRWriterOperator",
    "ResultWriterOperator",
    "model_info_for",
    "reference_images",
    "report_text",
    "RESULT_FILE",
    "SUMMARY_FILE",
]

logger = logging.getLogger(__name__)

RESULT_FILE = "squid_result.json"
SUMMARY_FILE = "run_summary.json"
MODEL_CREATOR = "squid-monai"


def model_info_for(model: dict) -> ModelInfo:
    """SDK ``ModelInfo`` (the SR's Contributing Equipment) from a model card dict.

    The Device UID is derived from name and version, so it changes exactly when the model does.
    """
    name, version = str(model.get("model_name", "")), str(model.get("model_version", ""))
    return ModelInfo(
        creator=MODEL_CREATOR,
        name=name,
        version=version,
        uid=generate_uid(entropy_srcs=[name, version]),
    )


def report_text(case: Case) -> str:
    """The SR's text: score, decision, threshold, model, and which image was scored."""
    decision = (
        "ANOMALOUS (score above threshold)"
        if case.anomalous
        else "NORMAL (score not above threshold)"
    )
    model = case.model
    return "\n".join(
        [
            *_domain_warning(case),
            "Anomaly detection (squid-monai) on a frontal chest radiograph. Research use only, not for diagnostic use.",
            f"Anomaly score: {case.score:.6f} (0 to 1; higher = less like the normal training radiographs)",
            f"Decision threshold: {case.threshold:.6f}",
            f"Decision: {decision}",
            f"Model: {model.get('model_name', '')} version {model.get('model_version', '')}",
            f"Scored image: SOP Instance UID {case.source.get('SOPInstanceUID', '')}"
            f" in Series Instance UID {case.source.get('SeriesInstanceUID', '')}",
            f"Domain check: {case.domain or NOT_RECORDED} (model trained on "
            f"{model.get('domain', {}).get('name', NOT_RECORDED)})",
            *_heatmap_line(case),
        ]
    )


def _domain_warning(case: Case) -> list[str]:
    """The SR's first line when the domain guard fired: the score below means nothing."""
    if not (case.domain or "").startswith(OUT_OF_DOMAIN):
        return []
    return [
        f"WARNING: this image is outside the model's domain ({case.domain}); the score below "
        "means nothing."
    ]


def _heatmap_line(case: Case) -> list[str]:
    sc = case.references.get("heatmap_sc")
    if not sc:
        return []
    line = (
        f"Heat map ({case.model.get('heatmap', '')}, hot = drives the score up): Secondary "
        f"Capture SOP Instance UID {sc['SOPInstanceUID']} in Series Instance UID "
        f"{sc['SeriesInstanceUID']}"
    )
    return [line]


#: the SR's IMAGE items, by reference name: the concept each one is
_IMAGE_CONCEPTS = {"source": "SourceImage", "heatmap_sc": "IllustrationOfROI"}


def reference_images(sr_file: Path, references: dict[str, dict[str, str]]) -> None:
    """Add to the SR in ``sr_file`` an IMAGE content item (built with highdicom) per
    referenced object (``source``: "Source image", ``heatmap_sc``: "Illustration of ROI")
    and list them in the Current Requested Procedure Evidence Sequence, by study and series,
    as the SR Document General module requires for every instance its content references."""
    import highdicom as hd
    import pydicom
    from pydicom.sr.codedict import codes

    sr = pydicom.dcmread(sr_file)
    studies: dict[str, dict[str, list[Dataset]]] = {}
    for name, uids in references.items():
        if name not in _IMAGE_CONCEPTS:
            continue
        sr.ContentSequence.append(
            hd.sr.ImageContentItem(
                name=getattr(codes.DCM, _IMAGE_CONCEPTS[name]),
                relationship_type="CONTAINS",
                referenced_sop_class_uid=uids["SOPClassUID"],
                referenced_sop_instance_uid=uids["SOPInstanceUID"],
            )
        )
        instance = Dataset()
        instance.ReferencedSOPClassUID = uids["SOPClassUID"]
        instance.ReferencedSOPInstanceUID = uids["SOPInstanceUID"]
        study = studies.setdefault(uids["StudyInstanceUID"], {})
        study.setdefault(uids["SeriesInstanceUID"], []).append(instance)
    sr.CurrentRequestedProcedureEvidenceSequence = DicomSequence(
        [_evidence(study, series) for study, series in studies.items()]
    )
    sr.save_as(sr_file)


def _evidence(study_uid: str, series: dict[str, list[Dataset]]) -> Dataset:
    item = Dataset()
    item.StudyInstanceUID = study_uid
    item.ReferencedSeriesSequence = DicomSequence()
    for series_uid, instances in series.items():
        entry = Dataset()
        entry.SeriesInstanceUID = series_uid
        entry.ReferencedSOPSequence = DicomSequence(instances)
        item.ReferencedSeriesSequence.append(entry)
    return item


class TextSRWriterOperator(CaseStage, DICOMTextSRWriterOperator):
    """The SDK's ``DICOMTextSRWriterOperator``, writing one SR per scored DICOM study.

    The SDK operator writes one SR per call from the first series it receives; here each scored
    study gets its own SR in ``<output_folder>/<StudyInstanceUID>/``, with the study's Patient and
    Study modules copied (so it files with the source study), the model's name and version in the
    Contributing Equipment Sequence, and ``report_text`` as content; with the case's
    ``references`` (:func:`reference_images`), IMAGE items pointing at the scored image and at
    the heat-map Secondary Capture.

    Named input:
        cases: ``List[Case]``; scored ``dicom`` cases get an SR, the others pass unchanged.
    Named output:
        cases: the same list, ``outputs["sr"]`` set for each SR written (a failure is added to
            the case's ``problems`` and the next study goes on).

    Args:
        output_folder: root of the per-study folders.
        model_info: SDK ``ModelInfo``; default: built from each case's model card (``model_info_for``).
        equipment_info, custom_tags: as in ``DICOMTextSRWriterOperator``.
    """

    def __init__(
        self,
        fragment: Fragment,
        *args,
        output_folder: str | Path,
        model_info: ModelInfo | None = None,
        equipment_info: EquipmentInfo | None = None,
        custom_tags: dict[str, str] | None = None,
        **kwargs,
    ):
        self._fixed_model_info = model_info
        super().__init__(
            fragment,
            *args,
            output_folder=Path(output_folder),
            model_info=model_info,
            copy_tags=True,
            equipment_info=equipment_info,
            custom_tags=custom_tags,
            **kwargs,
        )

    def wants(self, case: Case) -> bool:
        return case.kind == "dicom" and case.status is CaseStatus.SCORED

    def handle(self, case: Case) -> None:
        self.write_case(case)

    def write_case(self, case: Case) -> None:
        """Write the SR of one scored study and record its path (relative to the output folder)."""
        folder = self.output_folder / case.folder
        self.model_info = self._fixed_model_info or model_info_for(case.model)
        try:
            folder.mkdir(parents=True, exist_ok=True)
            before = set(folder.glob("*.dcm"))
            self.write(report_text(case), case.dicom_series, folder)
            written = sorted(set(folder.glob("*.dcm")) - before)
            case.outputs["sr"] = str(written[0].relative_to(self.output_folder))
            if case.references:
                reference_images(written[0], case.references)
        except Exception as exc:
            logger.exception("Case %s: SR not written", case.case_id)
            case.problems.append(f"SR not written: {type(exc).__name__}: {exc}")


class ResultWriterOperator(Operator):
    """Write the PNG images and JSON summary of each case, and the run summary.

    Named input:
        cases: ``List[Case]`` (the last operator of the graph).
    Named output: none. Files: see the module docstring. After ``compute``, ``exit_code`` holds
        the run's ``ExitCode`` and ``summary`` the run summary dict.

    Args:
        output_folder: where the files go.
    """

    def __init__(self, fragment: Fragment, *args, output_folder: str | Path, **kwargs):
        self.output_folder = Path(output_folder)
        self.exit_code: ExitCode | None = None
        self.summary: dict = {}
        super().__init__(fragment, *args, **kwargs)

    def setup(self, spec: OperatorSpec):
        spec.input("cases")

    def compute(self, op_input, op_output, context):
        cases = op_input.receive("cases") or []
        self.output_folder.mkdir(parents=True, exist_ok=True)
        for case in cases:
            if case.kind in ("dicom", "image"):
                self.write_case(case)
        self.exit_code = exit_code_for(cases)
        self.summary = _run_summary(cases, self.exit_code)
        (self.output_folder / SUMMARY_FILE).write_text(json.dumps(self.summary, indent=2))
        counts = (
            ", ".join(f"{n} {status}" for status, n in self.summary["counts"].items()) or "no input"
        )
        logger.info(
            "Run finished: %s; exit code %d (%s)", counts, self.exit_code, self.exit_code.name
        )

    def write_case(self, case: Case) -> None:
        folder = self.output_folder / case.folder
        folder.mkdir(parents=True, exist_ok=True)
        if case.status is CaseStatus.SCORED:
            try:
                self._write_images(case, folder)
            except Exception as exc:
                logger.exception("Case %s: images not written", case.case_id)
                case.problems.append(f"images not written: {type(exc).__name__}: {exc}")
        case.outputs["result"] = str((folder / RESULT_FILE).relative_to(self.output_folder))
        (folder / RESULT_FILE).write_text(json.dumps(case.summary(), indent=2))

    def _write_images(self, case: Case, folder: Path) -> None:
        # the heat map in NumPy's colours: save_images' colour map needs matplotlib, not in the MAP
        record = dataclasses.replace(case.record, heatmap=None)
        written = save_images(record, folder, image=case.image)
        if case.record.heatmap is not None:
            written["heatmap"] = folder / IMAGE_FILES["heatmap"]
            Image.fromarray(colour(case.record.heatmap), mode="RGB").save(written["heatmap"])
        for name, path in written.items():
            case.outputs[name] = str(path.relative_to(self.output_folder))


def _run_summary(cases: list[Case], exit_code: ExitCode) -> dict:
    counts = Counter(case.status.value for case in cases)
    models = [case.model for case in cases if case.model]
    return {
        "exit_code": int(exit_code),
        "exit_status": exit_code.name,
        "counts": dict(sorted(counts.items())),
        "model": models[0] if models else None,
        "out_of_domain": [
            case.case_id for case in cases if (case.domain or "").startswith(OUT_OF_DOMAIN)
        ],
        "cases": [case.summary() for case in cases],
    }
