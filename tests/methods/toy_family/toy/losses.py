"""The toy family's loss weights: the auto-encoder family's L2."""

from ..autoencoder import AutoEncoderLossWeights as ToyLossWeights

__all__ = ["ToyLossWeights"]
