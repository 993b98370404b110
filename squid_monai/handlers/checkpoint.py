"""Resuming a killed run exactly: what a checkpoint holds beyond the networks, and the
handler that finds and loads the latest checkpoint.

The latest checkpoint (written every epoch by MONAI's ``CheckpointSaver``) holds the
networks with their memory queues and pointers, optimisers, schedulers, AMP scalers, the
trainer's state, the validation's best metric and the RNG states. Restarting the same
command resumes from it; ``EpochSeed`` re-seeds every epoch from (seed, epoch), so the
resumed run draws the same shuffles and augmentations as an uninterrupted one.

Distributed runs: only rank 0 writes checkpoints; at resume every rank loads the file
rank 0 chose (the checkpoint folder must be shared by the nodes), and each rank seeds its
random augmentation and masking from (seed, epoch, rank).
"""

from __future__ import annotations

import logging
import random
import re
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from ignite.engine import Engine, Events
from monai.data.utils import set_rnd
from monai.handlers import CheckpointLoader, CheckpointSaver

from ..artifact import refuse_reference_folder
from ..determinism import seed_generators
from ..distributed import rank

__all__ = [
    "AtomicCheckpointSaver",
    "RNGState",
    "BestMetricState",
    "SaveLatest",
    "ResumeFromLatest",
    "EpochSeed",
    "latest_checkpoint",
    "rank_seed",
]

logger = logging.getLogger(__name__)

_EPOCH = re.compile(r"epoch=(\d+)")
#: seed offset between ranks: larger than any epoch count, so (epoch, rank) never share a seed
_RANK_SEED_STRIDE = 1_000_003


def rank_seed(seed: int, epoch: int = 0) -> int:
    """The seed of (seed, epoch) on this rank: ``seed + epoch`` on rank 0 and in a single
    process, offset by a stride larger than any epoch count on the other ranks."""
    return int(seed) + int(epoch) + rank() * _RANK_SEED_STRIDE


def _agreed(path: Path | None) -> Path | None:
    """Rank 0's choice of checkpoint, on every rank (a replica resuming from another
    epoch than the others would train out of step with them)."""
    if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return path
    choice = [str(path) if path is not None else None]
    dist.broadcast_object_list(choice, src=0)
    return Path(choice[0]) if choice[0] is not None else None


class RNGState:
    """torch, numpy and Python RNG states as a ``weights_only``-loadable state dict."""

    def state_dict(self) -> dict:
        kind, keys, pos, has_gauss, cached = np.random.get_state()
        return {
            "torch": torch.get_rng_state(),
            "numpy": {
                "kind": kind,
                "keys": torch.from_numpy(keys.astype(np.int64)),
                "pos": int(pos),
                "has_gauss": int(has_gauss),
                "cached": float(cached),
            },
            "python": [list(x) if isinstance(x, tuple) else x for x in random.getstate()],
        }

    def load_state_dict(self, state: dict) -> None:
        # torch takes its state only as a CPU byte tensor, whatever device the file was loaded to
        torch.set_rng_state(state["torch"].to("cpu", torch.uint8))
        n = state["numpy"]
        keys = n["keys"].cpu().numpy().astype(np.uint32)
        np.random.set_state((n["kind"], keys, n["pos"], n["has_gauss"], n["cached"]))
        version, internal, gauss = state["python"]
        random.setstate((version, tuple(internal), gauss))


class BestMetricState:
    """The evaluator's best key metric and its epoch, so a resumed run does not overwrite
    the best model with a worse one."""

    def __init__(self, evaluator: Engine):
        self.evaluator = evaluator

    def state_dict(self) -> dict:
        s = self.evaluator.state
        return {"best_metric": float(s.best_metric), "best_metric_epoch": int(s.best_metric_epoch)}

    def load_state_dict(self, state: dict) -> None:
        self.evaluator.state.best_metric = state["best_metric"]
        self.evaluator.state.best_metric_epoch = state["best_metric_epoch"]


def latest_checkpoint(folder: str | Path, prefix: str = "checkpoint") -> Path | None:
    """The checkpoint of the highest epoch in ``folder`` (``<prefix>_epoch=<n>.pt``)."""
    found = [
        (int(m.group(1)), p)
        for p in Path(folder).glob(f"{prefix}*epoch=*.pt")
        if (m := _EPOCH.search(p.name))
    ]
    return max(found)[1] if found else None


