"""Finding 7 of issue 42: the multi-GPU rules the model card states.

* ``batch_size`` is the global batch the recipes assume; each of N ranks loads
  ``batch_size / N`` (an error when N does not divide it), so the learning rate, the EMA
  warm-up, ``n_critic`` and the queue refill (counted in iterations) mean what they mean on
  one device;
* the calibration runs once, on rank 0, and is broadcast to the other ranks;
* determinism is set once, at start-up, by a switch (off by default); the per-epoch re-seeding
  only seeds the random generators."""

import pytest
import torch
from ignite.engine import Engine

from squid_monai import distributed
from squid_monai.handlers import Calibrate, EpochSeed

from .helpers import CONFIG_SETS, TRAIN, parser


def test_the_per_rank_batch_is_the_global_batch_over_the_ranks():
    assert distributed.per_rank_batch(128, world=8) == 16
    assert distributed.per_rank_batch(16, world=1) == 16
    with pytest.raises(ValueError, match="batch_size 6 .* 4 ranks"):
        distributed.per_rank_batch(6, world=4)


def test_the_multi_gpu_config_loads_the_per_rank_batch(tmp_path, monkeypatch):
    monkeypatch.setattr(distributed, "world_size", lambda: 2)
    parsed = parser(CONFIG_SETS["multi_gpu"], tmp_path, batch_size=8)
    assert parsed.get_parsed_content("train#dataloader#batch_size") == 4
    single = parser([TRAIN], tmp_path, batch_size=8)
    assert single.get_parsed_content("train#dataloader#batch_size") == 8


class _Echo(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 1, 3, padding=1)

    def forward(self, x):
        return {"reconstruction": self.conv(x)}


class _NotOnThisRank:
    def __iter__(self):
        raise AssertionError("the calibration images were read on a rank other than 0")


def _calibrate_rank(rank: int, world: int, port: int, folder: str) -> None:
    from datetime import timedelta

    from squid_monai.methods.autoencoder import ReconstructionScorer

    torch.set_num_threads(1)
    torch.distributed.init_process_group(
        "gloo",
        init_method=f"tcp://127.0.0.1:{port}",
        rank=rank,
        world_size=world,
        timeout=timedelta(seconds=60),
    )
    torch.manual_seed(0)
    scorer = ReconstructionScorer(_Echo())
    loader = [torch.rand(4, 1, 8, 8) for _ in range(2)] if rank == 0 else _NotOnThisRank()
    engine = Engine(lambda e, b: None)
    engine.state.device = torch.device("cpu")
    Calibrate(scorer, loader)(engine)
    torch.save(
        {k: v for k, v in scorer.state_dict().items() if "." not in k}, f"{folder}/rank{rank}.pt"
    )
    torch.distributed.destroy_process_group()


def test_the_calibration_runs_on_rank_0_and_reaches_every_rank(tmp_path):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    torch.multiprocessing.start_processes(
        _calibrate_rank, args=(2, port, str(tmp_path)), nprocs=2, start_method="fork"
    )
    first, second = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2))
    assert first["std"] != 1.0 and first["mean"] != 0.0  # calibrated
    assert all(torch.equal(first[k], second[k]) for k in first)


@pytest.fixture
def backend_flags():
    """The global determinism flags, restored after the test."""
    saved = (
        torch.backends.cudnn.deterministic,
        torch.backends.cudnn.benchmark,
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
    )
    yield
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = saved[:2]
    torch.use_deterministic_algorithms(saved[2], warn_only=saved[3])


def test_the_epoch_seed_seeds_the_generators_only(backend_flags):
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = False, True
    engine = Engine(lambda e, b: None)
    engine.state.epoch = 3
    draws = []
    for _ in range(2):
        EpochSeed(seed=0)(engine)
        draws.append(torch.rand(3))
    assert torch.equal(*draws)
    assert (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark) == (False, True)


@pytest.mark.parametrize("exact", [False, True])
def test_determinism_is_a_switch_set_at_start_up(exact, tmp_path, backend_flags):
    torch.backends.cudnn.deterministic = not exact
    torch.use_deterministic_algorithms(not exact)
    parsed = parser([TRAIN], tmp_path, deterministic=exact)
    parsed.get_parsed_content("initialize")
    assert (
        torch.backends.cudnn.deterministic is exact and torch.backends.cudnn.benchmark is not exact
    )
    assert torch.are_deterministic_algorithms_enabled() is exact
