"""SQUID as an MLflow ``pyfunc`` model, and its round trip through the model registry.

The model wraps THE scoring path (:class:`~squid_monai.scoring.CalibratedScorer`): the same
preprocessing (:func:`squid_monai.transforms.preprocess`), weights, calibration and
threshold as the bundle, so ``models:/squid@champion`` gives the bundle's score. It is a
pyfunc model rather than an ``mlflow.pytorch`` one because MLflow 3 serialises PyTorch
models with ``torch.export`` by default, which loses the preprocessing and the decision.

The ``squid_monai`` package is shipped inside the model (``code_paths``), so it loads in a
fresh process with no access to this repository; its third-party imports are the model's pip
requirements, so ``mlflow models serve`` also works in MLflow's isolated environments
(``--env-manager virtualenv``). :func:`register_model` logs the model with
``mlflow.pyfunc.log_model(..., registered_model_name=...)``, its validation metric linked to
the logged model, and moves the ``champion`` alias only through the gate of
:mod:`squid_monai.promotion`. Served
(``mlflow models serve``), it takes base64-encoded image files and never a server path it
was not configured to read (:mod:`squid_monai.serving`).
"""

from __future__ import annotations

import base64
import io
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
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

from .artifact import (
    PREPROCESSING_FILE,
    RECIPE_FILE,
    WEIGHTS_FILE,
    ModelCard,
    Recipe,
    trained_intensity,
)
from .promotion import Promotion, metric_tags, promote
from .serving import IMAGE_COLUMN, PATH_COLUMN, ServingConfig
from .tracking import ENV_URI, artifact_location, mlflow_client, sqlite_path

__all__ = ["PyfuncModel", "save_pyfunc", "register_model", "load_registered", "DEFAULT_BATCH_SIZE"]

logger = logging.getLogger(__name__)

#: images scored per forward pass when ``params={"batch_size": ...}`` is not given
DEFAULT_BATCH_SIZE = 16
#: folder of the model inside the run's artifacts
MODEL_ARTIFACT_PATH = "model"
#: distributions the scoring path imports at module level, with the pydicom plugins that decode
#: compressed DICOM requests (pinned to the versions of the logging process); a test checks the
#: list against the imports of the modules a served model loads
RUNTIME_DISTRIBUTIONS = (
    "mlflow",
    "torch",
    "pytorch-ignite",
    "monai",
    "numpy",
    "pandas",
    "pillow",
    "pydicom",
    "pylibjpeg",
    "pylibjpeg-libjpeg",
    "pylibjpeg-openjpeg",
    "nibabel",
    "cloudpickle",
    "scipy",  # the AnatPaste family's lung field and density (scipy, scikit-image, scikit-learn)
    "scikit-image",
    "scikit-learn",
)

SIGNATURE = ModelSignature(
    # one row per image, in one of the two columns (squid_monai.serving); MLflow refuses other
    # input, so preprocessed arrays go through PyfuncModel.predict_array instead
    inputs=Schema(
        [
            ColSpec("string", IMAGE_COLUMN, required=False),
            ColSpec("string", PATH_COLUMN, required=False),
        ]
    ),
    # an unreadable image has no score, logit or decision (null), and an error; domain: the
    # domain guard's verdict (squid_monai.scoring.domain), "OUT OF DOMAIN: ..." when it fires
    outputs=Schema(
        [
            ColSpec("double", "score", required=False),
            ColSpec("double", "logit", required=False),
            ColSpec("long", "decision", required=False),
            ColSpec("string", "error", required=False),
            ColSpec("string", "domain", required=False),
            ColSpec("double", "domain_distance", required=False),
        ]
    ),
    params=ParamSchema([ParamSpec("batch_size", "long", DEFAULT_BATCH_SIZE)]),
)


