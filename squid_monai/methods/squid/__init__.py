"""SQUID as a model family: the first one on :class:`~squid_monai.methods.base.ModelFamily`.

Its pieces live where the data flow puts them; this folder only names them:

* networks: :mod:`squid_monai.networks` (generator, discriminator, ``PRESETS``);
* training iteration: :class:`squid_monai.engines.SQUIDTrainer`;
* losses: :mod:`squid_monai.losses` (:class:`~squid_monai.losses.SQUIDLossWeights`);
* score: :class:`squid_monai.scoring.SQUIDScorer` (student reconstruction -> discriminator
  logit -> calibrated score);
* presets: the network presets and the training recipes of :mod:`.recipes`.
"""

from __future__ import annotations

from ..base import Family
from ...engines.trainer import SQUIDTrainer
from ...losses import SQUIDLossWeights
from ...networks import PRESETS, build, get_config
from ...networks.presets import PRESET_REVISIONS
from ...scoring.scorer import SQUIDScorer
from .recipes import RECIPES

__all__ = ["FAMILY"]


FAMILY = Family("squid", PRESETS, RECIPES, SQUIDLossWeights, SQUIDTrainer, SQUIDScorer, get_config, build,
                PRESET_REVISIONS)
