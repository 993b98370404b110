"""Ignite engines every family shares: the base of every family's trainer, the scoring
evaluator, and the helpers they share (:mod:`.utils`). A family's own training iteration is
its ``methods/<family>/trainer.py``."""

from .base import AdversarialTrainer, GuardedTrainer, SingleNetworkTrainer
from .evaluator import AnomalyEvaluator
from .utils import (
    all_ranks,
    average_running_stats,
    is_distributed,
    loss_terms,
    norm_buffers,
    plain_tensor,
    restore_buffers,
    unwrap,
)

__all__ = [
    "GuardedTrainer",
    "SingleNetworkTrainer",
    "AdversarialTrainer",
    "AnomalyEvaluator",
    "loss_terms",
    "unwrap",
    "plain_tensor",
    "norm_buffers",
    "restore_buffers",
    "is_distributed",
    "all_ranks",
    "average_running_stats",
]
