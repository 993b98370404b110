"""SQUID as a model family, in the same file set as every other family:

* :mod:`.networks`: the generator and the discriminator (plain ``nn.Module`` s);
* :mod:`.losses`: :class:`~.losses.SQUIDLossWeights` and the loss terms;
* :mod:`.trainer`: :class:`~.trainer.SQUIDTrainer`, one training iteration (with :mod:`.erasing`);
* :mod:`.scorer`: :class:`~.scorer.SQUIDScorer` (student reconstruction -> discriminator
  logit, or another score source -> calibrated score);
* :mod:`.presets`: the network presets; :mod:`.recipes`: the training recipes.
"""

from __future__ import annotations

from ..base import Family
from .losses import SQUIDLossWeights
from .presets import PRESET_REVISIONS, PRESETS, build, get_config
from .recipes import RECIPES
from .scorer import SQUIDScorer
from .trainer import SQUIDTrainer

__all__ = ["FAMILY"]


FAMILY = Family(
    "squid",
    PRESETS,
    RECIPES,
    SQUIDLossWeights,
    SQUIDTrainer,
    SQUIDScorer,
    get_config,
    build,
    PRESET_REVISIONS,
)
