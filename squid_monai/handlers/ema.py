"""An exponential moving average of the trained weights, and the model that is scored.

Why: one SQUID run's validation AUC swings by several points from epoch to epoch (the
adversarial game never settles), so the weights of whichever epoch happens to be last or
best are a noisy draw. The average of the weights over the last few hundred iterations
scores far more steadily. Ignite's :class:`~ignite.handlers.EMAHandler` does the
averaging; this subclass makes it a switch and names the model to score.
"""

from __future__ import annotations

import torch.nn as nn
from ignite.engine import Engine
from ignite.handlers import EMAHandler
from monai.utils import str2bool

__all__ = ["WeightEMA"]


class WeightEMA(EMAHandler):
    """EMA of every parameter of ``model`` (the scorer: generator and discriminator),
    updated after each training iteration; buffers (memory queue, normalisation
    statistics, calibration) are shared with the live model, not averaged: the queue
    holds real tokens and must stay exactly what the live generator wrote.

    ``scoring_model`` is the model to validate, calibrate, save and serve: the average
    when ``enabled``, else ``model`` itself. Put ``ema_model`` in the resume checkpoint.

    Args:
        model: the module whose parameters are averaged.
        momentum: weight of the newest parameters per iteration (0.02: a time constant of
            about 50 iterations).
        momentum_warmup, warmup_iters: start at ``momentum_warmup`` and move linearly to
            ``momentum`` over ``warmup_iters`` iterations, so that the random initial weights
            are forgotten quickly.
        enabled: off = score the live weights (the paper's setting).
    """

    def __init__(
        self,
        model: nn.Module,
        momentum: float = 0.02,
        momentum_warmup: float | None = 0.5,
        warmup_iters: int | None = 100,
        enabled: bool | str = True,
    ):
        self.enabled = str2bool(enabled) if isinstance(enabled, str) else bool(enabled)
        # the warm-up is computed from the engine's iteration (restored on resume), not by
        # Ignite's warm-up scheduler, whose own event counter would restart after a resume
        self.warmup = (
            (float(momentum_warmup), int(warmup_iters))
            if momentum_warmup and warmup_iters
            else None
        )
        if self.enabled:
            super().__init__(model, momentum=momentum, handle_buffers="copy")
        else:
            self.model = self.ema_model = model

    def momentum_at(self, iteration: int) -> float:
        """The momentum used at (1-based) ``iteration``."""
        if self.warmup is None or iteration >= self.warmup[1]:
            return self.momentum
        start, length = self.warmup
        return start + (self.momentum - start) * max(iteration - 1, 0) / length

    def _update_ema_model(self, engine: Engine, name: str) -> None:
        setattr(engine.state, name, self.momentum_at(engine.state.iteration))
        super()._update_ema_model(engine, name)

    @property
    def scoring_model(self) -> nn.Module:
        return self.ema_model

    def attach(self, engine: Engine, name: str = "ema_momentum", **kwargs) -> None:
        if self.enabled:  # a resumed engine already holds the momentum: no warning for that
            super().attach(engine, name=name, warn_if_exists=False, **kwargs)
