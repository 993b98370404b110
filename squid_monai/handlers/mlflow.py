"""MLflow tracking that never stops a training, and the validation figures it records.

* :func:`tracking_uri` / :func:`artifact_location`: the default store of a bundle run, a
  SQLite database and an artifact folder under the output folder (the file store is
  deprecated in MLflow 3 and MONAI refuses ``file:`` URIs), so nothing lands in the
  current directory.
* :class:`ResilientMLFlowHandler`: MONAI's :class:`~monai.handlers.MLFlowHandler` whose
  backend failures (server unreachable, bad URI, database locked) become one warning and
  switch tracking off; the training, its checkpoints and its local figures go on.
* :class:`ValidationArtifacts`: ROC curve and input / reconstruction / difference grid of
  every validation, written under the output folder and logged to the tracking run.
* :class:`RegisterModel`: registers the best model in the MLflow registry when training
  completes (see :mod:`squid_monai.mlflow_model`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.distributed as dist
from ignite.engine import Engine, Events
from monai.handlers import MLFlowHandler
from monai.utils import evenly_divisible_all_gather

from ..distributed import is_main_process

__all__ = ["tracking_uri", "artifact_location", "sqlite_path", "ResilientMLFlowHandler", "ValidationArtifacts", "RegisterModel"]

logger = logging.getLogger(__name__)

_ENV_URI = "MLFLOW_TRACKING_URI"
_DB_NAME = "mlruns.db"
_ARTIFACT_DIR = "mlartifacts"


def tracking_uri(output_dir: str | os.PathLike) -> str:
    """``MLFLOW_TRACKING_URI`` if set, else ``sqlite:///<absolute output_dir>/mlruns.db``."""
    return os.environ.get(_ENV_URI) or _sqlite_uri(output_dir)


def _sqlite_uri(folder: str | os.PathLike) -> str:
    return f"sqlite:///{Path(folder).resolve() / _DB_NAME}"


def sqlite_path(uri: str | None) -> Path | None:
    """The database file of a ``sqlite:///`` URI (None for other stores and in-memory SQLite)."""
    if not uri or not uri.startswith("sqlite:///"):
        return None
    path = uri[len("sqlite:///"):].split("?", 1)[0]
    return Path(path) if path and path != ":memory:" else None


def artifact_location(uri: str | None) -> str | None:
    """Artifact root for new experiments of a tracking URI: ``<database folder>/mlartifacts``
    for a local SQLite store (an MLflow default would be ``./mlruns`` of the current
    directory), None (the server decides) otherwise."""
    db = sqlite_path(uri)
    return (db.parent.resolve() / _ARTIFACT_DIR).as_uri() if db is not None else None


@contextmanager
def _hidden_env(name: str):
    value = os.environ.pop(name, None)
    try:
        yield
    finally:
        if value is not None:
            os.environ[name] = value


def _unreachable(uri: str, timeout: float) -> Exception | None:
    """The connection error of an HTTP(S) tracking server that does not answer, else None
    (any HTTP answer, even an error status, means the server is there)."""
    if not uri.startswith(("http://", "https://")):
        return None
    import requests

    try:
        requests.get(uri.rstrip("/") + "/health", timeout=timeout)
    except requests.exceptions.SSLError:
        return None  # reachable; MLflow has its own TLS settings (MLFLOW_TRACKING_INSECURE_TLS ...)
    except (requests.ConnectionError, requests.Timeout) as err:
        return err
    return None


