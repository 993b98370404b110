"""Ignite engines: the SQUID training iteration and the scoring evaluator."""

from .evaluator import SQUIDEvaluator
from .trainer import LOSS_KEYS, SQUIDTrainer, loss_terms, unwrap

__all__ = ["SQUIDTrainer", "SQUIDEvaluator", "LOSS_KEYS", "loss_terms", "unwrap"]
