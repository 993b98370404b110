"""f-AnoGAN's training recipes (the bundle picks one from the data source).

Both data regimes use the same recipe: the documents give f-AnoGAN one setting, not one
per data set. ``n_critic`` = 5 and the gradient-penalty weight 10 are WGAN-GP's
(Gulrajani et al. 2017, Algorithm 1); ``kappa`` = 1 is f-AnoGAN's reference
implementation's (the lecture leaves it open); ``gan_epochs`` = 0.8 of the run for the
WGAN-GP, the rest for the encoder (the lecture's exercise: 1500 + 200 epochs). The score
is always izi_f (there is no other score source).
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from .losses import FAnoGANLossWeights

__all__ = ["RECIPES"]

_RECIPE: dict[str, Any] = {
    "n_critic": 5,
    "gan_epochs": 0.8,
    "loss_weights": asdict(FAnoGANLossWeights()),
}

RECIPES: dict[str, dict[str, Any]] = {"chest": dict(_RECIPE), "digitanatomy": dict(_RECIPE)}
