"""SQUID's training recipes, beside its network presets: the one home of the loss weights
and the critic schedule of each data regime (SQUID.md section 4).

``chest``          the paper's chest X-ray recipe: student weight 10, two discriminator
                   steps per generator step, learning rate 1e-4; scored, beyond the paper,
                   by the ``combined`` evidence (the standardised logit, teacher-student
                   difference, nearest-normal token distance and two-sided feature residual,
                   summed): on every chest model measured it beats the logit, the paper's
                   score (``--score_source logit``), by 9-24 AUC points on the report split,
                   and it beats the pixel nearest-neighbour and sharpness baselines
                   (docs/EXPERIMENTS.md, session 17; report-split figures under review:
                   docs/EVIDENCE.md). ``cpu_epochs`` 36 sets the length of the CPU recipe
                   (``chest_cpu.json``; other families keep the shared 12): with the ``small``
                   preset the validation AUC climbs until the learning rate has decayed,
                   and 36 epochs gain on validation and on the report split over 12, where
                   SQUID first passes the sharpness baseline (docs/EXPERIMENTS.md, session 16).
``digitanatomy``   the paper's DigitAnatomy recipe: student weight 1, one step each;
                   scored by the worst tile's standardised reconstruction residual
                   (``tile_residual``): the residual beats the logit by 30 AUC points on the
                   report split once the decoder memory is space-aware, and its worst tile
                   beats its image mean on every seed; learning rate 2e-4, not the paper's
                   1e-4: the default command's 640 steps gain on validation and on the
                   report split on every seed with it (docs/EXPERIMENTS.md, "Making SQUID
                   detect");
                   and, beyond the paper, half of each batch's generator inputs with one
                   random rectangle erased (``input_erasing`` 0.5): the decoder learns to
                   in-paint from the memory what the skips do not carry, which removes the
                   seeds that copied missing digits and the fall from the validation peak
                   (docs/EXPERIMENTS.md, session 15); and the decoders' output heads at 30 times
                   the learning rate (``head_lr_factor`` 30): at the common rate the output's
                   brightness stays near its random start, and the seeds that start bright
                   keep a grey background that hides the anomalies (docs/EXPERIMENTS.md,
                   session 21).

Both recipes share SQUID's optimiser and scorer settings (``_COMMON``): Adam with betas
(0.5, 0.999), weight decay 1e-5 on the generator, eps 1e-8; the ``paper`` cosine schedule down
to 0.2 of the learning rate (``lr_min_ratio``); erased rectangles of 1/8 to 1/3 of the image
side (``erasing_size``, when ``input_erasing`` is on); the tile residual raised to the power 2,
one-sided (``tile_power``, ``tile_two_sided``); the four pieces of ``combined`` evidence.
These are the one home of the numbers: ``train.json`` and ``methods/squid.json`` read them
from ``@recipe``.

The bundle picks one from the data source (``squid_monai.workflow.DataSource.recipe``) and
each setting can still be overridden on the command line.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from .losses import SQUIDLossWeights
from .scorer import DEFAULT_EVIDENCE

__all__ = ["RECIPES"]

_COMMON: dict[str, Any] = {
    "betas": (0.5, 0.999),
    "weight_decay": 1e-5,
    "adam_eps": 1e-8,
    "lr_min_ratio": 0.2,
    "head_lr_factor": 1.0,
    "input_erasing": 0.0,
    "erasing_size": (0.125, 0.333),
    "tile_power": 2.0,
    "tile_two_sided": False,
    "evidence": DEFAULT_EVIDENCE,
}

RECIPES: dict[str, dict[str, Any]] = {
    "chest": {
        **_COMMON,
        "n_critic": 2,
        "loss_weights": asdict(SQUIDLossWeights()),
        "score_source": "combined",
        "lr": 1e-4,
        "cpu_epochs": 36,
    },
    "digitanatomy": {
        **_COMMON,
        "n_critic": 1,
        "loss_weights": asdict(SQUIDLossWeights(student=1.0)),
        "score_source": "tile_residual",
        "lr": 2e-4,
        "input_erasing": 0.5,
        "head_lr_factor": 30.0,
    },
}
