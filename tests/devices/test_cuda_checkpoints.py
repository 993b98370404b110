"""Findings 2, 3 and 5 of issue 42: what a GPU run saved resumes, exports and scores anywhere.

A tiny SQUID run is trained with every ``torch.save`` tagging its tensors ``cuda:0`` (what a
GPU run writes): loading such a file without ``map_location`` fails on a CPU machine, and
loading it *to* the training device puts the RNG state (a CPU byte tensor by contract) on
that device. ``meta`` stands in for the GPU where a second device is needed."""

import shutil

import pytest
import torch
from ignite.engine import Engine

from squid_monai.export import export_bundle
from squid_monai.handlers import ResumeFromLatest, SaveLatest
from squid_monai.loading import load_scorer

from ..trained_bundle import BUNDLE
from .helpers import TRAIN, device_constants, parser, saved_as_cuda, train


@pytest.fixture(scope="module")
def gpu_run(tmp_path_factory):
    """The output folder of a 1-epoch tiny run whose files all say ``cuda:0``."""
    out = tmp_path_factory.mktemp("gpu_run")
    with saved_as_cuda():
        train([TRAIN], out, epochs=1)
    return out


@pytest.fixture
def run_copy(gpu_run, tmp_path):
    shutil.copytree(gpu_run, tmp_path / "run")
    return tmp_path / "run"


def test_a_gpu_checkpoint_resumes_exports_and_scores_on_a_cpu(run_copy, monkeypatch):
    if not torch.cuda.is_available():  # the files really say cuda:0
        with pytest.raises(RuntimeError, match="CUDA"):
            torch.load(run_copy / "models" / "model.pt", weights_only=True)
    resumed_at = []
    original = ResumeFromLatest.__call__

    def spy(self, engine):
        original(self, engine)
        resumed_at.append(engine.state.epoch)

    monkeypatch.setattr(ResumeFromLatest, "__call__", spy)
    train([TRAIN], run_copy, epochs=2)
    assert resumed_at == [1] and (run_copy / "models" / "checkpoint_epoch=2.pt").is_file()
    result = export_bundle(BUNDLE, run_copy)
    assert not device_constants(
        str(torch.jit.load(result["filepath"], map_location="cpu").inlined_graph)
    )
    scorer = load_scorer(run_copy / "models" / "model.pt")
    assert torch.isfinite(scorer(torch.rand(2, 1, 32, 32))["score"]).all()


def test_resuming_on_another_device_loads_the_checkpoint_to_the_cpu_first(run_copy):
    """The bundle's resume handler, wired for a device that is not the CPU (meta), resumes the
    GPU-tagged checkpoint: the file loads to the CPU, each state dict moves itself to its
    object's device, and the RNG state is restored as a CPU byte tensor."""
    parsed = parser([TRAIN], run_copy, epochs=2, device="$torch.device('meta')")
    trainer = parsed.get_parsed_content("train#trainer")
    resume = next(
        h for h in parsed.get_parsed_content("train#handlers") if isinstance(h, ResumeFromLatest)
    )
    resume(trainer)
    assert trainer.state.epoch == 1
    assert all(p.device.type == "meta" for p in parsed.get_parsed_content("scorer").parameters())


def _engine(scaler, folder, epochs, resume=False):
    engine = Engine(lambda e, batch: None)
    objects = {"scaler": scaler}
    if resume:
        ResumeFromLatest(folder, objects).attach(engine)
    SaveLatest(folder, objects).attach(engine)
    engine.run([0], max_epochs=epochs)
    return engine


def test_a_scaler_state_is_restored_only_when_the_saved_run_used_one(tmp_path):
    without_amp = tmp_path / "without_amp"
    _engine(torch.amp.GradScaler("cpu", enabled=False), without_amp, 1)
    fresh = torch.amp.GradScaler("cpu", enabled=True, init_scale=1024.0)
    assert _engine(fresh, without_amp, 2, resume=True).state.epoch == 2
    assert fresh.get_scale() == 1024.0  # nothing to restore: the AMP run starts its scaler fresh

    with_amp = tmp_path / "with_amp"
    _engine(torch.amp.GradScaler("cpu", enabled=True, init_scale=8.0), with_amp, 1)
    restored = torch.amp.GradScaler("cpu", enabled=True, init_scale=1024.0)
    _engine(restored, with_amp, 2, resume=True)
    assert restored.get_scale() == 8.0
    _engine(
        torch.amp.GradScaler("cpu", enabled=False), with_amp, 3, resume=True
    )  # AMP off: ignored
