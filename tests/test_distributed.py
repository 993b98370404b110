"""Distributed training with the bundle's ``multi_gpu_train.json``: two CPU processes
(Gloo) on the tiny preset, then a resumed run in the same output folder.

The two ranks are forked from one helper process that has imported MONAI once (what
``torchrun`` would do twice), each running the bundle exactly as ``python -m
monai.bundle run training`` does, with ``RANK`` / ``WORLD_SIZE`` / ``MASTER_*`` set as
``torchrun`` sets them. A test-only handler (:class:`_RecordReplica`) writes what each
replica held at every iteration and at the end, and the assertions compare the ranks.

Run as a module (``python -m tests.test_distributed <output_dir>``) it is that helper
process.
"""

from __future__ import annotations

import json
import math
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "bundles" / "squid" / "configs"
WORLD = 2
BATCH = 3  # per rank: global batch 6 (--batch_size, split over the ranks) against 16 queue slots
N_VAL = 5  # validation: 5 normal + 5 abnormal images (5 / 5 per rank), then 5 + 4 (5 / 4)
ERASING = 0.5  # the DigitAnatomy recipe's: 2 of each rank's 3 inputs erased, their tokens kept out of the queue
TINY = {
    "preset": "tiny",
    "digitanatomy_length": 24,
    "batch_size": WORLD * BATCH,
    "n_critic": 2,
    "input_erasing": ERASING,
    "calibration_images": 8,
    "val_per_class": N_VAL,
    "progress": False,
}
# the second run's validation set is odd, so that the ranks hold different numbers of images
TEST_OVERRIDE = {
    "validate#dataloader#batch_size": 2,  # several validation batches per rank, as in real runs
    "validate#dataset": "$@data.validation(@image_size, "
    "n_normal=@val_per_class, n_abnormal=@test_val_abnormal)",
    "+train#handlers": [
        {
            "_target_": "tests.test_distributed._RecordReplica",
            "folder": "$os.path.join(@output_dir, 'replicas', str(@epochs))",
            "generator": "@generator",
            "discriminator": "@discriminator",
            "evaluator": "@validate#evaluator",
        }
    ],
}
_MARK = "=== test_distributed: training for"


class _RecordReplica:
    """Test-only trainer handler: per iteration the losses and the memory queues'
    pointers and contents, at the end the replica's whole state, the validation metrics
    and the handlers attached, in ``<folder>/rank<r>.pt``."""

    def __init__(self, folder, generator, discriminator, evaluator):
        self.folder, self.evaluator = Path(folder), evaluator
        self.generator, self.discriminator = generator, discriminator
        self.steps: list[dict] = []
        self.start_epoch = None

    def attach(self, engine):
        from ignite.engine import Events

        engine.add_event_handler(Events.STARTED, self._started)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._iteration)
        engine.add_event_handler(Events.COMPLETED, self._completed)

    def _queues(self):
        from squid_monai.methods.squid.networks import MemoryQueue

        return [m for m in self.generator.modules() if isinstance(m, MemoryQueue)]

    def _started(self, engine):
        self.start_epoch = engine.state.epoch  # after ResumeFromLatest, attached before this

    def _iteration(self, engine):
        out = engine.state.output
        self.steps.append(
            {
                "losses": {k: v for k, v in out.items() if k.startswith("loss")},
                "generator_updated": bool(out["generator_updated"]),
                "queues": [(int(q.pointer), int(q.size), q.memory.clone()) for q in self._queues()],
            }
        )

    def _completed(self, engine):
        def handler_names(e):
            return sorted(
                {
                    type(getattr(fn, "__self__", fn)).__name__
                    for hs in e._event_handlers.values()
                    for fn, *_ in hs
                }
            )

        rank = torch.distributed.get_rank()
        self.folder.mkdir(parents=True, exist_ok=True)
        torch.save(
            {
                "start_epoch": self.start_epoch,
                "epoch": engine.state.epoch,
                "steps": self.steps,
                "skipped_steps": engine.state.skipped_steps,
                "generator": self.generator.state_dict(),
                "discriminator": self.discriminator.state_dict(),
                "val_metrics": {k: float(v) for k, v in self.evaluator.state.metrics.items()},
                "trainer_handlers": handler_names(engine),
                "evaluator_handlers": handler_names(self.evaluator),
                "generator_wrapped": type(engine.generator).__name__,
            },
            self.folder / f"rank{rank}.pt",
        )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_main(rank: int, world: int, port: int, overrides: dict) -> None:
    os.environ.update(
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(world),
        LOCAL_WORLD_SIZE=str(world),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
    )
    torch.set_num_threads(1)
    from monai.bundle import run

    configs = [
        str(CONFIGS / "train.json"),
        str(CONFIGS / "multi_gpu_train.json"),
        overrides.pop("_test_config"),
    ]
    run("training", config_file=configs, **overrides)


