"""Every learning-rate schedule of a run, stepped once per epoch, whatever the family.

A family's config names its schedulers in one dict (``lr_schedulers``: SQUID has one
per network, an auto-encoder one, a family with a fixed rate none); this handler attaches
MONAI's :class:`~monai.handlers.LrScheduleHandler` for each, so the training handlers list
stays the same for every family. The first scheduler's rate is logged.
"""

from __future__ import annotations

from collections.abc import Mapping

from ignite.engine import Engine
from monai.handlers import LrScheduleHandler

__all__ = ["LrSchedules"]


class LrSchedules:
    def __init__(self, schedulers: Mapping | None):
        self.handlers = [
            LrScheduleHandler(s, print_lr=i == 0) for i, s in enumerate((schedulers or {}).values())
        ]

    def attach(self, engine: Engine) -> None:
        for handler in self.handlers:
            handler.attach(engine)
