"""The user's main job end to end: train, checkpoint, resume."""

import json
import signal
import subprocess
import sys
import time

import torch

from squid_monai.handlers import latest_checkpoint
from squid_monai.loading import load_scorer
from squid_monai.methods import get_family, get_recipe

from ..trained_bundle import REPO, run_command, train_args


def test_training_command_end_to_end(trained_bundle):
    out, result = trained_bundle
    models = out / "models"
    assert "best validation AUC" in result.stdout
    for name in (
        "model.pt",
        "model_final.pt",
        "network.json",
        "training.json",
        "checkpoint_epoch=2.pt",
    ):
        assert (models / name).is_file(), name
    pinned = json.loads((models / "training.json").read_text())
    assert (pinned["family"], pinned["recipe"]) == ("squid", "digitanatomy")
    assert pinned["settings"] == json.loads(
        json.dumps(get_recipe(get_family("squid"), "digitanatomy"))
    )  # the recipe the run started with (the family's over the shared defaults)
    scorer = load_scorer(models / "model.pt")
    assert scorer.std.item() > 0 and scorer.mean.item() != 0  # calibration stored with the model
    assert 0 < scorer.threshold.item() < 1 and 0 < scorer.normal_threshold.item() < 1
    queue = scorer.generator.inpainting.memory
    assert queue.size.item() > 0  # the memory queue is saved with its contents and pointer
    assert (
        not list(REPO.glob("models")) and not (REPO / "mlruns.db").exists()
    )  # nothing lands in the cwd


def test_checkpoint_holds_everything_to_continue_and_loads_weights_only(trained_bundle):
    out, _ = trained_bundle
    ckpt = torch.load(latest_checkpoint(out / "models"), weights_only=True)
    expected = {
        "model",
        "g_optimizer",
        "d_optimizer",
        "g_scheduler",
        "d_scheduler",
        "g_scaler",
        "d_scaler",
        "trainer",
        "best_metric",
        "rng",
    }
    assert expected <= set(ckpt)
    assert ckpt["trainer"]["iteration"] == 4  # 2 epochs x 2 iterations
    assert "generator.inpainting.memory.pointer" in ckpt["model"]


def _wait_for(path_glob, folder, proc, timeout=300):
    start = time.time()
    while time.time() - start < timeout:
        if list(folder.glob(path_glob)) or proc.poll() is not None:
            return
        time.sleep(0.2)


def test_killed_run_resumes_to_the_same_weights(trained_bundle, tmp_path):
    """Kill a 2-epoch run as soon as its first epoch is saved, restart the same command:
    the final weights equal those of the uninterrupted run (CPU, same seed)."""
    reference, _ = trained_bundle
    args = train_args(tmp_path)
    proc = subprocess.Popen(
        [sys.executable, "-m", "monai.bundle", *args],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    _wait_for("checkpoint_epoch=1.pt", tmp_path / "models", proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert (tmp_path / "models" / "checkpoint_epoch=1.pt").exists()
    assert not (tmp_path / "models" / "model_final.pt").exists()  # really killed mid-run
    result = run_command(args)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "resumed from" in result.stdout + result.stderr
    assert [p.name for p in (tmp_path / "models").glob("checkpoint_epoch=*.pt")] == [
        "checkpoint_epoch=2.pt"
    ]
    a = torch.load(reference / "models" / "model_final.pt", weights_only=True)
    b = torch.load(tmp_path / "models" / "model_final.pt", weights_only=True)
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, different[:5]
