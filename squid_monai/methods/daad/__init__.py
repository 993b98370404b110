"""DAAD (Divide-and-Assemble Anomaly Detection) and DAAD+ as one model family.

Source: ``seeds/daad_paper.txt`` (Hou et al., ICCV 2021), section 3; BASELINES.md, "DAAD".

* networks (:mod:`.networks`, :mod:`.memory`): a U-Net-like auto-encoder whose every
  encoder-decoder connection passes through a block-wise memory (each level's map cut into an
  ``r_h x r_w x r_c = 8 x 8 x 1`` grid of blocks, each block a query to the level's own bank
  of ``N = 500`` items, cosine-softmax addressing, weights below ``1/N`` dropped); DAAD+ adds
  a DCGAN discriminator;
* training (:class:`.trainer.DAADTrainer`, :mod:`.losses`): ``L = 50 L_rec`` (DAAD),
  ``+ 0.5 L_adv + 0.5 L_ali`` (DAAD+);
* score (:class:`.scorer.DAADScorer`): ``A = gamma R_s + (1 - gamma) L_s``, ``gamma = 0.9``,
  ``R`` and ``L`` scaled by their range on normal calibration images;
* presets (:mod:`.presets`): ``tiny``, ``small``, ``digitanatomy_small``, ``paper``,
  ``digitanatomy``; the recipes ``chest`` and ``digitanatomy``.

DAAD vs DAAD+ is the network setting ``adversarial`` (false / true), so ``network.json``
records which one was trained: ``configs/methods/daad.json`` trains DAAD,
``configs/methods/daad_plus.json`` DAAD+ (it sets ``network_overrides = {"adversarial": true}``
and the paper's DAAD+ learning rate; a command-line ``--network_overrides`` replaces that dict,
so keep ``"adversarial": true`` in it). Both configs spell the optimisers (Adam, section 4.1)
and scalers as ``_target_`` blocks, the discriminator's disabled when no discriminator was
built, so either trains whichever variant the overrides ask for.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from ..base import Family
from .losses import DAADLossWeights, discriminator_loss, generator_losses
from .memory import BlockMemory, division_rate, division_rates
from .networks import DAADGenerator, DCGANDiscriminator
from .presets import PRESETS, build, get_config
from .recipes import RECIPES
from .scorer import DAADScorer, FitScoreScaling, calibrate_daad, fit_scaling
from .trainer import DAADTrainer

__all__ = [
    "FAMILY",
    "DAADFamily",
    "BlockMemory",
    "DAADGenerator",
    "DCGANDiscriminator",
    "DAADScorer",
    "DAADTrainer",
    "DAADLossWeights",
    "FitScoreScaling",
    "calibrate_daad",
    "fit_scaling",
    "division_rate",
    "division_rates",
    "generator_losses",
    "discriminator_loss",
]


class DAADFamily(Family):
    """DAAD's scorer also takes the fused score's ``gamma`` from the network settings."""

    def build_scorer(self, preset: str, **overrides: Any) -> DAADScorer:
        return self.wrap(self.build_networks(preset, **overrides), preset, **overrides)

    def wrap(
        self, networks: Sequence[torch.nn.Module], preset: str, **overrides: Any
    ) -> DAADScorer:
        """The scorer of already built networks (the training config's ``scorer``)."""
        networks = list(networks)
        return DAADScorer(
            networks[0],
            networks[1] if len(networks) > 1 else None,
            gamma=get_config(preset, **overrides)["gamma"],
        )


FAMILY = DAADFamily(
    "daad", PRESETS, RECIPES, DAADLossWeights, DAADTrainer, DAADScorer, get_config, build
)
