"""``benchmarks/memory_tsne.py`` (the paper's Figure 4): the two-sample test, the trainings it
would run, and the whole study on two tiny untrained models whose memories are known: a queue
filled with real patch features of other normal images, and a matrix at its random start."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from squid_monai.loading import save_network_config
from squid_monai.methods.squid.presets import build
from squid_monai.methods.squid.scorer import SQUIDScorer
from squid_monai.workflow import choose_data

from .test_compare import _load

memory_tsne = _load("memory_tsne")


def test_mmd_tells_one_distribution_from_two():
    rng = np.random.default_rng(0)
    x, y, shifted = (
        rng.normal(size=(60, 8)),
        rng.normal(size=(60, 8)),
        rng.normal(0.7, 1.0, size=(60, 8)),
    )
    same, different = memory_tsne.mmd_test(x, y, 200), memory_tsne.mmd_test(x, shifted, 200)
    assert same["p_value"] > 0.05 and different["p_value"] < 0.01
    assert different["mmd2"] > 5 * abs(same["mmd2"])
    assert memory_tsne.mmd_test(x * 100, shifted * 100, 10)["mmd2"] == pytest.approx(
        different["mmd2"]
    )  # scale-free


def test_dry_run_trains_the_missing_model_only(tmp_path, capsys):
    assert (
        memory_tsne.main(
            ["--output_root", str(tmp_path / "runs"), "--dry_run", "--", "--epochs", "1"]
        )
        == 0
    )
    trainings = [line for line in capsys.readouterr().out.splitlines() if " run training " in line]
    assert len(trainings) == 2 and "--network_overrides \"{'memory': 'matrix'}\"" in trainings[1]
    assert "seed0" in trainings[0] and "--network_overrides" not in trainings[0]
    assert (
        memory_tsne.main(
            ["--output_root", str(tmp_path / "runs"), "--queue_model", "q", "--dry_run"]
        )
        == 0
    )
    trainings = [line for line in capsys.readouterr().out.splitlines() if " run training " in line]
    assert len(trainings) == 1 and "matrix/seed0" in trainings[0]


def _model_dir(folder, **overrides):
    gen, disc = build("tiny", **overrides)
    if (
        gen.inpainting.memory.__class__.__name__ == "MemoryQueue"
    ):  # fill it with real features of other images
        data = choose_data(seed=1).calibration(32, max_images=24, cache=False)
        images = torch.stack([torch.as_tensor(data[i]["image"]) for i in range(len(data))])
        gen.enqueue(
            torch.as_tensor(memory_tsne.patch_features(gen, images)).reshape(len(images), 4, -1)
        )
    folder.mkdir(parents=True)
    save_network_config(folder / "network.json", "tiny", **overrides)
    torch.save(SQUIDScorer(gen, disc).state_dict(), folder / "model.pt")
    return folder


def test_queue_items_match_the_features_and_matrix_items_do_not(tmp_path):
    queue, matrix = _model_dir(tmp_path / "queue"), _model_dir(tmp_path / "matrix", memory="matrix")
    out = tmp_path / "study"
    # as a user runs it, in its own process
    command = [
        sys.executable,
        "-m",
        "benchmarks.memory_tsne",
        "--queue_model",
        str(queue),
        "--matrix_model",
        str(matrix),
        "--output_root",
        str(out),
        "--n_images",
        "16",
        "--permutations",
        "100",
        "--perplexity",
        "10",
    ]
    result = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=600,
        cwd=Path(memory_tsne.__file__).parents[1],
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    result = json.loads((out / "memory_tsne.json").read_text())
    q, m = result["memories"]["queue"], result["memories"]["matrix"]
    assert (q["n_items"], q["n_features"], m["n_items"]) == (
        64,
        64,
        64,
    )  # 16 slots x 4 regions; 16 images x 4 tiles
    assert q["p_value"] > 0.05 and m["p_value"] < 0.05 and q["holds"] == m["holds"] == "yes"
    table = (out / "memory_tsne.md").read_text()
    assert (
        "The queue's MMD^2 is smaller than the matrix's" in table
        and "python -m benchmarks.memory_tsne" in table
    )
    assert (out / "memory_tsne.png").stat().st_size > 1000
    with pytest.raises(ValueError, match="MemoryQueue"):
        memory_tsne.load_memory_model(matrix, "queue")
