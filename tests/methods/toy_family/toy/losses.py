"""The toy family's loss weights: the shared reconstruction objective's."""

from ...engines.reconstruction import ReconstructionLossWeights as ToyLossWeights

__all__ = ["ToyLossWeights"]