class AtomicCheckpointSaver(CheckpointSaver):
    """MONAI's ``CheckpointSaver`` writing atomically (temporary file, then rename).

    MONAI writes in place (``atomic=False``, for group-readable files); a run killed
    mid-write then leaves a truncated checkpoint and loses the previous one. Ignite's
    atomic path also makes the file group/other-readable, so nothing is given up.
    The key-metric model is saved only when the engine's best metric improved. Never into
    a reference model's folder (refused when the saver is made, before any training).
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        refuse_reference_folder(self.save_dir)
        for checkpoint in (
            self._final_checkpoint,
            self._key_metric_checkpoint,
            self._interval_checkpoint,
        ):
            if checkpoint is not None:
                checkpoint.save_handler._atomic = True

    def metrics_completed(self, engine: Engine) -> None:
        """Save the key-metric model only in an epoch that set a new best. Ignite's saver
        keeps its record of saved scores in memory: after a resume it would overwrite the
        best model with whatever the first validation gives (``BestMetricState`` restores
        the best metric the engine compares against)."""
        if getattr(engine.state, "best_metric_epoch", engine.state.epoch) == engine.state.epoch:
            super().metrics_completed(engine)


class SaveLatest:
    """Every epoch, replace ``<folder>/checkpoint_epoch=<n>.pt`` with everything needed to
    continue: ``save_dict`` plus the trainer engine it is attached to (added at attach
    time, which keeps the bundle config free of a trainer <-> handler cycle). Writes are
    atomic (temporary file, then rename): a kill mid-write never loses the previous one."""

    def __init__(self, folder: str | Path, save_dict: dict, enabled: bool = True):
        self.folder, self.save_dict, self.enabled = str(folder), save_dict, enabled

    def attach(self, engine: Engine) -> None:
        if self.enabled:
            save_dict = {**self.save_dict, "trainer": engine}
            AtomicCheckpointSaver(
                self.folder, save_dict, file_prefix="", save_interval=1, epoch_level=True, n_saved=1
            ).attach(engine)
            engine.add_event_handler(Events.EPOCH_COMPLETED, self._remove_stale)

    def _remove_stale(self, engine: Engine) -> None:
        """Older epochs' checkpoints, e.g. the one a resumed run started from (the saver only
        knows the files of its own process). Runs after the new one is written."""
        current = latest_checkpoint(self.folder)
        for path in Path(self.folder).glob("checkpoint_epoch=*.pt"):
            if current is not None and path != current:
                path.unlink(missing_ok=True)


class _ScalerState:
    """The load side of a ``GradScaler`` in a checkpoint: a run without AMP saved an empty
    state, which an enabled scaler refuses; the scaler then starts fresh (resuming a run
    without AMP into one with it), and a disabled one ignores what an AMP run saved."""

    def __init__(self, scaler: torch.amp.GradScaler):
        self.scaler = scaler

    def state_dict(self) -> dict:
        return self.scaler.state_dict()

    def load_state_dict(self, state: dict) -> None:
        if state:
            self.scaler.load_state_dict(state)
        elif self.scaler.is_enabled():
            logger.info("the checkpoint's run did not use AMP: its gradient scaler starts fresh")


class ResumeFromLatest:
    """At the trainer's start, load the latest checkpoint of ``folder`` into ``load_dict``
    plus the trainer engine (``weights_only=True``), or start fresh when there is none.
    ``enabled=False`` always starts fresh.

    The file is loaded to the CPU (``map_location``), whatever device wrote it, and each
    object's ``load_state_dict`` moves its state to that object's device: loaded straight to
    a GPU, the RNG state (a CPU byte tensor by contract) would not restore. A scaler state is
    restored only when the saved run used AMP."""

    def __init__(
        self, folder: str | Path, load_dict: dict, enabled: bool = True, map_location="cpu"
    ):
        self.folder, self.enabled, self.map_location = Path(folder), enabled, map_location
        self.load_dict = {
            key: _ScalerState(obj) if isinstance(obj, torch.amp.GradScaler) else obj
            for key, obj in load_dict.items()
        }

    def attach(self, engine: Engine) -> None:
        self.load_dict = {**self.load_dict, "trainer": engine}
        engine.add_event_handler(Events.STARTED, self)

    def __call__(self, engine: Engine) -> None:
        path = _agreed(latest_checkpoint(self.folder) if self.enabled else None)
        if path is None:
            return
        if not path.is_file():
            raise FileNotFoundError(
                f"{path}: rank 0 resumes from this checkpoint but rank {rank()} cannot see it; "
                "in multi-node runs the output folder must be on storage shared by all nodes"
            )
        try:
            CheckpointLoader(str(path), self.load_dict, map_location=self.map_location)(engine)
        except Exception as err:
            raise RuntimeError(
                f"{path}: cannot resume from this checkpoint ({err}). Move it away to start afresh, "
                "or pass --resume false"
            ) from err
        logger.info("resumed from %s at epoch %d", path, engine.state.epoch)


class EpochSeed:
    """Re-seed torch, numpy, Python and the random transforms of ``datasets`` from
    ``seed + epoch`` when each epoch starts, and tell ``epoch_aware`` objects (on-the-fly
    datasets, distributed samplers: anything with ``set_epoch``) the epoch, so that an
    epoch's data, shuffle and augmentation depend on (seed, epoch) only: a resumed run
    repeats them exactly. Under ``torch.distributed`` rank ``r`` adds ``r`` times a large
    stride, so that the replicas draw different augmentations and masks (rank 0 draws
    those of a single-process run); samplers shuffle by their own seed and epoch, the
    same on every rank, as sharding requires."""

    def __init__(self, seed: int | None = 0, datasets=(), epoch_aware=()):
        self.seed, self.datasets = seed, list(datasets)
        self.epoch_aware = [obj for obj in epoch_aware if hasattr(obj, "set_epoch")]

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_STARTED, self)

    def __call__(self, engine: Engine) -> None:
        for obj in self.epoch_aware:
            obj.set_epoch(int(engine.state.epoch))
        if self.seed is None:
            return
        seed = rank_seed(self.seed, engine.state.epoch)
        seed_generators(seed)  # the generators only: exactness is set once, at start-up
        for dataset in self.datasets:
            # MONAI random transforms own a RandomState, seeded once when a DataLoader is built
            # (num_workers=0) and never by seed_generators: re-seed them from (seed, epoch) too
            set_rnd(dataset, seed)
