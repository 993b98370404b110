"""A progress bar over epochs and iterations that shows every loss term."""

from __future__ import annotations

from ignite.engine import Engine
from ignite.handlers import ProgressBar as _IgniteProgressBar

from ..distributed import is_main_process
from ..engines.utils import loss_terms

__all__ = ["LossProgressBar"]


class LossProgressBar:
    """Ignite's tqdm progress bar with the loss terms of the current iteration; shown
    by rank 0 only, and off when ``enabled`` is false (e.g. in logs of batch jobs)."""

    def __init__(self, enabled: bool = True, persist: bool = False):
        self.enabled, self.persist = enabled, persist

    def attach(self, engine: Engine) -> None:
        if self.enabled and is_main_process():
            short = lambda out: {
                k.replace("loss_", ""): v for k, v in loss_terms(out).items() if k != "loss"
            }
            _IgniteProgressBar(persist=self.persist).attach(engine, output_transform=short)
