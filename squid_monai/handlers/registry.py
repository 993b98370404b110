"""Registration of the trained model in the MLflow model registry when training completes
(the model itself: :mod:`squid_monai.mlflow_model`)."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from ignite.engine import Engine, Events
from monai.handlers import MLFlowHandler

from ..artifact import WEIGHTS_FILE
from ..distributed import is_main_process
from ..mlflow_model import register_model
from ..tracking import tracking_uri
from .tracking import ResilientMLFlowHandler

__all__ = ["RegisterModel"]

logger = logging.getLogger(__name__)


class RegisterModel:
    """Registers the trained model in the MLflow registry when training completes.

    Attach to the trainer, after the handlers that save the model. With an MLflow handler
    the model is logged into that handler's run (its id is remembered during training,
    since the handler may close the run before this runs); with a URI, into a new run.
    Rank 0 only. Any failure is a warning: the model stays on disk in ``model_dir``.

    Args:
        model_dir: folder with ``model.pt`` (a CalibratedScorer state dict) and ``network.json``.
        tracking: the tracking handler of the run, or a tracking URI.
        name, alias: registered model name and its champion alias: the new version gets it
            when its validation metric (:meth:`metric`) is at least the champion's, else
            ``challenger_alias`` (:mod:`squid_monai.promotion`; the run's tags say why).
        enabled: False makes this a no-op (the bundle's ``--register_model`` switch).
        evaluator: if given, its ``state.best_metric`` / ``best_metric_epoch`` become tags and
            its key metric at the best epoch the gate's metric.
        weights: file name of the weights in ``model_dir``.
    """

    def __init__(
        self,
        model_dir: str | os.PathLike,
        tracking: MLFlowHandler | str | None = None,
        name: str = "squid",
        alias: str = "champion",
        enabled: bool = True,
        evaluator: Engine | None = None,
        weights: str = WEIGHTS_FILE,
        challenger_alias: str = "challenger",
    ):
        self.model_dir, self.name, self.alias = Path(model_dir), name, alias
        self.challenger_alias = challenger_alias
        self.enabled, self.evaluator, self.weights = enabled, evaluator, weights
        self.handler = tracking if isinstance(tracking, MLFlowHandler) else None
        self.uri = tracking if isinstance(tracking, str) else None
        self._run_id: str | None = None
        self.version = None

    def attach(self, engine: Engine) -> None:
        if not self.enabled:
            return
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._remember_run)
        engine.add_event_handler(Events.COMPLETED, self)

    def _remember_run(self, engine: Engine) -> None:
        run = getattr(self.handler, "cur_run", None)
        if run is not None:
            self._run_id = run.info.run_id

    def __call__(self, engine: Engine) -> None:
        if not self.enabled or not is_main_process():
            return
        self._remember_run(engine)
        uri, run_id = self.uri, self._run_id
        if isinstance(self.handler, ResilientMLFlowHandler):
            uri = self.handler.tracking_uri  # a new run there if tracking was switched off
        elif self.handler is not None:
            uri = getattr(self.handler.client, "tracking_uri", None) or uri
        uri = uri or tracking_uri(self.model_dir)
        if uri in ResilientMLFlowHandler._failed:
            logger.warning(
                "model not registered: MLflow at %s failed earlier in this run (%s); the model "
                "stays in %s",
                uri,
                ResilientMLFlowHandler._failed[uri],
                self.model_dir,
            )
            return
        metadata: dict[str, Any] = {"epochs": engine.state.epoch}
        if self.evaluator is not None:
            for key in ("best_metric", "best_metric_epoch"):
                if getattr(self.evaluator.state, key, None) is not None:
                    metadata[f"validation_{key}"] = getattr(self.evaluator.state, key)
        try:
            self.version = register_model(
                self.model_dir,
                uri,
                self.name,
                self.alias,
                run_id=run_id,
                metadata=metadata,
                weights=self.weights,
                metric=self.metric(),
                challenger_alias=self.challenger_alias,
            )
        except Exception as err:  # noqa: BLE001 - registration never fails a finished training
            logger.warning(
                "model not registered in MLflow at %s (%s: %s); the model stays in %s",
                uri,
                type(err).__name__,
                err,
                self.model_dir,
            )
            return
        tags = self.version.tags
        logger.info(
            "registered model %r version %s as models:/%s@%s (%s)",
            self.name,
            self.version.version,
            self.name,
            tags.get("promotion"),
            tags.get("promotion_reason"),
        )

    def metric(self) -> tuple[str, float] | None:
        """The gate's validation metric: the evaluator's key metric at its best epoch, the
        epoch whose weights ``model_dir`` holds (None without an evaluator or a value)."""
        state = getattr(self.evaluator, "state", None)
        best = getattr(state, "best_metric", None)
        if best is None or getattr(state, "best_metric_epoch", -1) == -1:  # never evaluated
            return None
        return str(getattr(state, "key_metric_name", None) or "best_metric"), float(best)