def _nonfinite_main(rank: int, world: int, port: int, folder: str) -> None:
    """A SQUIDTrainer on DDP-wrapped tiny networks whose discriminator loss is NaN on
    rank 1 only, at the first iteration: both ranks must skip that step together (one
    rank stepping alone would wait forever in DDP's gradient reduction)."""
    from datetime import timedelta

    from torch.nn.parallel import DistributedDataParallel as DDP

    import squid_monai.methods.squid.trainer as trainer_module
    from squid_monai.methods.squid.presets import build

    torch.set_num_threads(1)
    torch.distributed.init_process_group(
        "gloo",
        init_method=f"tcp://127.0.0.1:{port}",
        rank=rank,
        world_size=world,
        timeout=timedelta(seconds=60),
    )
    torch.manual_seed(0)
    gen, disc = build("tiny")
    if rank == 1:
        calls = {"n": 0}
        original = trainer_module.discriminator_loss

        def nan_once(*args, **kwargs):
            calls["n"] += 1
            loss = original(*args, **kwargs)
            return loss * float("nan") if calls["n"] == 1 else loss

        trainer_module.discriminator_loss = nan_once
    torch.manual_seed(rank + 1)
    batches = [{"image": torch.rand(2, 1, 32, 32)} for _ in range(3)]
    trainer = trainer_module.SQUIDTrainer(
        device="cpu",
        max_epochs=1,
        train_data_loader=batches,
        epoch_length=len(batches),
        generator=DDP(gen, broadcast_buffers=False),
        discriminator=DDP(disc, broadcast_buffers=False),
        g_optimizer=torch.optim.Adam(gen.parameters()),
        d_optimizer=torch.optim.Adam(disc.parameters()),
    )
    trainer.run()
    torch.save(
        {
            "skipped_steps": trainer.state.skipped_steps,
            "generator": gen.state_dict(),
            "discriminator": disc.state_dict(),
        },
        Path(folder) / f"nonfinite_rank{rank}.pt",
    )
    torch.distributed.destroy_process_group()


def _launch(output_dir: str) -> None:
    """Fork ``WORLD`` ranks of the bundle's training for 1 epoch, then again for 2 in the
    same folder (a resumed run), then the non-finite-loss scenario; MONAI is imported
    once, before the forks. Between the runs, what the first command left: its
    checkpoints and tracking runs."""
    import monai.bundle  # noqa: F401

    out = Path(output_dir)
    test_config = out / "test_override.json"
    out.mkdir(parents=True, exist_ok=True)
    test_config.write_text(json.dumps(TEST_OVERRIDE))
    for epochs in (1, 2):
        print(f"{_MARK} {epochs} epochs", flush=True)
        overrides = {
            **TINY,
            "epochs": epochs,
            "output_dir": output_dir,
            "_test_config": str(test_config),
            "test_val_abnormal": N_VAL if epochs == 1 else N_VAL - 1,
        }
        torch.multiprocessing.start_processes(
            _rank_main, args=(WORLD, _free_port(), overrides), nprocs=WORLD, start_method="fork"
        )
        if epochs == 1:
            left = {
                "checkpoints": sorted(p.name for p in (out / "models").glob("*.pt")),
                "mlflow_runs": _mlflow_runs(out),
            }
            (out / "after_first.json").write_text(json.dumps(left))
    torch.multiprocessing.start_processes(
        _nonfinite_main, args=(WORLD, _free_port(), output_dir), nprocs=WORLD, start_method="fork"
    )


