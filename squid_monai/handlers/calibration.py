"""Calibration and decision threshold, computed when a model is validated (and so when it
is saved) and stored in the scorer's buffers, i.e. in every saved model."""

from __future__ import annotations

import logging

from ignite.engine import Engine, Events

from ..distributed import on_rank0_then_share
from ..scoring import CalibratedScorer, calibrate

__all__ = ["Calibrate", "StoreThreshold"]

logger = logging.getLogger(__name__)


class Calibrate:
    """Before each validation, fit the scored quantity (the logit, or the score source's) on
    un-augmented normal training images (``data_loader``): its mean and std, the normal-only
    threshold and what the source needs beyond them, into ``scorer``. Under torch.distributed
    rank 0 calibrates and the other ranks receive its result (one calibration, identical
    everywhere). The scorer scores in fp32, whatever autocast is around it."""

    def __init__(self, scorer: CalibratedScorer, data_loader, quantile: float = 0.95):
        self.scorer, self.data_loader, self.quantile = scorer, data_loader, quantile

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_STARTED, self)

    def __call__(self, engine: Engine) -> None:
        def fit():
            return calibrate(
                self.scorer, self.data_loader, engine.state.device, quantile=self.quantile
            )

        fitted = on_rank0_then_share(self.scorer, fit)
        if fitted is None:  # not rank 0
            return
        mean, std = fitted
        logger.info(
            "calibration (%s): mean %.4f std %.4f, normal-only threshold %.4f",
            getattr(self.scorer, "score_source", "normality"),
            mean,
            std,
            self.scorer.normal_threshold.item(),
        )


class StoreThreshold:
    """After each validation, store the validation-optimal threshold (``metric_key`` of
    ``engine.state.metrics``) as the scorer's decision threshold. Attach before the
    checkpoint saver so that the saved model carries it."""

    def __init__(self, scorer: CalibratedScorer, metric_key: str = "val/best_on_set/threshold"):
        self.scorer, self.metric_key = scorer, metric_key

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        value = engine.state.metrics.get(self.metric_key)
        if value is not None:
            self.scorer.threshold.fill_(float(value))
