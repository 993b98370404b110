"""SQUID as an MLflow ``pyfunc`` model, and its round trip through the model registry.

The model wraps THE scoring path (:class:`~squid_monai.scoring.SQUIDScorer`): the same
preprocessing (:func:`squid_monai.transforms.preprocess`), weights, calibration and
threshold as the bundle, so ``models:/squid@champion`` gives the bundle's score. It is a
pyfunc model rather than an ``mlflow.pytorch`` one because MLflow 3 serialises PyTorch
models with ``torch.export`` by default, which loses the preprocessing and the decision.

The ``squid_monai`` package is shipped inside the model (``code_paths``), so it loads in a
fresh process with no access to this repository or to a package index.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Mapping
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import torch
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature
from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema

__all__ = ["SQUIDPyfuncModel", "save_pyfunc", "register_model", "load_registered", "DEFAULT_BATCH_SIZE"]

#: images scored per forward pass when ``params={"batch_size": ...}`` is not given
DEFAULT_BATCH_SIZE = 16
#: folder of the model inside the run's artifacts
MODEL_ARTIFACT_PATH = "model"
#: distributions the scoring path imports (pinned to the versions of the logging process)
_RUNTIME_DISTRIBUTIONS = ("mlflow", "torch", "monai", "numpy", "pandas", "pillow", "pydicom", "nibabel",
                          "cloudpickle")
_PENDING = "PENDING_REGISTRATION"

SIGNATURE = ModelSignature(
    # no input schema: the model takes a DataFrame of file paths or a (B, 1, H, W) array,
    # and one MLflow schema cannot describe both (it would reject the other)
    inputs=None,
    outputs=Schema([
        ColSpec("double", "score"),
        ColSpec("double", "logit"),
        ColSpec("long", "decision"),
        ColSpec("string", "error", required=False),
    ]),
    params=ParamSchema([ParamSpec("batch_size", "long", DEFAULT_BATCH_SIZE)]),
)


class SQUIDPyfuncModel(mlflow.pyfunc.PythonModel):
    """``predict`` input: a DataFrame with an ``image`` column of file paths (PNG, JPEG,
    DICOM ... as :func:`squid_monai.transforms.preprocess` reads them), or an array
    (B, 1, H, W) already preprocessed to the model's image size.

    Output: a DataFrame with ``score`` (higher = more anomalous), ``logit``, ``decision``
    (1 = abnormal, 0 = normal, -1 = not scored) and ``error`` (why a file could not be
    read, None otherwise; the other rows are still scored).

    ``model_config={"device": "cuda"}`` at load time picks the device (default: CUDA if
    available); ``params={"batch_size": n}`` at predict time the batch size.
    """

    def load_context(self, context) -> None:
        from squid_monai.scoring import load_scorer

        recipe = json.loads(Path(context.artifacts["network"]).read_text())
        config = dict(context.model_config or {})
        self.device = torch.device(config.get("device") or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.scorer = load_scorer(context.artifacts["weights"], recipe, map_location=self.device)
        self.image_size = _image_size(recipe)

    def predict(self, context, model_input, params=None) -> pd.DataFrame:
        batch_size = int((params or {}).get("batch_size") or DEFAULT_BATCH_SIZE)
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if isinstance(model_input, pd.DataFrame):
            images, errors = self._read(model_input)
            index = model_input.index
        else:
            images = self._check_array(model_input)
            errors = [None] * len(images)
            index = pd.RangeIndex(len(images))
        n = len(errors)
        score, logit = np.full(n, np.nan), np.full(n, np.nan)
        decision = np.full(n, -1, dtype=np.int64)
        rows = [i for i, e in enumerate(errors) if e is None]
        for start in range(0, len(rows), batch_size):
            chunk = rows[start:start + batch_size]
            batch = torch.stack([torch.as_tensor(images[i]) for i in chunk]).float().to(self.device)
            out = self.scorer(batch)
            score[chunk] = out["score"].double().cpu().numpy()
            logit[chunk] = out["logit"].double().cpu().numpy()
            decision[chunk] = self.scorer.decide(out["score"]).cpu().numpy()
        return pd.DataFrame({"score": score, "logit": logit, "decision": decision,
                             "error": pd.Series(errors, dtype=object).to_numpy()}, index=index)

    def _read(self, frame: pd.DataFrame) -> tuple[list[torch.Tensor | None], list[str | None]]:
        from squid_monai.transforms import RadiographError, preprocess

        if "image" not in frame.columns:
            raise ValueError(f"input DataFrame needs an 'image' column of file paths, got columns "
                             f"{list(frame.columns)}")
        images: list[torch.Tensor | None] = []
        errors: list[str | None] = []
        for path in frame["image"]:
            try:
                images.append(preprocess(str(path), self.image_size))
                errors.append(None)
            except RadiographError as err:
                images.append(None)
                errors.append(str(err))
        return images, errors

    def _check_array(self, data: Any) -> torch.Tensor:
        array = torch.as_tensor(np.asarray(data, dtype=np.float32))
        if array.ndim != 4 or array.shape[1] != 1 or tuple(array.shape[2:]) != self.image_size:
            raise ValueError(
                f"array input must be preprocessed images of shape (B, 1, {self.image_size[0]}, "
                f"{self.image_size[1]}), got {tuple(array.shape)}; pass a DataFrame with an 'image' "
                "column of file paths to have them preprocessed"
            )
        return array


def _requirements() -> list[str]:
    """Pins of the runtime distributions (public version only: ``2.13.0+cpu`` -> ``2.13.0``)."""
    pins = []
    for dist in _RUNTIME_DISTRIBUTIONS:
        try:
            pins.append(f"{dist}=={importlib_metadata.version(dist).split('+', 1)[0]}")
        except importlib_metadata.PackageNotFoundError:
            pins.append(dist)
    return pins


def _model_files(model_dir: str | os.PathLike, weights: str) -> tuple[Path, Path]:
    model_dir = Path(model_dir)
    files = model_dir / weights, model_dir / "network.json"
    for f in files:
        if not f.is_file():
            raise FileNotFoundError(f"{f}: missing; a SQUID model folder holds {weights} and network.json")
    return files


def _describe(weights: Path, network: Path) -> tuple[dict[str, str], tuple[int, int]]:
    """Tags (calibration, thresholds, recipe) and image size of a saved model; loading it
    also validates the files before anything is logged."""
    from squid_monai.scoring import load_scorer

    scorer = load_scorer(weights, network)
    recipe = json.loads(network.read_text())
    tags = {k: f"{getattr(scorer, k).item():.9g}" for k in ("threshold", "normal_threshold")}
    tags.update(calibration_mean=f"{scorer.mean.item():.9g}", calibration_std=f"{scorer.std.item():.9g}",
                preset=str(recipe["preset"]), network_overrides=json.dumps(recipe.get("overrides", {})))
    return tags, _image_size(recipe)


def _image_size(recipe: Mapping[str, Any]) -> tuple[int, int]:
    """(H, W) the network of a ``network.json`` recipe was built for."""
    from squid_monai.networks import get_config

    size = get_config(recipe["preset"], **recipe.get("overrides", {}))["image_size"]
    return (int(size[0]), int(size[1])) if isinstance(size, (list, tuple)) else (int(size), int(size))


def save_pyfunc(path: str | os.PathLike, model_dir: str | os.PathLike, weights: str = "model.pt",
                metadata: Mapping[str, Any] | None = None) -> Path:
    """Write the MLflow model of ``model_dir`` (``model.pt`` + ``network.json``) to ``path``
    (which must not exist or be empty); ``mlflow models serve -m <path>`` serves it."""
    weights_path, network_path = _model_files(model_dir, weights)
    tags, size = _describe(weights_path, network_path)
    return _save(Path(path), weights_path, network_path, {**tags, **_strings(metadata)}, size)


def _strings(metadata: Mapping[str, Any] | None) -> dict[str, str]:
    return {str(k): str(v) for k, v in (metadata or {}).items()}


def _save(path: Path, weights: Path, network: Path, metadata: dict[str, str], image_size: tuple[int, int]) -> Path:
    import squid_monai

    mlflow.pyfunc.save_model(
        path=str(path),
        python_model=SQUIDPyfuncModel(),
        artifacts={"weights": str(weights), "network": str(network)},
        code_paths=[str(Path(squid_monai.__file__).parent)],
        pip_requirements=_requirements(),
        signature=SIGNATURE,
        # documents the array input for serving ({"inputs": ...}); a DataFrame example would need a file
        input_example=np.zeros((1, 1, *image_size), dtype=np.float32),
        metadata=metadata,
    )
    for cache in path.rglob("__pycache__"):  # copied with the package, useless and version-bound
        shutil.rmtree(cache, ignore_errors=True)
    return path


def _client(tracking_uri: str) -> mlflow.MlflowClient:
    from squid_monai.handlers.mlflow import sqlite_path

    if (db := sqlite_path(tracking_uri)) is not None:
        db.parent.mkdir(parents=True, exist_ok=True)
    return mlflow.MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)


def _new_run(client: mlflow.MlflowClient, tracking_uri: str, experiment_name: str, run_name: str) -> str:
    from squid_monai.handlers.mlflow import artifact_location

    experiment = client.get_experiment_by_name(experiment_name)
    experiment_id = (experiment.experiment_id if experiment is not None else
                     client.create_experiment(experiment_name, artifact_location=artifact_location(tracking_uri)))
    return client.create_run(experiment_id, run_name=run_name).info.run_id


def _await_ready(client: mlflow.MlflowClient, version: ModelVersion, timeout_s: float) -> ModelVersion:
    """A remote registry may copy the files asynchronously: wait until the version is usable."""
    deadline = time.monotonic() + timeout_s
    while version.status == _PENDING and time.monotonic() < deadline:
        time.sleep(1.0)
        version = client.get_model_version(version.name, version.version)
    if version.status != "READY":
        raise MlflowException(f"model version {version.name}/{version.version} is {version.status}: "
                              f"{version.status_message}")
    return version


def register_model(
    model_dir: str | os.PathLike,
    tracking_uri: str,
    name: str = "squid",
    alias: str = "champion",
    run_id: str | None = None,
    metadata: Mapping[str, Any] | None = None,
    weights: str = "model.pt",
    experiment_name: str = "squid",
    await_registration_s: float = 300.0,
) -> ModelVersion:
    """Log ``model_dir`` as a pyfunc model into run ``run_id`` (or a new run of
    ``experiment_name``), register it as a new version of ``name``, point ``alias`` at it
    and tag the version with its calibration, thresholds, recipe and ``metadata``.

    Uses an explicit client, never MLflow's global tracking URI (``mlflow.set_tracking_uri``
    also sets ``MLFLOW_TRACKING_URI``, which would redirect every later MONAI handler).
    Returns the :class:`~mlflow.entities.model_registry.ModelVersion`.
    """
    weights_path, network_path = _model_files(model_dir, weights)
    tags, size = _describe(weights_path, network_path)
    tags.update(_strings(metadata))
    client = _client(tracking_uri)
    created = run_id is None
    if created:
        run_id = _new_run(client, tracking_uri, experiment_name, run_name=f"register_{name}")
    try:
        with tempfile.TemporaryDirectory() as tmp:
            local = _save(Path(tmp) / MODEL_ARTIFACT_PATH, weights_path, network_path, tags, size)
            client.log_artifacts(run_id, str(local), artifact_path=MODEL_ARTIFACT_PATH)
    finally:
        if created:
            client.set_terminated(run_id)
    try:
        client.get_registered_model(name)
    except MlflowException:
        client.create_registered_model(name, description="SQUID anomaly scorer of chest radiographs "
                                                         "(score > threshold = abnormal)")
    source = f"{client.get_run(run_id).info.artifact_uri.rstrip('/')}/{MODEL_ARTIFACT_PATH}"
    version = client.create_model_version(name, source, run_id=run_id, tags=tags)
    version = _await_ready(client, version, await_registration_s)
    client.set_registered_model_alias(name, alias, version.version)
    return client.get_model_version(name, version.version)


def load_registered(name: str = "squid", alias: str = "champion", tracking_uri: str | None = None,
                    model_config: Mapping[str, Any] | None = None) -> mlflow.pyfunc.PyFuncModel:
    """Load ``models:/<name>@<alias>`` from the registry at ``tracking_uri`` (default: MLflow's
    own resolution, e.g. ``MLFLOW_TRACKING_URI``) without changing MLflow's global URIs."""
    uri = f"models:/{name}@{alias}"
    if tracking_uri is not None:
        # MLflow resolves models:/ URIs with its global registry URI only (download_artifacts'
        # registry_uri is ignored there): resolve the alias with an explicit client instead
        from squid_monai.handlers.mlflow import sqlite_path

        if (db := sqlite_path(tracking_uri)) is not None and not db.is_file():
            raise FileNotFoundError(f"{db}: no MLflow store there (tracking URI {tracking_uri})")
        client = _client(tracking_uri)
        version = client.get_model_version_by_alias(name, alias)
        uri = mlflow.artifacts.download_artifacts(
            artifact_uri=client.get_model_version_download_uri(name, version.version),
            tracking_uri=tracking_uri, dst_path=tempfile.mkdtemp(prefix="squid_model_"))
    # the folder is kept: the model's code may be imported lazily from it after loading
    return mlflow.pyfunc.load_model(uri, model_config=dict(model_config or {}))
