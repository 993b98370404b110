"""A corrupt image in the training data: a clear error naming it, or skipped and reported."""

import numpy as np
from PIL import Image

from ..trained_bundle import run_command, train_args


def _folder_dataset(root, n=12):
    rng = np.random.default_rng(0)
    for cls in ("normal", "abnormal"):
        (root / cls).mkdir(parents=True)
        for i in range(n):
            Image.fromarray((rng.random((40, 40)) * 255).astype(np.uint8)).save(
                root / cls / f"{cls}_{i}.png"
            )
    (root / "normal" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    return root


def test_corrupt_training_image_is_named_or_skipped(tmp_path):
    data = _folder_dataset(tmp_path / "data")
    protocol = [
        "--dataset_dir",
        str(data),
        "--mlflow_tracking",
        "false",
        "--calibration_images",
        "4",
        "--val_per_class",
        "4",
        "--report_per_class",
        "2",
    ]
    failed = run_command(train_args(tmp_path / "strict", 1, *protocol))
    assert failed.returncode != 0
    assert "broken.png" in failed.stdout + failed.stderr
    skipped = run_command(
        train_args(tmp_path / "lenient", 1, *protocol, "--skip_bad_images", "true")
    )
    assert skipped.returncode == 0, skipped.stderr[-2000:]
    report = (tmp_path / "lenient" / "skipped_training_images.csv").read_text()
    assert "broken.png" in report
