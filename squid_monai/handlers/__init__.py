"""Small Ignite attachables: resume, checkpoints, validation schedule, calibration; the MLflow
jobs live in their own modules (imported on use, so MLflow stays optional here):
:mod:`.tracking` (ResilientMLFlowHandler), :mod:`.figures` (ValidationArtifacts) and
:mod:`.registry` (RegisterModel); where runs are stored is :mod:`squid_monai.tracking`."""

from .calibration import Calibrate, StoreThreshold
from .checkpoint import (
    AtomicCheckpointSaver,
    BestMetricState,
    EpochSeed,
    ResumeFromLatest,
    RNGState,
    SaveLatest,
    latest_checkpoint,
)
from .ema import WeightEMA
from .schedules import LrSchedules
from .validation import ValidateEveryAndLast

__all__ = [
    "AtomicCheckpointSaver",
    "Calibrate",
    "LrSchedules",
    "StoreThreshold",
    "BestMetricState",
    "EpochSeed",
    "ResumeFromLatest",
    "RNGState",
    "SaveLatest",
    "ValidateEveryAndLast",
    "WeightEMA",
    "latest_checkpoint",
]
