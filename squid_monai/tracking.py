"""Where runs are stored: the default MLflow store of a bundle run, and a client of it.

A SQLite database and an artifact folder under the output folder (the file store is
deprecated in MLflow 3 and MONAI refuses ``file:`` URIs), so nothing lands in the current
directory; ``MLFLOW_TRACKING_URI`` overrides it. The bottom of the house: this module
imports nothing from the package, and the tracking handlers, the registry handler and the
MLflow model all find their store through it.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = [
    "ENV_URI",
    "artifact_location",
    "mlflow_client",
    "sqlite_path",
    "sqlite_uri",
    "tracking_uri",
]

#: the environment variable MLflow reads the tracking URI from
ENV_URI = "MLFLOW_TRACKING_URI"
_DB_NAME = "mlruns.db"
_ARTIFACT_DIR = "mlartifacts"


def tracking_uri(output_dir: str | os.PathLike) -> str:
    """``MLFLOW_TRACKING_URI`` if set, else ``sqlite:///<absolute output_dir>/mlruns.db``."""
    return os.environ.get(ENV_URI) or sqlite_uri(output_dir)


def sqlite_uri(folder: str | os.PathLike) -> str:
    """The SQLite store ``mlruns.db`` in ``folder``."""
    return f"sqlite:///{Path(folder).resolve() / _DB_NAME}"


def sqlite_path(uri: str | None) -> Path | None:
    """The database file of a ``sqlite:///`` URI (None for other stores and in-memory SQLite)."""
    if not uri or not uri.startswith("sqlite:///"):
        return None
    path = uri[len("sqlite:///") :].split("?", 1)[0]
    return Path(path) if path and path != ":memory:" else None


def artifact_location(uri: str | None) -> str | None:
    """Artifact root for new experiments of a tracking URI: ``<database folder>/mlartifacts``
    for a local SQLite store (an MLflow default would be ``./mlruns`` of the current
    directory), None (the server decides) otherwise."""
    db = sqlite_path(uri)
    return (db.parent.resolve() / _ARTIFACT_DIR).as_uri() if db is not None else None


def mlflow_client(uri: str):
    """An ``MlflowClient`` for tracking and registry at ``uri`` (a SQLite store's folder is
    created: SQLite cannot). Never MLflow's global URIs: ``mlflow.set_tracking_uri`` also
    sets ``MLFLOW_TRACKING_URI``, which would redirect every later MONAI handler."""
    import mlflow

    if (db := sqlite_path(uri)) is not None:
        db.parent.mkdir(parents=True, exist_ok=True)
    return mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
