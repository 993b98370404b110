"""AnatPaste's training recipes (the bundle picks one from the data source).

The authors' settings (their training script and README command): SGD with momentum 0.9,
learning rate 0.03, weight decay 3e-5, a cosine learning-rate decay over the run (their warm
restarts' first period is the whole run: one cosine to 0), the AnatPaste augmentation, the
whole-image jitter 0.1. The Gaussian is fitted on the normal training images' embeddings (the
authors use all of them): ``calibration_images`` 1024, the bundle's calibration set.

``chest``: the CPU budget, ``cpu_epochs`` (read by ``chest_cpu.json``) passes over the ~1,240
ZhangLab normals at batch 32 (64 images a step with the pasted copies), about 10 minutes on
one thread with the ``small`` preset. The authors train 256 x 256 steps of batch 64 on a GPU:
pass ``--preset paper --epochs N --batch_size 64`` there. ``digitanatomy``: the same recipe.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from .losses import AnatPasteLossWeights

__all__ = ["RECIPES"]

_RECIPE: dict[str, Any] = {
    "loss_weights": asdict(AnatPasteLossWeights()),
    "paste": "anatpaste",
    "image_jitter": 0.1,
    "lr": 0.03,
    "momentum": 0.9,
    "weight_decay": 3e-05,
    "batch_size": 32,
    "calibration_images": 1024,
}

RECIPES: dict[str, dict[str, Any]] = {
    "chest": {**_RECIPE, "cpu_epochs": 25},
    "digitanatomy": dict(_RECIPE),
}
