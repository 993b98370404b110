"""A tiny trained bundle, shared by the bundle tests: the user's command, as typed, on
the embedded DigitAnatomy data with a toy network."""

import os
import subprocess
import sys

import pytest

from ..trained_bundle import REPO
from ..trained_bundle import TINY
from ..trained_bundle import trained_bundle as shared_trained_bundle

TRAIN_CONFIG = "bundles/squid/configs/train.json"


def train_command(output_dir, epochs=2, *extra):
    return [sys.executable, "-m", "monai.bundle", "run", "training", "--config_file", TRAIN_CONFIG,
            "--epochs", str(epochs), "--output_dir", str(output_dir), *TINY, *extra]


def run(cmd, cwd=REPO, timeout=600, **kw):
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, **kw)


@pytest.fixture(scope="session")
def trained_bundle(tmp_path_factory):
    """Output folder of the session's finished 2-epoch tiny run (models/, eval/, mlruns.db,
    model registered) and its command-line output."""
    bundle = shared_trained_bundle(tmp_path_factory)
    return bundle.output_dir, bundle
