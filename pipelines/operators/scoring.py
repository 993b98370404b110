"""SQUID scoring with the exported TorchScript model: a thin adapter over
``squid_monai.scoring.score_images`` (the one scoring path: score, decision, difference)."""

from __future__ import annotations

import logging
import time
from pathlib import Path

from monai.deploy.core import Fragment, Operator

from pipelines.cases import Case, CaseStatus
from pipelines.exported_model import ExportedModel, load_exported_model
from pipelines.heatmap import ExportedHeatmap
from pipelines.operators.case_stage import CaseStage
from squid_monai.scoring import score_images

__all__ = ["ScoringOperator"]

logger = logging.getLogger(__name__)


class ScoringOperator(CaseStage, Operator):
    """Score every pending case with the exported model.

    The exported model is a family's scorer as TorchScript, so the calibration (mean, std of the
    normal validation logits) is applied inside it: ``score = 1 - sigmoid((logit - mean) / std)``,
    higher = more anomalous. The decision is ``squid_monai.scoring.decide`` (``score > threshold``)
    with the card's threshold.

    Named input:
        cases: ``List[Case]``; those with status ``pending`` carry ``image`` (1, S, S).
    Named output:
        cases: the same list; pending ones become ``scored`` with their ``record``
            (``squid_monai.scoring.ScoreRecord``: score, logit, decision, threshold, reconstruction,
            difference, and the heat map of :mod:`pipelines.heatmap`), ``score``, ``logit``,
            ``threshold``, ``anomalous`` and ``model`` set (or
            ``error`` if the model fails on them); the others pass unchanged.

    Args:
        model: an ``ExportedModel`` or the path of the ``.ts`` file / its folder.
        device: where to run it when ``model`` is a path (default: CUDA if available).
    """

    def __init__(
        self,
        fragment: Fragment,
        *args,
        model: ExportedModel | str | Path,
        device: str | None = None,
        **kwargs,
    ):
        self.model = (
            model if isinstance(model, ExportedModel) else load_exported_model(model, device)
        )
        self.heatmap = ExportedHeatmap(self.model.module)
        super().__init__(fragment, *args, **kwargs)

    def wants(self, case: Case) -> bool:
        return case.status is CaseStatus.PENDING

    def handle(self, case: Case) -> None:
        self.score(case)

    def score(self, case: Case) -> Case:
        """Score one pending case in place (one image at a time: a bad one cannot spoil a batch)."""
        card = self.model.card
        expected = (1, card.image_size, card.image_size)
        if case.image is None or tuple(case.image.shape) != expected:
            shape = None if case.image is None else tuple(case.image.shape)
            return case.fail(
                CaseStatus.ERROR, f"model input has shape {shape}, the model expects {expected}"
            )
        start = time.perf_counter()
        try:
            (record,) = score_images(
                self.model,
                case.image[None],
                [case.case_id],
                threshold=card.threshold,
                explainer=self.heatmap,
            )
        except Exception as exc:
            logger.exception("Case %s: model failed", case.case_id)
            return case.fail(CaseStatus.ERROR, f"model failed: {type(exc).__name__}: {exc}")
        case.status = CaseStatus.SCORED
        case.record = record
        case.score, case.logit, case.threshold = record.score, record.logit, record.threshold
        case.anomalous = record.decision == 1
        case.domain = record.domain
        if record.out_of_domain:
            logger.warning("Case %s: %s; its score means nothing", case.case_id, record.domain)
        case.model = {**card.to_dict(), "card_source": card.source, "heatmap": self.heatmap.kind}
        logger.info(
            "Case %s: score %.4f (%s, threshold %.4f) in %.3f s",
            case.case_id,
            record.score,
            "anomalous" if case.anomalous else "normal",
            card.threshold,
            time.perf_counter() - start,
        )
        return case
