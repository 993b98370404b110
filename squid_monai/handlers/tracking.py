"""MLflow tracking that never stops a training.

:class:`ResilientMLFlowHandler` is MONAI's :class:`~monai.handlers.MLFlowHandler` whose
backend failures (server unreachable, bad URI, database locked) become one warning and
switch tracking off; the training, its checkpoints and its local figures go on. Where runs
are stored is :mod:`squid_monai.tracking`'s decision.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from contextlib import contextmanager
from typing import Any, ClassVar

from ignite.engine import Engine
from monai.handlers import MLFlowHandler

from ..tracking import ENV_URI, artifact_location, sqlite_path, sqlite_uri

__all__ = ["ResilientMLFlowHandler"]

logger = logging.getLogger(__name__)


@contextmanager
def _hidden_env(name: str):
    value = os.environ.pop(name, None)
    try:
        yield
    finally:
        if value is not None:
            os.environ[name] = value


@contextmanager
def _fail_fast(timeout: float):
    """MLflow's own HTTP settings for one call: no retries and a short timeout, unless the
    user set ``MLFLOW_HTTP_REQUEST_MAX_RETRIES`` / ``MLFLOW_HTTP_REQUEST_TIMEOUT`` already."""
    from mlflow.environment_variables import (
        MLFLOW_HTTP_REQUEST_MAX_RETRIES,
        MLFLOW_HTTP_REQUEST_TIMEOUT,
    )

    chosen = {
        MLFLOW_HTTP_REQUEST_MAX_RETRIES.name: "0",
        MLFLOW_HTTP_REQUEST_TIMEOUT.name: str(max(1, round(timeout))),
    }
    added = [name for name in chosen if name not in os.environ]
    os.environ.update({name: chosen[name] for name in added})
    try:
        yield
    finally:
        for name in added:
            os.environ.pop(name, None)


class ResilientMLFlowHandler(MLFlowHandler):
    """:class:`monai.handlers.MLFlowHandler` that degrades to a warning.

    Same arguments plus ``enabled`` (False: attaches nothing, the bundle's tracking switch)
    and ``datasets`` (the run's dataset lineage, logged as the run's inputs when it starts:
    :func:`squid_monai.data.lineage.run_datasets`), with three differences: an explicit
    ``tracking_uri`` wins over the
    ``MLFLOW_TRACKING_URI`` variable (the bundle resolves the variable itself through
    :func:`tracking_uri`, so an explicit ``--tracking_uri`` must not be overruled); with
    neither, the store is ``./mlruns.db``; and a local SQLite store gets its artifacts in
    ``mlartifacts`` beside the database unless ``artifact_location`` is given.

    Any exception of the tracking backend, in the constructor or in any event
    (start, iteration, epoch, complete, close), is reported once as a warning naming the
    URI and the error, and disables the handler: tracking stops, training goes on. An HTTP
    server is probed first (``probe_timeout`` seconds) so that a dead one costs seconds, not
    MLflow's minutes of retries (MLflow's own ``MLFLOW_HTTP_REQUEST_MAX_RETRIES`` and
    ``MLFLOW_HTTP_REQUEST_TIMEOUT``, set for the first contact unless the user set them). A
    failed URI is remembered for the process, so the other handlers of the same run
    (validation, registration) stay quiet instead of waiting for the same dead server.
    """

    #: tracking URIs that failed in this process -> the error
    _failed: ClassVar[dict[str, str]] = {}

    def __init__(
        self,
        tracking_uri: str | None = None,
        *args: Any,
        enabled: bool = True,
        probe_timeout: float = 5.0,
        datasets: Mapping[str, tuple[Any, int]] | None = None,
        **kwargs: Any,
    ):
        self.probe_timeout, self._probed = probe_timeout, False
        #: the run's dataset lineage, ``{split: (mlflow dataset, size)}``
        #: (:mod:`squid_monai.data.lineage`)
        self.datasets = dict(datasets or {})
        if self.datasets:  # MONAI's hook for dataset logging, called when the run starts
            kwargs.setdefault("dataset_logger", self._log_datasets)
        env_uri = os.environ.get(ENV_URI)
        #: the store this handler writes to
        self.tracking_uri = uri = tracking_uri or env_uri or sqlite_uri(os.getcwd())
        self.enabled, self.disabled = bool(enabled), not enabled
        if kwargs.get("artifact_location") is None:
            kwargs["artifact_location"] = artifact_location(uri)
        if not enabled:
            self._fallback_attributes(kwargs)
            return
        try:
            if (db := sqlite_path(uri)) is not None:
                db.parent.mkdir(parents=True, exist_ok=True)  # SQLite cannot create folders
            with _hidden_env(ENV_URI):  # MONAI would let the variable win over the argument
                super().__init__(uri, *args, **kwargs)
        except Exception as err:  # noqa: BLE001 - the point of this class
            self._fallback_attributes(kwargs)
            self.disable(err, "setting up")
            return
        if uri in self._failed:
            self.disabled = True
            logger.info(
                "MLflow tracking to %s stays off (it failed earlier in this process: %s)",
                uri,
                self._failed[uri],
            )

    def attach(self, engine: Engine) -> None:
        if self.enabled:
            super().attach(engine)

    def _log_datasets(self, _dataset_dict: Any = None) -> None:
        """Log the lineage datasets into the run, the split as the input's context and its
        size as an input tag; a dataset the run already has (same name and digest) is skipped,
        so a resumed run does not list its data twice."""
        from mlflow.entities import DatasetInput, InputTag
        from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

        from ..data.lineage import SIZE_TAG

        run = self.client.get_run(self.cur_run.info.run_id)
        known = {(i.dataset.name, i.dataset.digest) for i in run.inputs.dataset_inputs}
        inputs = [
            DatasetInput(
                dataset._to_mlflow_entity(),
                [InputTag(MLFLOW_DATASET_CONTEXT, split), InputTag(SIZE_TAG, str(size))],
            )
            for split, (dataset, size) in self.datasets.items()
            if (dataset.name, dataset.digest) not in known
        ]
        if inputs:
            self.client.log_inputs(run.info.run_id, datasets=inputs)

    def _fallback_attributes(self, kwargs: dict) -> None:
        """Attributes ``attach`` and the event methods read, when MONAI's constructor failed."""
        defaults = {
            "iteration_log": True,
            "epoch_log": True,
            "close_on_complete": False,
            "artifacts": (),
            "client": None,
            "cur_run": None,
            "experiment": None,
        }
        for name, value in defaults.items():
            if name not in self.__dict__:
                setattr(self, name, kwargs.get(name, value))

    @property
    def run_id(self) -> str | None:
        """The tracking run's id (None before ``start`` or when disabled)."""
        run = getattr(self, "cur_run", None)
        return None if self.disabled or run is None else run.info.run_id

    def disable(self, err: BaseException, during: str) -> None:
        """Warn once (per URI and process) and stop tracking."""
        first = not self.disabled and self.tracking_uri not in self._failed
        self.disabled = True
        self._failed.setdefault(self.tracking_uri, f"{type(err).__name__}: {err}")
        if first:
            logger.warning(
                "MLflow tracking to %s failed while %s (%s: %s); tracking is disabled for the rest of "
                "this run, training goes on and checkpoints and figures are still written locally.",
                self.tracking_uri,
                during,
                type(err).__name__,
                err,
            )

    def _guarded(self, during: str, fn, *args: Any) -> None:
        if self.disabled or self.tracking_uri in self._failed:  # another handler of this URI failed
            self.disabled = True
            return
        try:
            fn(*args)
        except Exception as err:  # noqa: BLE001
            self.disable(err, during)

    def start(self, engine: Engine) -> None:
        if self._probed:
            self._guarded("starting the run", super().start, engine)
            return
        # MLflow retries a refused connection for minutes (7 retries, exponential backoff)
        # before failing: the first contact runs without retries, so a dead server costs seconds
        self._probed = True
        with _fail_fast(self.probe_timeout):
            self._guarded("starting the run", super().start, engine)

    def iteration_completed(self, engine: Engine) -> None:
        self._guarded("logging an iteration", super().iteration_completed, engine)

    def epoch_completed(self, engine: Engine) -> None:
        self._guarded("logging an epoch", super().epoch_completed, engine)

    def complete(self) -> None:
        self._guarded("logging the final artifacts", super().complete)

    def close(self) -> None:
        self._guarded("closing the run", super().close)