class PyfuncModel(mlflow.pyfunc.PythonModel):
    """``predict`` input: a DataFrame, one row per image, with an ``image`` column of
    base64-encoded file contents (PNG, JPEG, DICOM) or a ``path`` column of file paths
    (:mod:`squid_monai.serving`: which paths are read, and the request limits). Images
    already preprocessed to (B, 1, S, S): :meth:`predict_array`, in-process
    (``model.unwrap_python_model().predict_array(x)``).

    Output, one row per input row: ``score`` (higher = more anomalous), ``logit``,
    ``decision`` (1 = abnormal, 0 = normal) and ``error`` (``"row <n>: <why it could not be
    read>"``); ``None`` where there is no value (JSON ``null`` when served): an unreadable
    image has an error and no score, the other rows are still scored.

    ``model_config`` (saved with :func:`save_pyfunc`, or given at load time): ``device``
    (default: CUDA if available) and the :class:`~squid_monai.serving.ServingConfig` keys
    ``allowed_root``, ``max_images``, ``max_request_bytes``, ``max_pixels``;
    ``params={"batch_size": n}`` at predict time the batch size.
    """

    def load_context(self, context) -> None:
        from squid_monai.artifact import Recipe
        from squid_monai.loading import image_size, load_scorer
        from squid_monai.serving import ServingConfig, quiet_scoring_server

        quiet_scoring_server()  # in a scoring server, no answer quotes the request
        recipe = Recipe.load(context.artifacts["network"])
        config = dict(context.model_config or {})
        self.serving = ServingConfig.of(
            config
        )  # a bad config stops the server at start, not at a request
        self.device = torch.device(
            config.get("device") or ("cuda" if torch.cuda.is_available() else "cpu")
        )
        # an export shipped beside the weights (see _export_artifacts) is used on a CPU
        self.scorer = load_scorer(
            context.artifacts["weights"], recipe, map_location=self.device, backend="auto"
        )
        self.image_size = image_size(recipe)
        # the intensity rule the model was trained with: its preprocessing.json sits beside the
        # weights among the model's artifacts (models logged without one: the default rule)
        self.intensity = trained_intensity(Path(context.artifacts["weights"]).parent)

    def predict(self, context, model_input, params=None) -> pd.DataFrame:
        from squid_monai.scoring import read_image
        from squid_monai.serving import (
            RequestRefused,
            check_request,
            request_sources,
            serving_environment,
        )

        batch_size = _batch_size(params)
        if not isinstance(model_input, pd.DataFrame):
            raise RequestRefused(
                f"input must be a DataFrame with an '{IMAGE_COLUMN}' or '{PATH_COLUMN}' column, got "
                f"{type(model_input).__name__}; preprocessed arrays: unwrap_python_model().predict_array"
            )
        check_request(model_input, self.serving)
        names, read = [], []
        for name, source, reason in request_sources(
            model_input, self.serving, served=serving_environment()
        ):
            names.append(name)
            read.append(
                (None, reason)
                if reason is not None
                else read_image(
                    source,
                    self.image_size,
                    intensity=self.intensity,
                    max_pixels=self.serving.max_pixels,
                )
            )
        return self._score(names, read, batch_size, model_input.index)

    def predict_array(self, images: Any, batch_size: int = DEFAULT_BATCH_SIZE) -> pd.DataFrame:
        """Score images already preprocessed to (B, 1, S, S) in [0, 1] (the in-process route
        the request signature leaves out); the same output as :meth:`predict`."""
        array = self._check_array(images)
        return self._score(
            [f"#{i}" for i in range(len(array))],
            [(image, None) for image in array],
            _batch_size({"batch_size": batch_size}),
            pd.RangeIndex(len(array)),
        )

    def _score(
        self, names: list[str], read: list, batch_size: int, index: pd.Index
    ) -> pd.DataFrame:
        from squid_monai.scoring import ScoreRecord, score_images

        records: list = [
            ScoreRecord.unreadable(name, f"{name}: {error}") if error else None
            for name, (_, error) in zip(names, read)
        ]
        rows = [i for i, (_, error) in enumerate(read) if error is None]
        for start in range(0, len(rows), batch_size):
            chunk = rows[start : start + batch_size]
            batch = (
                torch.stack([torch.as_tensor(read[i][0]) for i in chunk]).float().to(self.device)
            )
            for i, record in zip(
                chunk,
                score_images(
                    self.scorer, batch, [names[i] for i in chunk], per_image=False, pixels=False
                ),
            ):
                records[i] = record
        return result_frame(records, index)

    def _check_array(self, data: Any) -> torch.Tensor:
        array = torch.as_tensor(np.asarray(data, dtype=np.float32))
        size = self.image_size
        if array.ndim != 4 or array.shape[1] != 1 or tuple(array.shape[2:]) != (size, size):
            raise ValueError(
                f"array input must be preprocessed images of shape (B, 1, {size}, {size}), got "
                f"{tuple(array.shape)}; pass image files (an '{IMAGE_COLUMN}' or '{PATH_COLUMN}' column) to "
                "predict to have them preprocessed"
            )
        return array


