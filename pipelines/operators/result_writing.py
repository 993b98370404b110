"""SQUID results out: a DICOM text SR per scored study, PNG images and JSON summaries.

Output layout under ``output_folder``::

    run_summary.json              every case of the run, counts, the exit code
    <case_id>/squid_result.json   one study (StudyInstanceUID) or image file (its stem)
    <case_id>/input.png           the model input (S x S, after the bundle's preprocessing)
    <case_id>/reconstruction.png  SQUID's reconstruction of it
    <case_id>/heatmap.png         |input - reconstruction| over the input (colour = difference)
    <case_id>/<SOPInstanceUID>.dcm  the SR (DICOM studies only)
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from monai.deploy.core import Fragment, Operator, OperatorSpec
from monai.deploy.operators import DICOMTextSRWriterOperator, EquipmentInfo, ModelInfo
from PIL import Image
from pydicom.uid import generate_uid

from pipelines.cases import CaseStatus, ExitCode, SQUIDCase, exit_code_for

__all__ = [
    "SQUIDTextSRWriterOperator",
    "SQUIDResultWriterOperator",
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


def report_text(case: SQUIDCase) -> str:
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


class SQUIDTextSRWriterOperator(DICOMTextSRWriterOperator):
    """The SDK's ``DICOMTextSRWriterOperator``, writing one SR per scored DICOM study.

    The SDK operator writes one SR per call from the first series it receives; here each scored
    study gets its own SR in ``<output_folder>/<StudyInstanceUID>/``, with the study's Patient and
    Study modules copied (so it files with the source study), the model's name and version in the
    Contributing Equipment Sequence, and ``report_text`` as content.

    Named input:
        cases: ``List[SQUIDCase]``; scored ``dicom`` cases get an SR, the others pass unchanged.
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

    def setup(self, spec: OperatorSpec):
        spec.input("cases")
        spec.output("cases")

    def compute(self, op_input, op_output, context):
        cases = op_input.receive("cases") or []
        for case in cases:
            if case.kind == "dicom" and case.status is CaseStatus.SCORED:
                self.write_case(case)
        op_output.emit(cases, "cases")

    def write_case(self, case: SQUIDCase) -> None:
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


class SQUIDResultWriterOperator(Operator):
    """Write the PNG images and JSON summary of each case, and the run summary.

    Named input:
        cases: ``List[SQUIDCase]`` (the last operator of the graph).
    Named output: none. Files: see the module docstring. After ``compute``, ``exit_code`` holds
        the run's ``ExitCode`` and ``summary`` the run summary dict.

    Args:
        output_folder: where the files go.
        heatmap_vmax: difference mapped to the top of the colour scale; None (default) scales each
            heat map to its own maximum, recorded as ``heatmap_vmax`` in the case's JSON.
        colormap: matplotlib colour map of the heat map.
        heatmap_alpha: opacity of the heat map over the grey input.
    """

    def __init__(
        self,
        fragment: Fragment,
        *args,
        output_folder: str | Path,
        heatmap_vmax: Optional[float] = None,
        colormap: str = "inferno",
        heatmap_alpha: float = 0.6,
        **kwargs,
    ):
        self.output_folder = Path(output_folder)
        self.heatmap_vmax = heatmap_vmax
        self.colormap = colormap
        self.heatmap_alpha = float(heatmap_alpha)
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

    def write_case(self, case: SQUIDCase) -> None:
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

    def _write_images(self, case: SQUIDCase, folder: Path) -> None:
        image = _to_numpy(case.image)
        reconstruction = _to_numpy(case.reconstruction)
        difference = np.abs(image - reconstruction)
        vmax = self.heatmap_vmax or float(difference.max()) or 1.0
        case.heatmap_vmax = vmax
        _save_grey(image, folder / "input.png")
        _save_grey(reconstruction, folder / "reconstruction.png")
        _save_rgb(self._overlay(image, difference / vmax), folder / "heatmap.png")
        for name in ("input", "reconstruction", "heatmap"):
            case.outputs[name] = str((folder / f"{name}.png").relative_to(self.output_folder))

    def _overlay(self, image: np.ndarray, heat: np.ndarray) -> np.ndarray:
        from matplotlib import colormaps

        colour = colormaps[self.colormap](np.clip(heat, 0.0, 1.0))[..., :3]
        grey = np.repeat(np.clip(image, 0.0, 1.0)[..., None], 3, axis=-1)
        return (1.0 - self.heatmap_alpha) * grey + self.heatmap_alpha * colour


def _run_summary(cases: list[SQUIDCase], exit_code: ExitCode) -> dict:
    counts = Counter(case.status.value for case in cases)
    models = [case.model for case in cases if case.model]
    return {
        "exit_code": int(exit_code),
        "exit_status": exit_code.name,
        "counts": dict(sorted(counts.items())),
        "model": models[0] if models else None,
        "cases": [case.summary() for case in cases],
    }


def _to_numpy(tensor: torch.Tensor) -> np.ndarray:
    return tensor.detach().float().cpu().numpy().reshape(tensor.shape[-2:])


def _save_grey(image: np.ndarray, path: Path) -> None:
    Image.fromarray((np.clip(image, 0.0, 1.0) * 255).round().astype(np.uint8)).save(path)  # 2D uint8 -> "L"


def _save_rgb(image: np.ndarray, path: Path) -> None:
    Image.fromarray((np.clip(image, 0.0, 1.0) * 255).round().astype(np.uint8)).save(path)  # (H, W, 3) uint8 -> "RGB"
