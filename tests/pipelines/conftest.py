"""Fixtures for the deploy tests (the makers live in ``factories.py``)."""

from pathlib import Path

import pytest

from tests.pipelines.factories import save_standin


@pytest.fixture(scope="session")
def standin_model(tmp_path_factory) -> Path:
    """The stand-in exported model, its card embedded as the ``squid.json`` extra file."""
    return save_standin(tmp_path_factory.mktemp("model") / "squid_standin.ts")