def result_frame(records: list, index: pd.Index) -> pd.DataFrame:
    """The output columns as objects, ``None`` where a value is missing: MLflow's scoring
    server writes ``None`` as JSON ``null``, but a float column's NaN as a bare ``NaN``,
    which strict JSON parsers refuse."""
    columns = {
        key: [getattr(r, key) for r in records]
        for key in ("score", "logit", "decision", "error", "domain", "domain_distance")
    }
    return pd.DataFrame(
        {key: pd.Series(values, index=index, dtype=object) for key, values in columns.items()}
    )


def _batch_size(params: Mapping[str, Any] | None) -> int:
    batch_size = (params or {}).get("batch_size")
    batch_size = DEFAULT_BATCH_SIZE if batch_size is None else batch_size
    if (
        isinstance(batch_size, bool)
        or not isinstance(batch_size, (int, np.integer))
        or batch_size < 1
    ):
        from squid_monai.serving import RequestRefused

        raise RequestRefused(f"params batch_size must be an integer >= 1, got {batch_size!r}")
    return int(batch_size)


def _requirements(cpu_format: str = "pytorch") -> list[str]:
    """Pins of the runtime distributions (public version only: ``2.13.0+cpu`` -> ``2.13.0``),
    with the runtime of the shipped export, if any."""
    from squid_monai.scoring.runtimes import RUNTIMES

    pins = []
    runtime = [RUNTIMES[cpu_format]] if cpu_format in RUNTIMES else []
    for dist in (*RUNTIME_DISTRIBUTIONS, *runtime):
        try:
            pins.append(f"{dist}=={importlib_metadata.version(dist).split('+', 1)[0]}")
        except importlib_metadata.PackageNotFoundError:
            pins.append(dist)
    return pins


def _model_files(model_dir: str | os.PathLike, weights: str) -> tuple[Path, Path]:
    model_dir = Path(model_dir)
    files = model_dir / weights, model_dir / RECIPE_FILE
    for f in files:
        if not f.is_file():
            raise FileNotFoundError(
                f"{f}: missing; a trained model folder holds {weights} and {RECIPE_FILE}"
            )
    return files


def _describe(weights: Path, network: Path) -> tuple[dict[str, str], int, dict[str, Path]]:
    """Tags (calibration, thresholds, recipe, scoring format), image size and export files
    of a saved model; loading it also validates the files before anything is logged."""
    from squid_monai.loading import image_size, load_scorer

    recipe = Recipe.load(network)
    scorer = load_scorer(weights, recipe, backend="auto")
    card = ModelCard.from_scorer(
        scorer, image_size(recipe), domain=recipe.domain, family=recipe.family
    )
    tags = {k: f"{getattr(card, k):.9g}" for k in ("threshold", "normal_threshold")}
    tags.update(
        calibration_mean=f"{card.mean:.9g}",
        calibration_std=f"{card.std:.9g}",
        family=recipe.family,
        preset=recipe.preset,
        network_overrides=json.dumps(dict(recipe.overrides)),
        cpu_format=getattr(scorer, "format", "pytorch"),
        domain=card.domain["name"],
    )
    return tags, image_size(recipe), _export_artifacts(scorer)


def _export_artifacts(scorer) -> dict[str, Path]:
    """The files of the export that ``load_scorer(backend="auto")`` picked for this model
    folder (the fastest one meeting the parity contract, BENCHMARKS.md), as model artifacts:
    they land beside the weights, where the served model's ``load_scorer`` finds them again.
    None for a PyTorch scorer."""
    if getattr(scorer, "path", None) is None:
        return {}
    from squid_monai.scoring.runtimes import export_files

    return {f"export_{i}": path for i, path in enumerate(export_files(scorer.path))}


#: the class's earlier name: MLflow models saved before the rename pickled it by this name
SQUIDPyfuncModel = PyfuncModel


def save_pyfunc(
    path: str | os.PathLike,
    model_dir: str | os.PathLike,
    weights: str = WEIGHTS_FILE,
    metadata: Mapping[str, Any] | None = None,
    model_config: Mapping[str, Any] | None = None,
) -> Path:
    """Write the MLflow model of ``model_dir`` (``model.pt`` + ``network.json``) to ``path``
    (which must not exist or be empty); ``mlflow models serve -m <path>`` serves it.
    ``model_config``: the model's default configuration (:class:`PyfuncModel`), e.g.
    ``{"allowed_root": "/data/xrays", "max_images": 16}``."""
    weights_path, network_path = _model_files(model_dir, weights)
    tags, size, exports = _describe(weights_path, network_path)
    return _save(
        Path(path),
        weights_path,
        network_path,
        {**tags, **_strings(metadata)},
        size,
        model_config,
        exports,
    )


