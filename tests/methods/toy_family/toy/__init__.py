"""A toy family: a one-layer convolutional auto-encoder scored by its reconstruction error."""

from ..base import Family
from .losses import ToyLossWeights
from .presets import PRESETS, build, get_config
from .recipes import RECIPES
from .scorer import ToyScorer
from .trainer import ToyTrainer

__all__ = ["FAMILY"]

FAMILY = Family("toy", PRESETS, RECIPES, ToyLossWeights, ToyTrainer, ToyScorer, get_config, build)
