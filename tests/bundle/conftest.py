"""A tiny trained bundle, shared by the bundle tests: the user's command, as typed, on
the embedded DigitAnatomy data with a toy network."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
TRAIN_CONFIG = "bundles/squid/configs/train.json"
# toy sizes: 2 iterations per epoch, 40 validation images, 16 calibration images
TINY = ["--preset", "tiny", "--digitanatomy_length", "32", "--val_per_class", "20",
        "--calibration_images", "16", "--progress", "false"]


def train_command(output_dir, epochs=2, *extra):
    return [sys.executable, "-m", "monai.bundle", "run", "training", "--config_file", TRAIN_CONFIG,
            "--epochs", str(epochs), "--output_dir", str(output_dir), *TINY, *extra]


def run(cmd, cwd=REPO, timeout=600, **kw):
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, **kw)


@pytest.fixture(scope="session")
def trained_bundle(tmp_path_factory):
    """Output folder of a finished 2-epoch tiny run (models/, eval/, mlruns.db), its model
    registered in the run's MLflow registry."""
    out = tmp_path_factory.mktemp("trained")
    result = run(train_command(out, 2, "--register_model", "true"))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return out, result