def _mlflow_runs(output_dir: Path) -> int | None:
    """Runs in the output folder's tracking store (None when the bundle does not track)."""
    if "MLFlowHandler" not in (CONFIGS / "train.json").read_text():
        return None
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{output_dir / 'mlruns.db'}")
    return sum(len(client.search_runs([e.experiment_id])) for e in client.search_experiments())


def _replicas(output_dir: Path, epochs: int) -> list[dict]:
    folder = output_dir / "replicas" / str(epochs)
    return [torch.load(folder / f"rank{r}.pt", weights_only=True) for r in range(WORLD)]


@pytest.fixture(scope="module")
def ddp_runs(tmp_path_factory):
    """One output folder trained for 1 epoch, then resumed to 2: the folder, then per
    command its log and the replicas' records; and what the first command left."""
    out = tmp_path_factory.mktemp("ddp")
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
    env.pop("MLFLOW_TRACKING_URI", None)  # the store of the output folder
    result = subprocess.run(
        [sys.executable, "-m", "tests.test_distributed", str(out)],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=600,
    )
    log = result.stdout
    assert result.returncode == 0, log[-4000:]
    first_log, second_log = log.split(f"{_MARK} 2 epochs")
    return (
        out,
        (first_log, _replicas(out, 1)),
        (second_log, _replicas(out, 2)),
        json.loads((out / "after_first.json").read_text()),
    )


def _assert_identical(a: dict, b: dict, what: str) -> None:
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, f"{what} differ between ranks: {different[:5]}"


def test_replicas_stay_identical_at_every_step(ddp_runs):
    _, (_, first), (_, second), _ = ddp_runs
    for replicas in (first, second):
        r0, r1 = replicas
        assert r0["generator_wrapped"] == "DistributedDataParallel"
        assert len(r0["steps"]) == len(r1["steps"]) > 0
        for i, (s0, s1) in enumerate(zip(r0["steps"], r1["steps"])):
            assert s0["generator_updated"] == s1["generator_updated"]
            for (p0, n0, m0), (p1, n1, m1) in zip(s0["queues"], s1["queues"]):
                assert (p0, n0) == (p1, n1), f"queue pointer/size differ at iteration {i}"
                assert torch.equal(m0, m1), f"queue contents differ at iteration {i}"
        _assert_identical(r0["generator"], r1["generator"], "generator weights and buffers")
        _assert_identical(
            r0["discriminator"], r1["discriminator"], "discriminator weights and buffers"
        )


def test_every_rank_enqueues_the_global_batch(ddp_runs):
    _, (_, first), _, _ = ddp_runs
    steps = first[0]["steps"]
    assert any(
        not s["generator_updated"] for s in steps
    )  # discriminator-only iterations ran (n_critic 2)
    slots = steps[0]["queues"][0][2].shape[1]
    clean = BATCH - min(
        round(ERASING * BATCH), BATCH - 1
    )  # images per rank whose tokens are enqueued
    written = 0
    for step in steps:
        written += WORLD * clean if step["generator_updated"] else 0
        pointer, size, _ = step["queues"][0]
        assert (pointer, size) == (written % slots, min(written, slots))


def test_losses_finite_and_no_step_skipped(ddp_runs):
    _, (_, first), (_, second), _ = ddp_runs
    for replica in (*first, *second):
        assert replica["skipped_steps"] == 0
        for step in replica["steps"]:
            assert all(math.isfinite(v) for v in step["losses"].values()), step["losses"]


def test_nonfinite_loss_on_one_rank_skips_the_step_on_all(ddp_runs):
    out = ddp_runs[0]
    r0, r1 = (torch.load(out / f"nonfinite_rank{r}.pt", weights_only=True) for r in range(WORLD))
    # the first iteration's discriminator step is skipped on both ranks, nothing else
    assert r0["skipped_steps"] == r1["skipped_steps"] == 1
    _assert_identical(r0["generator"], r1["generator"], "generator weights and buffers")
    _assert_identical(r0["discriminator"], r1["discriminator"], "discriminator weights and buffers")