class ResilientMLFlowHandler(MLFlowHandler):
    """:class:`monai.handlers.MLFlowHandler` that degrades to a warning.

    Same arguments plus ``enabled`` (False: attaches nothing, the bundle's tracking switch),
    with three differences: an explicit ``tracking_uri`` wins over the
    ``MLFLOW_TRACKING_URI`` variable (the bundle resolves the variable itself through
    :func:`tracking_uri`, so an explicit ``--tracking_uri`` must not be overruled); with
    neither, the store is ``./mlruns.db``; and a local SQLite store gets its artifacts in
    ``mlartifacts`` beside the database unless ``artifact_location`` is given.

    Any exception of the tracking backend, in the constructor or in any event
    (start, iteration, epoch, complete, close), is reported once as a warning naming the
    URI and the error, and disables the handler: tracking stops, training goes on. An HTTP
    server is probed first (``probe_timeout`` seconds) so that a dead one costs seconds, not
    MLflow's minutes of retries. A
    failed URI is remembered for the process, so the other handlers of the same run
    (validation, registration) stay quiet instead of waiting for the same dead server.
    """

    #: tracking URIs that failed in this process -> the error
    _failed: ClassVar[dict[str, str]] = {}

    def __init__(self, tracking_uri: str | None = None, *args: Any, enabled: bool = True,
                 probe_timeout: float = 5.0, **kwargs: Any):
        self.probe_timeout, self._probed = probe_timeout, False
        env_uri = os.environ.get(_ENV_URI)
        #: the store this handler writes to
        self.tracking_uri = uri = tracking_uri or env_uri or _sqlite_uri(os.getcwd())
        self.enabled, self.disabled = bool(enabled), not enabled
        if kwargs.get("artifact_location") is None:
            kwargs["artifact_location"] = artifact_location(uri)
        if not enabled:
            self._fallback_attributes(kwargs)
            return
        try:
            if (db := sqlite_path(uri)) is not None:
                db.parent.mkdir(parents=True, exist_ok=True)  # SQLite cannot create folders
            with _hidden_env(_ENV_URI):  # MONAI would let the variable win over the argument
                super().__init__(uri, *args, **kwargs)
        except Exception as err:  # noqa: BLE001 - the point of this class
            self._fallback_attributes(kwargs)
            self.disable(err, "setting up")
            return
        if uri in self._failed:
            self.disabled = True
            logger.info("MLflow tracking to %s stays off (it failed earlier in this process: %s)",
                        uri, self._failed[uri])

    def attach(self, engine: Engine) -> None:
        if self.enabled:
            super().attach(engine)

    def _fallback_attributes(self, kwargs: dict) -> None:
        """Attributes ``attach`` and the event methods read, when MONAI's constructor failed."""
        defaults = {"iteration_log": True, "epoch_log": True, "close_on_complete": False, "artifacts": (),
                    "client": None, "cur_run": None, "experiment": None}
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
                self.tracking_uri, during, type(err).__name__, err,
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
        if not self._probed and not self.disabled:
            # MLflow retries a refused connection for minutes (7 retries, exponential backoff)
            # before failing: one quick probe first keeps a dead server from stalling training
            self._probed = True
            if (err := _unreachable(self.tracking_uri, self.probe_timeout)) is not None:
                self.disable(err, "connecting")
        self._guarded("starting the run", super().start, engine)

    def iteration_completed(self, engine: Engine) -> None:
        self._guarded("logging an iteration", super().iteration_completed, engine)

    def epoch_completed(self, engine: Engine) -> None:
        self._guarded("logging an epoch", super().epoch_completed, engine)

    def complete(self) -> None:
        self._guarded("logging the final artifacts", super().complete)

    def close(self) -> None:
        self._guarded("closing the run", super().close)

    def log_artifacts(self, paths: Sequence[str | os.PathLike], artifact_path: str | None = None) -> bool:
        """Log files to the current run; False (after one warning) if that is not possible."""
        if self.run_id is None:
            return False
        try:
            for path in paths:
                self.client.log_artifact(self.run_id, str(path), artifact_path=artifact_path)
        except Exception as err:  # noqa: BLE001
            self.disable(err, "logging artifacts")
            return False
        return True


