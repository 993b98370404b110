"""A tiny trained bundle, shared by the bundle tests: the user's command, as typed, on
the embedded DigitAnatomy data with a toy network."""

import pytest

from ..trained_bundle import trained_bundle as shared_trained_bundle


@pytest.fixture(scope="session")
def trained_bundle(tmp_path_factory):
    """Output folder of the session's finished 2-epoch tiny run (models/, eval/, mlruns.db,
    model registered) and its command-line output."""
    bundle = shared_trained_bundle(tmp_path_factory)
    return bundle.output_dir, bundle
