"""The toy family's training iteration: the shared reconstruction trainer."""

from ...engines.reconstruction import ReconstructionTrainer as ToyTrainer

__all__ = ["ToyTrainer"]