def _strings(metadata: Mapping[str, Any] | None) -> dict[str, str]:
    return {str(k): str(v) for k, v in (metadata or {}).items()}


def _model_arguments(
    weights: Path,
    network: Path,
    metadata: dict[str, str],
    image_size: int,
    model_config: Mapping[str, Any] | None,
    exports: Mapping[str, Path],
    code: Path,
) -> dict:
    """What ``mlflow.pyfunc.save_model`` and ``log_model`` both take: the files, the package
    copy ``code``, requirements, signature, example, metadata and the checked model config."""
    # checked here (a typo fails now, not when a server starts), and saved with every key
    config = {
        "device": dict(model_config or {}).get("device"),
        **ServingConfig.of(model_config, resolve_root=False).as_model_config(),
    }
    artifacts = {"weights": str(weights), "network": str(network)}
    if (record := weights.with_name(PREPROCESSING_FILE)).is_file():
        artifacts["preprocessing"] = str(record)
    artifacts.update({key: str(file) for key, file in exports.items()})
    return {
        "python_model": PyfuncModel(),
        "artifacts": artifacts,
        "code_paths": [str(code)],
        "pip_requirements": _requirements(metadata.get("cpu_format", "pytorch")),
        "signature": SIGNATURE,
        "input_example": _input_example(image_size),  # what a client sends, shown in the UI
        "metadata": metadata,
        "model_config": config,
    }


@contextmanager
def _package_copy() -> Iterator[Path]:
    """A copy of the ``squid_monai`` package without ``__pycache__`` folders (useless and
    version-bound), the code shipped inside the model."""
    import squid_monai

    with tempfile.TemporaryDirectory(prefix="squid_code_") as tmp:
        copy = Path(tmp) / "squid_monai"
        shutil.copytree(
            Path(squid_monai.__file__).parent, copy, ignore=shutil.ignore_patterns("__pycache__")
        )
        yield copy


def _save(
    path: Path,
    weights: Path,
    network: Path,
    metadata: dict[str, str],
    image_size: int,
    model_config: Mapping[str, Any] | None,
    exports: Mapping[str, Path],
) -> Path:
    with _package_copy() as code:
        arguments = _model_arguments(
            weights, network, metadata, image_size, model_config, exports, code
        )
        mlflow.pyfunc.save_model(path=str(path), **arguments)
    return path


