"""Validation every ``interval`` epochs *and* after the last one."""

from __future__ import annotations

from ignite.engine import Engine, Events
from monai.handlers import ValidationHandler

__all__ = ["ValidateEveryAndLast"]


class ValidateEveryAndLast(ValidationHandler):
    """MONAI's epoch-level ``ValidationHandler``, plus a validation after the final epoch
    when ``interval`` does not divide it.

    Validation is where the scorer is calibrated and its threshold chosen (see
    ``Calibrate``), so without it ``model_final.pt`` would carry the calibration of an
    older epoch's weights."""

    def __init__(self, interval: int, validator=None) -> None:
        super().__init__(interval=interval, validator=validator, epoch_level=True)

    def attach(self, engine: Engine) -> None:
        def due(engine: Engine, epoch: int) -> bool:
            return epoch % self.interval == 0 or epoch == engine.state.max_epochs

        engine.add_event_handler(Events.EPOCH_COMPLETED(event_filter=due), self)
