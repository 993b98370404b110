"""SQUID scoring with the exported TorchScript model: score, decision, reconstruction."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Union

from monai.deploy.core import Fragment, Operator, OperatorSpec

from pipelines.cases import CaseStatus, SQUIDCase
from pipelines.exported_model import ExportedSQUIDModel, load_exported_model

__all__ = ["SQUIDScoringOperator"]

logger = logging.getLogger(__name__)


class SQUIDScoringOperator(Operator):
    """Score every pending case with the exported SQUID model.

    The exported model is ``SQUIDScorer`` as TorchScript, so the calibration (mean, std of the
    normal validation logits) is applied inside it: ``score = 1 - sigmoid((logit - mean) / std)``,
    higher = more anomalous. The decision is ``score > threshold`` with the card's threshold.

    Named input:
        cases: ``List[SQUIDCase]``; those with status ``pending`` carry ``image`` (1, S, S).
    Named output:
        cases: the same list; pending ones become ``scored`` with ``score``, ``logit``,
            ``threshold``, ``anomalous``, ``reconstruction`` (1, S, S) and ``model`` set (or ``error``
            if the model fails on them); the others pass unchanged.

    Args:
        model: an ``ExportedSQUIDModel`` or the path of the ``.ts`` file / its folder.
        device: where to run it when ``model`` is a path (default: CUDA if available).
    """

    def __init__(
        self,
        fragment: Fragment,
        *args,
        model: Union[ExportedSQUIDModel, str, Path],
        device: str | None = None,
        **kwargs,
    ):
        self.model = model if isinstance(model, ExportedSQUIDModel) else load_exported_model(model, device)
        super().__init__(fragment, *args, **kwargs)

    def setup(self, spec: OperatorSpec):
        spec.input("cases")
        spec.output("cases")

    def compute(self, op_input, op_output, context):
        cases = op_input.receive("cases") or []
        for case in cases:
            if case.status is CaseStatus.PENDING:
                self.score(case)
        op_output.emit(cases, "cases")

    def score(self, case: SQUIDCase) -> SQUIDCase:
        """Score one pending case in place (one image at a time: a bad one cannot spoil a batch)."""
        card = self.model.card
        expected = (1, card.image_size, card.image_size)
        if case.image is None or tuple(case.image.shape) != expected:
            shape = None if case.image is None else tuple(case.image.shape)
            return case.fail(CaseStatus.ERROR, f"model input has shape {shape}, the model expects {expected}")
        start = time.perf_counter()
        try:
            out = self.model(case.image[None])
            score, logit = float(out["score"][0]), float(out["logit"][0])
            reconstruction = out["reconstruction"][0]
        except Exception as exc:
            logger.exception("Case %s: model failed", case.case_id)
            return case.fail(CaseStatus.ERROR, f"model failed: {type(exc).__name__}: {exc}")
        case.status = CaseStatus.SCORED
        case.score, case.logit, case.threshold = score, logit, card.threshold
        case.anomalous = score > card.threshold
        case.reconstruction = reconstruction
        case.model = card.as_dict()
        logger.info(
            "Case %s: score %.4f (%s, threshold %.4f) in %.3f s",
            case.case_id,
            score,
            "anomalous" if case.anomalous else "normal",
            card.threshold,
            time.perf_counter() - start,
        )
        return case
