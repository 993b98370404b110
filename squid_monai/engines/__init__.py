"""Ignite engines: the base of every family's trainer, the SQUID training iteration and the
scoring evaluator, and the helpers they share (:mod:`.utils`)."""

from .base import GuardedTrainer
from .evaluator import SQUIDEvaluator
from .trainer import LOSS_KEYS, SQUIDTrainer, loss_terms
from .utils import (all_ranks, average_running_stats, is_distributed, norm_buffers, plain_tensor, restore_buffers,
                    unwrap)

__all__ = ["GuardedTrainer", "SQUIDTrainer", "SQUIDEvaluator", "LOSS_KEYS", "loss_terms", "unwrap", "plain_tensor",
           "norm_buffers", "restore_buffers", "is_distributed", "all_ranks", "average_running_stats"]
