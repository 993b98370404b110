"""GuardedTrainer's non-finite guard, on a minimal subclass (one linear layer with a
BatchNorm): what every family's trainer relies on."""

import logging

import pytest
import torch
from ignite.engine import Events

from squid_monai.engines import GuardedTrainer, norm_buffers


class _Tiny(GuardedTrainer):
    def __init__(self, batches, **kw):
        self.net = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.BatchNorm1d(3))
        optimizer = torch.optim.SGD(self.net.parameters(), lr=0.1)
        super().__init__("cpu", 1, batches, optimizer=optimizer, **kw)
        self.scaler = self.grad_scaler()
        self.stepped = []

    def _iteration(self, engine, batchdata):
        image = self._image(engine, batchdata)
        saved = norm_buffers(self.net)
        loss = self.net(image).pow(2).mean()
        ok = self._guarded_step(engine, "test", loss, self.optimizer, self.scaler, saved)
        if ok:
            self._nonfinite_run = 0
        self.stepped.append(ok)
        engine.state.output = {"loss": float(loss.detach())}
        return engine.state.output


def _batch(value=None):
    x = torch.rand(4, 3)
    return {"image": x if value is None else torch.full_like(x, value)}


def test_non_finite_step_is_skipped_counted_logged_and_restores_norm_statistics(caplog):
    trainer = _Tiny([_batch(), _batch(float("nan")), _batch()], epoch_length=3)
    assert trainer.optimizer is not None and not trainer.scaler.is_enabled()  # fp32 CPU: scaler off
    state = {}
    trainer.add_event_handler(
        Events.ITERATION_COMPLETED,
        lambda e: state.setdefault(
            e.state.iteration, {k: v.clone() for k, v in e.net.state_dict().items()}
        ),
    )
    with caplog.at_level(logging.WARNING, logger=__name__):
        trainer.run()
    assert trainer.stepped == [True, False, True]
    assert trainer.state.skipped_steps == 1
    # the NaN batch left weights and BatchNorm statistics (running stats, count) as they were
    assert all(torch.equal(state[1][k], state[2][k]) for k in state[1])
    assert not torch.equal(state[2]["0.weight"], state[3]["0.weight"])
    messages = [r.getMessage() for r in caplog.records if r.name == __name__]
    assert messages == ["non-finite test loss at iteration 2: step skipped, weights untouched"]


def test_consecutive_non_finite_losses_stop_the_run_and_a_finite_one_resets_the_count():
    nan = float("nan")
    trainer = _Tiny(
        [_batch(nan), _batch(), _batch(nan), _batch(nan)], max_nonfinite=2, epoch_length=4
    )
    with pytest.raises(
        RuntimeError, match="2 consecutive non-finite losses .last: test at iteration 4"
    ):
        trainer.run()
    assert trainer.stepped == [False, True, False]  # the error is raised inside iteration 4
    assert trainer.state.skipped_steps == 3


def test_missing_batch_is_an_error():
    trainer = _Tiny([_batch()])
    with pytest.raises(ValueError, match="Must provide batch data"):
        trainer._image(trainer, None)