class ValidationArtifacts:
    """At the end of each validation, a ROC curve and an input / student reconstruction /
    |difference| grid (up to ``max_images`` columns, normals then abnormals) in
    ``<output_dir>/epoch_<trainer epoch>/``, also logged to the tracking run under
    ``<artifact_path>/epoch_<n>/``.

    Attach to the validation evaluator: its ``state.epoch`` is the trainer's epoch when
    the trainer's validation handler runs it. Reads batch tensors (``decollate=False``) from
    ``engine.state.output``. Under ``torch.distributed`` attach it on every rank: scores
    and labels are gathered (a collective), only rank 0 writes and logs. A figure that
    cannot be drawn (e.g. one class only) is skipped with a warning, never an error.

    Args:
        mlflow_handler: the run to log to (a :class:`ResilientMLFlowHandler` or MONAI's);
            None or disabled: files are only written.
        output_dir: folder of the ``epoch_<n>`` folders.
        score_key, label_key, image_key, reconstruction_key: keys of the output.
        max_images: columns of the grid.
        artifact_path: folder of the figures inside the run's artifacts.
    """

    def __init__(
        self,
        mlflow_handler: MLFlowHandler | None,
        output_dir: str | os.PathLike,
        score_key: str = "score",
        label_key: str = "label",
        image_key: str = "image",
        reconstruction_key: str = "reconstruction",
        max_images: int = 8,
        artifact_path: str = "validation",
    ):
        if max_images < 1:
            raise ValueError(f"max_images must be >= 1, got {max_images}")
        self.mlflow_handler, self.output_dir = mlflow_handler, Path(output_dir)
        self.keys = (score_key, label_key, image_key, reconstruction_key)
        self.max_images, self.artifact_path = max_images, artifact_path
        self._warned: set[str] = set()
        self._reset()

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_STARTED, self._reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._collect)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._write)

    def _reset(self, engine: Engine | None = None) -> None:
        self._scores: list[torch.Tensor] = []
        self._labels: list[torch.Tensor] = []
        # (image, reconstruction) pairs kept per class, at most max_images each
        self._examples: dict[int, list[tuple[torch.Tensor, torch.Tensor]]] = {0: [], 1: []}

    def _warn_once(self, what: str, err: BaseException | str) -> None:
        if what not in self._warned:
            self._warned.add(what)
            logger.warning("validation figures: %s skipped (%s)", what, err)

    def _collect(self, engine: Engine) -> None:
        out = _batch_output(engine.state.output)
        score_key, label_key, image_key, rec_key = self.keys
        if score_key not in out or label_key not in out:
            self._warn_once("all figures", f"the evaluator output has no {score_key!r} / {label_key!r}")
            return
        score = torch.as_tensor(out[score_key]).detach().reshape(-1).float().cpu()
        label = torch.as_tensor(out[label_key]).detach().reshape(-1).long().cpu()
        self._scores.append(score)
        self._labels.append(label)
        if image_key not in out or rec_key not in out:
            return
        image, rec = out[image_key], out[rec_key]
        for cls, kept in self._examples.items():
            for i in torch.nonzero(label == cls).reshape(-1).tolist()[: self.max_images - len(kept)]:
                kept.append((image[i].detach().float().cpu(), rec[i].detach().float().cpu()))

    def _gathered(self) -> tuple[torch.Tensor, torch.Tensor]:
        scores = torch.cat(self._scores) if self._scores else torch.zeros(0)
        labels = torch.cat(self._labels) if self._labels else torch.zeros(0, dtype=torch.long)
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else "cpu"
            scores = evenly_divisible_all_gather(scores.to(device), concat=True).cpu()
            labels = evenly_divisible_all_gather(labels.to(device), concat=True).cpu()
        return scores, labels

    def _write(self, engine: Engine) -> None:
        from squid_monai import visualize  # matplotlib only when figures are drawn

        scores, labels = self._gathered()
        if not is_main_process():
            return
        folder = self.output_dir / f"epoch_{engine.state.epoch}"
        written = []
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            self._warn_once("all figures", err)
            return
        try:
            written.append(visualize.plot_roc(labels, scores, folder / "roc.png",
                                              title=f"validation ROC, epoch {engine.state.epoch}"))
        except Exception as err:  # noqa: BLE001 - a figure never stops training
            self._warn_once("ROC curve", err)
        try:
            written.append(self._grid(folder / "reconstructions.png"))
        except Exception as err:  # noqa: BLE001
            self._warn_once("reconstruction grid", err)
        written = [p for p in written if p is not None]
        if written:
            self._log(written, f"{self.artifact_path}/{folder.name}")

    def _grid(self, path: Path) -> Path | None:
        from squid_monai import visualize

        normals, abnormals = self._examples[0], self._examples[1]
        if not normals and not abnormals:
            self._warn_once("reconstruction grid", "the evaluator output has no image / reconstruction")
            return None
        n = self.max_images
        n_abn = min(len(abnormals), max(n // 2, n - len(normals)))
        n_norm = min(len(normals), n - n_abn)
        chosen = normals[:n_norm] + abnormals[:n_abn]
        image = torch.stack([c[0] for c in chosen])
        rec = torch.stack([c[1] for c in chosen]).to(image)
        return visualize.image_grid(
            [image, rec, visualize.difference_map(image, rec)],
            ["input", "reconstruction", "|difference|"],  # columns: normals first, then abnormals
            path, max_images=n, value_ranges=[(0.0, 1.0), (0.0, 1.0), None],
        )

    def _log(self, paths: list[Path], artifact_path: str) -> None:
        handler = self.mlflow_handler
        if handler is None or getattr(handler, "disabled", False):
            return
        if isinstance(handler, ResilientMLFlowHandler):
            handler.log_artifacts(paths, artifact_path)
            return
        run = getattr(handler, "cur_run", None)
        if run is None:
            return
        try:
            for p in paths:
                handler.client.log_artifact(run.info.run_id, str(p), artifact_path=artifact_path)
        except Exception as err:  # noqa: BLE001
            self._warn_once("MLflow artifact logging", err)


def _batch_output(output: Any) -> dict[str, Any]:
    """``engine.state.output`` as a dict of batch tensors (stacks a decollated list)."""
    if isinstance(output, dict):
        return output
    if isinstance(output, (list, tuple)) and output and isinstance(output[0], dict):
        keys = set.intersection(*(set(o) for o in output))
        return {k: torch.stack([torch.as_tensor(o[k]) for o in output]) for k in keys}
    return {}


class RegisterModel:
    """Registers the trained model in the MLflow registry when training completes.

    Attach to the trainer, after the handlers that save the model. With an MLflow handler
    the model is logged into that handler's run (its id is remembered during training,
    since the handler may close the run before this runs); with a URI, into a new run.
    Rank 0 only. Any failure is a warning: the model stays on disk in ``model_dir``.

    Args:
        model_dir: folder with ``model.pt`` (a SQUIDScorer state dict) and ``network.json``.
        tracking: the tracking handler of the run, or a tracking URI.
        name, alias: registered model name and the alias set on the new version.
        enabled: False makes this a no-op (the bundle's ``--register_model`` switch).
        evaluator: if given, its ``state.best_metric`` / ``best_metric_epoch`` become tags.
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
        weights: str = "model.pt",
    ):
        self.model_dir, self.name, self.alias = Path(model_dir), name, alias
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
        from squid_monai.mlflow_model import register_model

        self._remember_run(engine)
        uri, run_id = self.uri, self._run_id
        if isinstance(self.handler, ResilientMLFlowHandler):
            uri = self.handler.tracking_uri  # a new run there if tracking was switched off
        elif self.handler is not None:
            uri = getattr(self.handler.client, "tracking_uri", None) or uri
        uri = uri or tracking_uri(self.model_dir)
        if uri in ResilientMLFlowHandler._failed:
            logger.warning("model not registered: MLflow at %s failed earlier in this run (%s); the model "
                           "stays in %s", uri, ResilientMLFlowHandler._failed[uri], self.model_dir)
            return
        metadata: dict[str, Any] = {"epochs": engine.state.epoch}
        if self.evaluator is not None:
            for key in ("best_metric", "best_metric_epoch"):
                if getattr(self.evaluator.state, key, None) is not None:
                    metadata[f"validation_{key}"] = getattr(self.evaluator.state, key)
        try:
            self.version = register_model(self.model_dir, uri, self.name, self.alias, run_id=run_id,
                                          metadata=metadata, weights=self.weights)
        except Exception as err:  # noqa: BLE001 - registration never fails a finished training
            logger.warning("model not registered in MLflow at %s (%s: %s); the model stays in %s",
                           uri, type(err).__name__, err, self.model_dir)
            return
        logger.info("registered model %r version %s as models:/%s@%s", self.name, self.version.version,
                    self.name, self.alias)
