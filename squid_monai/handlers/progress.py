"""Progress of a long job: a tqdm bar on a terminal, a periodic log line otherwise (batch jobs,
CI logs), so that no training, evaluation, inference or export runs blind."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

from ignite.engine import Engine, Events
from ignite.handlers import ProgressBar as _IgniteProgressBar

from ..distributed import is_main_process
from ..engines.utils import loss_terms

__all__ = ["LossProgressBar", "Progress", "progress_mode", "progress_iter"]

logger = logging.getLogger(__name__)
T = TypeVar("T")


def progress_mode(enabled: bool | str = "auto", stream=None) -> str:
    """``"bar"``, ``"log"`` or ``"off"`` for ``enabled``: true forces the bar, false turns
    progress off, ``"auto"`` picks the bar when ``stream`` (stderr) is a terminal and log lines
    otherwise. Strings from the command line ("true", "false", "auto") are accepted."""
    if isinstance(enabled, str):
        value = enabled.strip().lower()
        if value == "auto":
            stream = sys.stderr if stream is None else stream
            return "bar" if getattr(stream, "isatty", lambda: False)() else "log"
        if value in ("bar", "log", "off"):
            return value
        from monai.utils import str2bool

        enabled = str2bool(value)
    return "bar" if enabled else "off"


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    return f"{h}:{rest // 60:02d}:{rest % 60:02d}" if h else f"{rest // 60}:{rest % 60:02d}"


class _Throttle:
    """Says when a log line is due: every ``every`` iterations or ``interval_s`` seconds, and
    always on the last one; formats the line with the rate and the time left."""

    def __init__(self, name: str, every: int = 0, interval_s: float = 30.0):
        self.name, self.every, self.interval_s = name, every, interval_s
        self.start = self.last = time.monotonic()

    def due(self, i: int, total: int | None) -> bool:
        now = time.monotonic()
        if (self.every and i % self.every == 0) or now - self.last >= self.interval_s:
            self.last = now
            return True
        return total is not None and i == total

    def line(self, i: int, total: int | None, prefix: str = "", left: int | None = None) -> str:
        """``left``: iterations still to run (default: the rest of ``total``)."""
        per_it = (time.monotonic() - self.start) / max(i, 1)
        rate = f"{per_it:.2f} s/it" if per_it >= 1 or per_it == 0 else f"{1 / per_it:.1f} it/s"
        text = f"{self.name}: {prefix}iteration {i}/{total if total else '?'}, {rate}"
        left = left if left is not None else (total - i if total else None)
        if left is not None:
            text += f", eta {_duration(per_it * left)}"
        return text


class Progress:
    """Ignite handler: the tqdm bar (Ignite's :class:`ProgressBar`) on a terminal, else an
    INFO line such as ``training: epoch 3/36, iteration 40/64, 1.20 s/it, eta 0:57`` every
    ``every`` iterations or ``interval_s`` seconds. Rank 0 only; ``enabled`` as for
    :func:`progress_mode`; ``output_transform`` picks the numbers the bar shows."""

    def __init__(
        self,
        enabled: bool | str = "auto",
        name: str = "progress",
        every: int = 0,
        interval_s: float = 30.0,
        persist: bool = False,
        output_transform: Callable | None = None,
    ):
        self.mode = progress_mode(enabled)
        self.name, self.every, self.interval_s, self.persist = name, every, interval_s, persist
        self.output_transform = output_transform
        self.bar: _IgniteProgressBar | None = None

    def attach(self, engine: Engine) -> None:
        if self.mode == "off" or not is_main_process():
            return
        if self.mode == "bar":
            self.bar = _IgniteProgressBar(persist=self.persist)
            self.bar.attach(engine, output_transform=self.output_transform)
            return
        engine.add_event_handler(Events.EPOCH_STARTED, self._epoch_started)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._iteration_completed)

    def _epoch_started(self, engine: Engine) -> None:
        self.throttle = _Throttle(self.name, self.every, self.interval_s)

    def _iteration_completed(self, engine: Engine) -> None:
        state, total = engine.state, engine.state.epoch_length
        i = (state.iteration - 1) % total + 1 if total else state.iteration
        if self.throttle.due(i, total):
            epochs = f"epoch {state.epoch}/{state.max_epochs}, " if state.max_epochs > 1 else ""
            # the eta covers the epochs still to come (not the validations between them)
            left = (total - i + (state.max_epochs - state.epoch) * total) if total else None
            logger.info(self.throttle.line(i, total, epochs, left))


class LossProgressBar(Progress):
    """:class:`Progress` of a trainer, whose bar shows the loss terms of the iteration."""

    def __init__(self, enabled: bool | str = "auto", persist: bool = False, **kwargs):
        kwargs.setdefault("name", "training")
        super().__init__(enabled, persist=persist, output_transform=self._short, **kwargs)

    @staticmethod
    def _short(out) -> dict:
        return {k.replace("loss_", ""): v for k, v in loss_terms(out).items() if k != "loss"}


def progress_iter(
    items: Iterable[T],
    name: str,
    total: int | None = None,
    enabled: bool | str = "auto",
    every: int = 0,
    interval_s: float = 30.0,
) -> Iterator[T]:
    """``items`` with progress, for loops without an engine (export): tqdm on a terminal,
    periodic log lines otherwise, as :class:`Progress`."""
    total = total if total is not None else (len(items) if hasattr(items, "__len__") else None)
    mode = progress_mode(enabled) if is_main_process() else "off"
    if mode == "bar":
        from tqdm.auto import tqdm

        yield from tqdm(items, desc=name, total=total, leave=False)
        return
    throttle = _Throttle(name, every, interval_s)
    for i, item in enumerate(items, 1):
        yield item
        if mode == "log" and throttle.due(i, total):
            logger.info(throttle.line(i, total))
