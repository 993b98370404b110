"""Small Ignite attachables: resume, calibration, MLflow artifacts and registry."""

from .calibration import Calibrate, StoreThreshold
from .checkpoint import BestMetricState, EpochSeed, ResumeFromLatest, RNGState, SaveLatest, latest_checkpoint

__all__ = ["Calibrate", "StoreThreshold", "BestMetricState", "EpochSeed", "ResumeFromLatest", "RNGState", "SaveLatest",
           "latest_checkpoint"]
