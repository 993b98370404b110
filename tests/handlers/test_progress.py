"""Progress of long jobs: a bar on a terminal, periodic log lines otherwise."""

from __future__ import annotations

import io
import logging
import re

import pytest
from ignite.engine import Engine, Events

from squid_monai.handlers.progress import (
    LossProgressBar,
    Progress,
    progress_iter,
    progress_mode,
)

LOGGER = "squid_monai.handlers.progress"


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize(
    "enabled, stream, mode",
    [
        ("auto", io.StringIO(), "log"),
        ("auto", _Tty(), "bar"),
        (True, io.StringIO(), "bar"),
        ("true", io.StringIO(), "bar"),
        (False, _Tty(), "off"),
        ("false", _Tty(), "off"),
    ],
)
def test_mode_follows_the_terminal(enabled, stream, mode):
    assert progress_mode(enabled, stream) == mode


def test_mode_rejects_nonsense():
    with pytest.raises(ValueError):
        progress_mode("sometimes")


def test_log_lines_every_n_iterations_when_not_on_a_terminal(caplog):
    engine = Engine(lambda e, b: b)
    handler = Progress("log", name="evaluate", every=2, interval_s=1e9)
    handler.attach(engine)
    with caplog.at_level(logging.INFO, logger=LOGGER):
        engine.run(range(5), max_epochs=2)
    lines = [r.getMessage() for r in caplog.records if r.name == LOGGER]
    # iterations 2, 4 and the last one (5), in each of the two epochs
    assert len(lines) == 6, lines
    assert lines[0].startswith("evaluate: epoch 1/2, iteration 2/5, ")
    assert lines[2].startswith("evaluate: epoch 1/2, iteration 5/5, ")
    assert lines[-1].startswith("evaluate: epoch 2/2, iteration 5/5, ")
    assert all(re.search(r"[\d.]+ (s/it|it/s), eta \d+:\d\d$", line) for line in lines)
    assert handler.bar is None


def test_auto_logs_when_stderr_is_no_terminal(caplog, monkeypatch):
    monkeypatch.setattr("sys.stderr", io.StringIO())
    engine = Engine(lambda e, b: b)
    Progress("auto", name="inference", interval_s=1e9).attach(engine)
    with caplog.at_level(logging.INFO, logger=LOGGER):
        engine.run(range(3), max_epochs=1)
    lines = [r.getMessage() for r in caplog.records if r.name == LOGGER]
    assert lines and lines[-1].startswith("inference: iteration 3/3, "), lines


def test_bar_when_forced_on():
    engine = Engine(lambda e, b: {"loss": 1.0, "loss_rec": 0.5})
    handler = LossProgressBar(True)
    handler.attach(engine)
    assert handler.bar is not None
    assert engine.has_event_handler(handler.bar._close, Events.EPOCH_COMPLETED)


def test_off_attaches_nothing():
    engine = Engine(lambda e, b: b)
    handler = Progress(False)
    handler.attach(engine)
    assert handler.bar is None and not engine.has_event_handler(handler._iteration_completed)


def test_plain_loops_log_progress(caplog):
    with caplog.at_level(logging.INFO, logger=LOGGER):
        out = list(progress_iter(range(4), "export: loading validation", enabled="log", every=3))
    assert out == [0, 1, 2, 3]
    lines = [r.getMessage() for r in caplog.records if r.name == LOGGER]
    assert [line.split(",")[0] for line in lines] == [
        "export: loading validation: iteration 3/4",
        "export: loading validation: iteration 4/4",
    ]


def test_log_line_rate_and_eta_of_the_whole_run(caplog, monkeypatch):
    """Each iteration takes 2 s on a fake clock: after epoch 1 of 2 (5 iterations), 5 remain."""
    clock = [0.0]
    monkeypatch.setattr("squid_monai.handlers.progress.time.monotonic", lambda: clock[0])

    def step(engine, batch):
        clock[0] += 2.0

    engine = Engine(step)
    Progress("log", name="training", every=5, interval_s=1e9).attach(engine)
    with caplog.at_level(logging.INFO, logger=LOGGER):
        engine.run(range(5), max_epochs=2)
    lines = [r.getMessage() for r in caplog.records if r.name == LOGGER]
    assert lines == [
        "training: epoch 1/2, iteration 5/5, 2.00 s/it, eta 0:10",
        "training: epoch 2/2, iteration 5/5, 2.00 s/it, eta 0:00",
    ]
