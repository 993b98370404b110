"""Small Ignite attachables: resume, calibration, MLflow artifacts and registry."""

from .calibration import Calibrate, StoreThreshold
from .checkpoint import AtomicCheckpointSaver, BestMetricState, EpochSeed, ResumeFromLatest, RNGState, SaveLatest, latest_checkpoint
from .ema import WeightEMA
from .validation import ValidateEveryAndLast

__all__ = ["AtomicCheckpointSaver", "Calibrate", "StoreThreshold", "BestMetricState", "EpochSeed", "ResumeFromLatest", "RNGState", "SaveLatest",
           "ValidateEveryAndLast", "WeightEMA", "latest_checkpoint"]
