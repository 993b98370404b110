"""The MLflow handlers under the name the bundle configs use (``squid_monai.handlers.mlflow.X``):
tracking (:mod:`.tracking`), validation figures (:mod:`.figures`), registry
(:mod:`.registry`) and where runs are stored (:mod:`squid_monai.tracking`). Each job
lives in its own module; this one only names them together."""

from ..tracking import artifact_location, sqlite_path, tracking_uri
from .figures import ValidationArtifacts
from .registry import RegisterModel
from .tracking import ResilientMLFlowHandler

__all__ = [
    "tracking_uri",
    "artifact_location",
    "sqlite_path",
    "ResilientMLFlowHandler",
    "ValidationArtifacts",
    "RegisterModel",
]
