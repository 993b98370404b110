"""One tiny trained bundle for the evaluate / inference / export tests, trained once per
test session (about a minute) with the user's training command, then shared read-only
except for the folders each test module writes (``eval/``, ``inference/``, exports in
``tmp_path``)."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BUNDLE = REPO / "bundles" / "squid"
CONFIGS = BUNDLE / "configs"
#: toy run: 2 iterations per epoch, 20 + 20 validation (and test) images, 16 calibration images
VAL_SIZE = 20
IMAGE_SIZE = 32  # the tiny preset
TINY = [
    "--preset",
    "tiny",
    "--digitanatomy_length",
    "32",
    "--val_per_class",
    str(VAL_SIZE),
    "--calibration_images",
    "16",
    "--progress",
    "false",
]


@dataclass(frozen=True)
class TrainedBundle:
    output_dir: Path
    stdout: str

    @property
    def model(self) -> Path:
        return self.output_dir / "models" / "model.pt"


_CACHE: dict[str, TrainedBundle] = {}


def run_command(args: list[str], timeout: int = 600) -> subprocess.CompletedProcess:
    """``python -m monai.bundle <args>`` from the repository root, as a user types it."""
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    return subprocess.run(
        [sys.executable, "-m", "monai.bundle", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def evaluate_test_split(output_dir) -> list[dict]:
    """``evaluating`` on the test split of the tiny run in ``output_dir`` (MLflow off), checked
    to succeed and to score every test image without error; the rows of its ``scores.csv``."""
    config_file = f"['{CONFIGS / 'train.json'}','{CONFIGS / 'evaluate.json'}']"
    result = run_command(
        ["run", "evaluating", "--config_file", config_file, "--output_dir", str(output_dir)]
        + ["--eval_split", "test", *TINY, "--mlflow_tracking", "false"]
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    with open(Path(output_dir) / "eval" / "test" / "scores.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2 * VAL_SIZE and all(r["score"] and not r["error"] for r in rows)
    return rows


def train_args(output_dir, epochs: int = 2, *extra: str) -> list[str]:
    """``monai.bundle`` arguments of the tiny training run into ``output_dir``."""
    return [
        "run",
        "training",
        "--config_file",
        str(CONFIGS / "train.json"),
        "--epochs",
        str(epochs),
        "--output_dir",
        str(output_dir),
        *TINY,
        *extra,
    ]


def trained_bundle(tmp_path_factory) -> TrainedBundle:
    """The session's tiny trained bundle (trained on first use; its best model registered as
    ``squid@champion`` in the run's MLflow store)."""
    if "bundle" not in _CACHE:
        out = tmp_path_factory.mktemp("tiny_bundle")
        result = run_command(train_args(out, 2, "--register_model", "true"))
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        _CACHE["bundle"] = TrainedBundle(out, result.stdout)
    return _CACHE["bundle"]
