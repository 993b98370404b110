"""The one exception type for bad input images."""

from __future__ import annotations

import os


class RadiographError(ValueError):
    """An input image that cannot become a valid radiograph tensor.

    The message always starts with the file (or ``<array>``) so that a failing item in a
    long run can be found without a debugger; ``path`` and ``reason`` keep the two parts
    apart for reports (see :class:`squid_monai.data.SkipBadItems`).
    """

    def __init__(self, path: str | os.PathLike | None, reason: str):
        self.path = str(path) if path is not None else "<array>"
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")

    def __reduce__(self):  # keep both fields across DataLoader worker processes
        return (type(self), (self.path, self.reason))


def find_radiograph_error(exc: BaseException | None) -> RadiographError | None:
    """Return the RadiographError behind ``exc`` (MONAI wraps transform errors in RuntimeError)."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, RadiographError):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None
