"""The toy family's training iteration: the auto-encoder family's (one reconstruction network,
L2), reused through that family's package."""

from ..autoencoder import AutoEncoderTrainer as ToyTrainer

__all__ = ["ToyTrainer"]