def test_validation_covers_the_whole_set_once(ddp_runs):
    """The gathered metrics count every image once (10 images split 5 / 5, then 9 split
    5 / 4: no padding duplicate), and equal those of one process scoring all images with
    the final weights."""
    from squid_monai.loading import load_scorer
    from squid_monai.metrics import roc_auc
    from squid_monai.workflow import DigitAnatomySource

    out, (_, first), (_, second), _ = ddp_runs
    assert first[0]["val_metrics"] == first[1]["val_metrics"]
    assert (first[0]["val_metrics"]["val/n"], first[0]["val_metrics"]["val/n_abnormal"]) == (
        2 * N_VAL,
        N_VAL,
    )
    metrics = second[0]["val_metrics"]
    assert metrics == second[1]["val_metrics"]
    assert (metrics["val/n"], metrics["val/n_normal"], metrics["val/n_abnormal"]) == (
        2 * N_VAL - 1,
        N_VAL,
        N_VAL - 1,
    )
    scorer = load_scorer(out / "models" / "model_final.pt")
    data = DigitAnatomySource(seed=0).validation(32, n_normal=N_VAL, n_abnormal=N_VAL - 1)
    images = torch.stack([torch.as_tensor(item["image"]) for item in data])
    labels = [int(item["label"]) for item in data]
    scores = scorer(images.float())["score"]
    assert metrics["val_auc"] == pytest.approx(roc_auc(labels, scores), abs=1e-6)


def test_only_rank0_logs_and_saves(ddp_runs):
    out, (first_log, first), _, after_first = ddp_runs

    def rank0_only(names):  # handler classes that save, log or track
        return {
            n for n in names if n.endswith(("CheckpointSaver", "StatsHandler", "MLFlowHandler"))
        }

    assert (
        len(rank0_only(first[0]["trainer_handlers"])) >= 2
        and len(rank0_only(first[0]["evaluator_handlers"])) >= 2
    )
    for names in (first[1]["trainer_handlers"], first[1]["evaluator_handlers"]):
        assert not rank0_only(names), names
    assert first_log.count("training finished: best validation AUC") == 1
    assert first_log.count("Epoch[1] Complete") == 2  # trainer and evaluator, rank 0 only
    assert after_first["checkpoints"] == ["checkpoint_epoch=1.pt", "model.pt", "model_final.pt"]
    if after_first["mlflow_runs"] is not None:  # the bundle tracks: one run, none from rank 1
        assert after_first["mlflow_runs"] == 1


def test_resume_loads_the_same_checkpoint_on_every_rank(ddp_runs):
    _, (_, first), (second_log, second), _ = ddp_runs
    assert "resumed from" in second_log and "checkpoint_epoch=1.pt" in second_log
    assert [r["start_epoch"] for r in second] == [1, 1]
    assert [r["epoch"] for r in second] == [2, 2]
    assert len(second[0]["steps"]) == len(first[0]["steps"])  # the second epoch only


if __name__ == "__main__":
    _launch(sys.argv[1])


@pytest.mark.parametrize("method", ["memae", "fanogan"])
def test_a_family_the_multi_gpu_config_does_not_wire_is_refused_up_front(method, tmp_path):
    """Before any process group or network exists, naming the method and the way out."""
    from monai.bundle import run

    configs = [
        str(CONFIGS / name)
        for name in ("train.json", f"methods/{method}.json", "multi_gpu_train.json")
    ]
    with pytest.raises(RuntimeError) as failure:  # monai.bundle wraps the expression's error
        run("training", config_file=configs, output_dir=str(tmp_path), logging_file=False, **TINY)
    assert isinstance(failure.value.__cause__, ValueError)
    assert re.search(
        rf"not for family '{method}'.*drop multi_gpu_train.json", str(failure.value.__cause__)
    )
    assert not (tmp_path / "models").exists()
