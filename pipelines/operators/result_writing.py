"""SQUID results out: a DICOM text SR per scored study, PNG images and JSON summaries.

Output layout under ``output_folder``::

    run_summary.json              every case of the run, counts, the exit code
    <case_id>/squid_result.json   one study (StudyInstanceUID) or image file (its stem)
    <case_id>/input.png           the model input (S x S, after the bundle's preprocessing)
    <case_id>/reconstruction.png  SQUID's reconstruction of it
    <case_id>/difference.png      |input - reconstruction| (grey, absolute scale)
    <case_id>/<SOPInstanceUID>.dcm  the SR (DICOM studies only)

The image files are written by ``squid_monai.scoring.save_images``, so each name means what it
means in the bundle's inference output. There is no ``heatmap.png`` (the score's gradient,
:mod:`squid_monai.scoring.explain`): the app runs the TorchScript export, not the eager scorer
that explainer differentiates.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from pathlib import Path
from typing import Optional

from monai.deploy.core import Fragment, Operator, OperatorSpec
from monai.deploy.operators import DICOMTextSRWriterOperator, EquipmentInfo, ModelInfo
from pydicom.uid import generate_uid

from pipelines.cases import CaseStatus, ExitCode, Case, exit_code_for
from pipelines.operators.case_stage import CaseStage
from squid_monai.scoring import save_images

__all__ = [
    "TextSRWriterOperator",
    "ResultWriterOperator",
    "model_info_for",
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
    return ModelInfo(creator=MODEL_CREATOR, name=name, version=version, uid=generate_uid(entropy_srcs=[name, version]))


def report_text(case: Case) -> str:
    """The SR's text: score, decision, threshold, model, and which image was scored."""
    decision = "ANOMALOUS (score above threshold)" if case.anomalous else "NORMAL (score not above threshold)"
    model = case.model
    return "\n".join(
        [
            "SQUID anomaly detection on a frontal chest radiograph. Research use only, not for diagnostic use.",
            f"Anomaly score: {case.score:.6f} (0 to 1; higher = less like the normal training radiographs)",
            f"Decision threshold: {case.threshold:.6f}",
            f"Decision: {decision}",
            f"Model: {model.get('model_name', '')} version {model.get('model_version', '')}",
            f"Scored image: SOP Instance UID {case.source.get('SOPInstanceUID', '')}"
            f" in Series Instance UID {case.source.get('SeriesInstanceUID', '')}",
        ]
    )


class TextSRWriterOperator(CaseStage, DICOMTextSRWriterOperator):
    """The SDK's ``DICOMTextSRWriterOperator``, writing one SR per scored DICOM study.

    The SDK operator writes one SR per call from the first series it receives; here each scored
    study gets its own SR in ``<output_folder>/<StudyInstanceUID>/``, with the study's Patient and
    Study modules copied (so it files with the source study), the model's name and version in the
    Contributing Equipment Sequence, and ``report_text`` as content.

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
        model_info: Optional[ModelInfo] = None,
        equipment_info: Optional[EquipmentInfo] = None,
        custom_tags: Optional[dict[str, str]] = None,
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
        self.exit_code: Optional[ExitCode] = None
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
        counts = ", ".join(f"{n} {status}" for status, n in self.summary["counts"].items()) or "no input"
        logger.info("Run finished: %s; exit code %d (%s)", counts, self.exit_code, self.exit_code.name)

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
        for name, path in save_images(case.record, folder, image=case.image).items():
            case.outputs[name] = str(path.relative_to(self.output_folder))


def _run_summary(cases: list[Case], exit_code: ExitCode) -> dict:
    counts = Counter(case.status.value for case in cases)
    models = [case.model for case in cases if case.model]
    return {
        "exit_code": int(exit_code),
        "exit_status": exit_code.name,
        "counts": dict(sorted(counts.items())),
        "model": models[0] if models else None,
        "cases": [case.summary() for case in cases],
    }
