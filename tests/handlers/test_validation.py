import pytest
from ignite.engine import Engine

from squid_monai.handlers import ValidateEveryAndLast


class RecordingValidator:
    def __init__(self):
        self.epochs = []

    def run(self, epoch):
        self.epochs.append(epoch)


@pytest.mark.parametrize(
    "interval, max_epochs, expected",
    [(1, 4, [1, 2, 3, 4]), (2, 5, [2, 4, 5]), (3, 6, [3, 6]), (10, 3, [3])],
)
def test_validates_every_interval_and_once_after_the_last_epoch(interval, max_epochs, expected):
    handler = ValidateEveryAndLast(interval=interval)
    handler.validator = RecordingValidator()  # the schedule is under test, not the evaluator
    trainer = Engine(lambda engine, batch: None)
    handler.attach(trainer)
    trainer.run([0, 1], max_epochs=max_epochs)
    assert handler.validator.epochs == expected


def test_resumed_run_still_validates_its_last_epoch():
    handler = ValidateEveryAndLast(interval=4)
    handler.validator = RecordingValidator()
    trainer = Engine(lambda engine, batch: None)
    handler.attach(trainer)
    trainer.run([0, 1], max_epochs=2)  # "killed" after epoch 2, no validation yet
    trainer.run([0, 1], max_epochs=5)  # resumed to a longer schedule
    assert handler.validator.epochs == [2, 4, 5]
