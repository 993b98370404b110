"""GANomaly's training recipes (the bundle picks one from the data source).

Both data regimes use the same recipe: the documents give GANomaly one setting (the loss
weights adversarial 1, contextual 50, latent 1; BASELINES.md), and the authors' code one
set of options for every data set, including the re-initialisation of a collapsed
discriminator. There is no score source to choose: the score is the latent distance.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from .losses import GANomalyLossWeights

__all__ = ["RECIPES"]

_RECIPE: dict[str, Any] = {
    "loss_weights": asdict(GANomalyLossWeights()),
    "reinit_discriminator": True,
    # the discriminator loss below which it counts as collapsed (the authors' 1e-5)
    "reinit_threshold": 1e-5,
}

RECIPES: dict[str, dict[str, Any]] = {"chest": dict(_RECIPE), "digitanatomy": dict(_RECIPE)}