def _input_example(size: int) -> pd.DataFrame:
    """One request row: a PNG ramp of the model's image size, base64-encoded."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.linspace(0, 255, size * size).reshape(size, size).astype(np.uint8)).save(
        buffer, format="PNG"
    )
    return pd.DataFrame({IMAGE_COLUMN: [base64.b64encode(buffer.getvalue()).decode("ascii")]})


def _new_run(
    client: mlflow.MlflowClient, tracking_uri: str, experiment_name: str, run_name: str
) -> str:
    experiment = client.get_experiment_by_name(experiment_name)
    experiment_id = (
        experiment.experiment_id
        if experiment is not None
        else client.create_experiment(
            experiment_name, artifact_location=artifact_location(tracking_uri)
        )
    )
    return client.create_run(experiment_id, run_name=run_name).info.run_id


@contextmanager
def _fluent_store(uri: str) -> Iterator[None]:
    """MLflow's global tracking and registry URIs set to ``uri`` for the duration only
    (``mlflow.pyfunc.log_model`` knows no other store), then put back as they were, the
    ``MLFLOW_TRACKING_URI`` / ``MLFLOW_REGISTRY_URI`` variables included, so that MONAI
    handlers started later still find their own store."""
    from mlflow.tracking._model_registry import utils as registry_utils
    from mlflow.tracking._tracking_service import utils as tracking_utils

    variables = (ENV_URI, "MLFLOW_REGISTRY_URI")
    saved_env = {name: os.environ.get(name) for name in variables}
    saved = tracking_utils._tracking_uri, registry_utils._registry_uri
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    try:
        yield
    finally:
        tracking_utils._tracking_uri, registry_utils._registry_uri = saved
        for name, value in saved_env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def register_model(
    model_dir: str | os.PathLike,
    tracking_uri: str,
    name: str = "squid",
    alias: str = "champion",
    run_id: str | None = None,
    metadata: Mapping[str, Any] | None = None,
    weights: str = WEIGHTS_FILE,
    experiment_name: str = "squid",
    await_registration_s: float = 300.0,
    model_config: Mapping[str, Any] | None = None,
    metric: tuple[str, float] | None = None,
    challenger_alias: str = "challenger",
) -> ModelVersion:
    """Log ``model_dir`` with ``mlflow.pyfunc.log_model(..., registered_model_name=name)``
    into run ``run_id`` (or a new run of ``experiment_name``), as a new version of ``name``
    tagged with its calibration, thresholds, recipe and ``metadata``.

    ``metric``: the validation metric ``(name, value)`` of the model, higher = better. It is
    logged as a metric of the logged model (and its run) and decides the alias
    (:mod:`squid_monai.promotion`): ``alias`` (the champion) if it is at least the
    champion's, else ``challenger_alias``; the version and the run get the decision and its
    reason as tags (``promotion``, ``promotion_reason``). The first version of a model is
    the champion. ``model_config``: as for :func:`save_pyfunc`.

    The tracking URI is used for this call only (MLflow's global URIs are put back after).
    Returns the :class:`~mlflow.entities.model_registry.ModelVersion`, aliases included.
    """
    weights_path, network_path = _model_files(model_dir, weights)
    tags, size, exports = _describe(weights_path, network_path)
    tags.update({**_strings(metadata), **metric_tags(metric)})
    client = mlflow_client(tracking_uri)
    created = run_id is None
    if created:
        run_id = _new_run(client, tracking_uri, experiment_name, run_name=f"register_{name}")
    was_running = client.get_run(run_id).info.status == "RUNNING" and not created
    try:
        client.get_registered_model(name)
    except MlflowException:
        client.create_registered_model(
            name, description="anomaly scorer of chest radiographs (score > threshold = abnormal)"
        )
    with (
        _package_copy() as code,
        _fluent_store(tracking_uri),
        mlflow.start_run(run_id=run_id, nested=mlflow.active_run() is not None),
    ):
        arguments = _model_arguments(
            weights_path, network_path, tags, size, model_config, exports, code
        )
        info = mlflow.pyfunc.log_model(
            name=MODEL_ARTIFACT_PATH,
            registered_model_name=name,
            tags=tags,
            # a remote registry may copy the files asynchronously: MLflow waits until READY
            await_registration_for=int(await_registration_s),
            **arguments,
        )
        if metric is not None:  # the logged model's metric, in the run too
            mlflow.log_metric(str(metric[0]), float(metric[1]), model_id=info.model_id)
    if was_running:  # the training run goes on: ending it was start_run's doing, not ours
        client.update_run(run_id, status="RUNNING")
    version = str(info.registered_model_version)
    for key, value in tags.items():
        client.set_model_version_tag(name, version, key, value)
    decision: Promotion = promote(
        client, name, version, metric, run_id, champion=alias, challenger=challenger_alias
    )
    logger.info("%s version %s is the %s: %s", name, version, decision.alias, decision.reason)
    return client.get_model_version(name, version)


def load_registered(
    name: str = "squid",
    alias: str = "champion",
    tracking_uri: str | None = None,
    model_config: Mapping[str, Any] | None = None,
) -> mlflow.pyfunc.PyFuncModel:
    """Load ``models:/<name>@<alias>`` from the registry at ``tracking_uri`` (default: MLflow's
    own resolution, e.g. ``MLFLOW_TRACKING_URI``) without changing MLflow's global URIs."""
    uri = f"models:/{name}@{alias}"
    if tracking_uri is not None:
        # MLflow resolves models:/ URIs with its global registry URI only (download_artifacts'
        # registry_uri is ignored there): resolve the alias with an explicit client instead
        if (db := sqlite_path(tracking_uri)) is not None and not db.is_file():
            raise FileNotFoundError(f"{db}: no MLflow store there (tracking URI {tracking_uri})")
        client = mlflow_client(tracking_uri)
        version = client.get_model_version_by_alias(name, alias)
        uri = mlflow.artifacts.download_artifacts(
            artifact_uri=client.get_model_version_download_uri(name, version.version),
            tracking_uri=tracking_uri,
            dst_path=tempfile.mkdtemp(prefix="squid_model_"),
        )
    # the folder is kept: the model's code may be imported lazily from it after loading
    return mlflow.pyfunc.load_model(uri, model_config=dict(model_config or {}))
