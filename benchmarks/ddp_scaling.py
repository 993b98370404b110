"""Iteration throughput of the bundle's training with 1 process and with 2 DDP processes.

Runs the user's commands as typed (``python -m monai.bundle run training`` for one
process, ``torchrun --nproc_per_node=2 ... multi_gpu_train.json`` for two), with an extra
trainer handler (:class:`IterationClock`, added by a small override config) that times
the iterations of rank 0. The first ``--warmup`` iterations and every epoch boundary
(validation, checkpoints) are left out: only steady-state iterations, data loading
included, count. Threads are split fairly on the CPU: ``--threads`` for the single
process, ``--threads / 2`` for each of the two.

Settings: one process at ``--batch_size`` with all the threads (the reference) and with
one thread (to see what the threads themselves bring on this machine); two processes at
``--batch_size`` each (the recommended use: the global batch doubles); two processes at
half of it each (the global batch of the single process, split over two workers).

    python -m benchmarks.ddp_scaling --preset small --iterations 30 --write

``--write`` replaces the "## Distributed training" section of BENCHMARKS.md (and only it).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

from benchmarks.report import REPO, cpu_name, load_average, write_section

CONFIGS = REPO / "bundles" / "squid" / "configs"
SECTION = "## Distributed training"


class IterationClock:
    """Trainer handler: wall-clock time of each steady-state iteration on rank 0, written
    as JSON (``{"seconds": [...], "world_size": n}``) when training completes."""

    def __init__(self, path: str, warmup: int = 3):
        self.path, self.warmup = Path(path), warmup
        self.seconds: list[float] = []
        self._last: float | None = None

    def attach(self, engine) -> None:
        from ignite.engine import Events

        engine.add_event_handler(Events.EPOCH_STARTED, self._epoch_started)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._iteration)
        engine.add_event_handler(Events.COMPLETED, self._write)

    def _epoch_started(self, engine) -> None:
        self._last = None  # the gap across an epoch boundary holds validation and checkpoints

    def _iteration(self, engine) -> None:
        now = time.perf_counter()
        if self._last is not None and engine.state.iteration > self.warmup:
            self.seconds.append(now - self._last)
        self._last = now

    def _write(self, engine) -> None:
        import torch.distributed as dist

        world = dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
        if world == 1 or dist.get_rank() == 0:
            self.path.write_text(json.dumps({"seconds": self.seconds, "world_size": world}))


def _command(
    nproc: int, configs: list[str], args: argparse.Namespace, batch: int, out: Path
) -> list[str]:
    files = "[" + ",".join(f"'{c}'" for c in configs) + "]"
    launcher = (
        [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]
        if nproc > 1
        else [sys.executable]
    )
    # iterations + warmup + 1 per rank in one epoch; no validation (val_interval 2), no tracking
    length = (args.iterations + args.warmup + 1) * batch * nproc
    return [
        *launcher,
        "-m",
        "monai.bundle",
        "run",
        "training",
        "--config_file",
        files,
        "--preset",
        args.preset,
        "--epochs",
        "1",
        "--val_interval",
        "2",
        "--batch_size",
        str(batch),
        "--digitanatomy_length",
        str(length),
        "--calibration_images",
        "8",
        "--output_dir",
        str(out),
        "--progress",
        "false",
        "--resume",
        "false",
        "--mlflow_tracking",
        "false",
    ]


def _measure(
    name: str,
    nproc: int,
    batch: int,
    args: argparse.Namespace,
    tmp: Path,
    threads: int | None = None,
) -> dict:
    out = tmp / name
    out.mkdir()
    clock = out / "clock.json"
    override = out / "clock.json.config.json"
    override.write_text(
        json.dumps(
            {
                "+train#handlers": [
                    {
                        "_target_": "benchmarks.ddp_scaling.IterationClock",
                        "path": str(clock),
                        "warmup": args.warmup,
                    }
                ]
            }
        )
    )
    configs = [str(CONFIGS / "train.json")]
    if nproc > 1:
        configs.append(str(CONFIGS / "multi_gpu_train.json"))
    configs.append(str(override))
    threads = threads or max(1, args.threads // nproc)
    env = {
        **os.environ,
        "OMP_NUM_THREADS": str(threads),
        "PYTHONWARNINGS": "ignore",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    }
    cmd = _command(nproc, configs, args, batch, out)
    result = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"{name} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    seconds = json.loads(clock.read_text())["seconds"]
    per_iteration = sum(seconds) / len(seconds)
    return {
        "name": name,
        "processes": nproc,
        "threads": threads,
        "batch": batch,
        "global_batch": batch * nproc,
        "iterations": len(seconds),
        "s_per_iteration": per_iteration,
        "images_per_s": batch * nproc / per_iteration,
    }


def _section(rows: list[dict], args: argparse.Namespace, load_before: str, load_after: str) -> str:
    """The body of the BENCHMARKS.md section (without its heading)."""
    import torch

    base = rows[0]["images_per_s"]
    cpu = cpu_name()
    lines = [
        f"Measured {date.today().isoformat()} on this {os.cpu_count()}-core {cpu} (no GPU), torch "
        f"{torch.__version__}, Gloo backend; preset `{args.preset}`, embedded DigitAnatomy data, "
        f"{args.iterations} timed steady-state iterations per setting after {args.warmup} warm-up iterations "
        "(no validation, checkpoints not timed; data generation and augmentation in the training "
        "processes are timed). Command (from the repository root):",
        "",
        f"    python -m benchmarks.ddp_scaling --preset {args.preset} --iterations {args.iterations} "
        f"--batch_size {args.batch_size} --threads {args.threads} --write",
        "",
        "which runs `python -m monai.bundle run training --config_file bundles/squid/configs/train.json ...` "
        "and `torchrun --standalone --nproc_per_node=2 -m monai.bundle run training --config_file "
        "\"['bundles/squid/configs/train.json','bundles/squid/configs/multi_gpu_train.json']\" ...`.",
        "",
        "| setting | processes x threads | batch per process | global batch | s / iteration | images / s | "
        "images / s vs 1 process |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['name']} | {r['processes']} x {r['threads']} | {r['batch']} | {r['global_batch']} | "
            f"{r['s_per_iteration']:.3f} | {r['images_per_s']:.1f} | {r['images_per_s'] / base:.2f}x |"
        )
    by_name = {r["name"]: r["images_per_s"] / base for r in rows}
    doubled, kept = (
        by_name["2 processes, same batch per process"],
        by_name["2 processes, same global batch"],
    )
    one_thread = by_name["1 process, 1 thread"]
    if one_thread > 1:
        threading = (
            f"Here one process runs {one_thread:.2f}x as fast with one thread as with {args.threads} (when "
            "other jobs hold the cores, intra-op threads wait for each other), so much of that gain is "
            "threading lost, not data parallelism."
        )
    else:
        threading = f"One process gains {1 / one_thread:.2f}x from its threads beyond the first."
    lines += [
        "",
        f"Load average before: `{load_before}`; after: `{load_after}`. The machine is shared with "
        "other jobs: compare the rows of one run, not runs of different days.",
        "",
        f"Reading: the fair comparison (the same cores: one process with {args.threads} threads against two "
        f"processes with {max(1, args.threads // 2)} each) gives {doubled:.2f}x the images per second with the "
        f"global batch doubled (the recommended use) and {kept:.2f}x with it kept. {threading} Against one "
        f"single-threaded process, two processes give {doubled / one_thread:.2f}x and {kept / one_thread:.2f}x. "
        "The settings ran one after another while the load moved (see above), so "
        "differences of a few tens of percent are within the noise of this machine. Each DDP iteration adds a "
        "Gloo all-reduce of the gradients per optimiser step, an all-gather of the tokens per generator step, "
        "two one-value all-reduces (the finite-loss votes) and one of the BatchNorm running statistics. No "
        "multi-GPU machine was available: GPU scaling is not measured here.",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="small", help="network preset (default: small)")
    parser.add_argument("--iterations", type=int, default=30, help="timed iterations per setting")
    parser.add_argument("--warmup", type=int, default=3, help="untimed iterations first")
    parser.add_argument("--batch_size", type=int, default=16, help="batch of the single process")
    parser.add_argument(
        "--threads", type=int, default=2, help="CPU threads shared by the processes"
    )
    parser.add_argument("--write", action="store_true", help="write the section of BENCHMARKS.md")
    args = parser.parse_args(argv)
    if args.batch_size % 2:
        raise SystemExit(
            f"--batch_size must be even (it is halved for one setting), got {args.batch_size}"
        )
    load_before = load_average()
    with tempfile.TemporaryDirectory(prefix="ddp_scaling_") as tmp:
        rows = [
            _measure("1 process", 1, args.batch_size, args, Path(tmp)),
            _measure("1 process, 1 thread", 1, args.batch_size, args, Path(tmp), threads=1),
            _measure("2 processes, same batch per process", 2, args.batch_size, args, Path(tmp)),
            _measure("2 processes, same global batch", 2, args.batch_size // 2, args, Path(tmp)),
        ]
    body = _section(rows, args, load_before, load_average())
    print(f"{SECTION}\n\n{body}")
    if args.write:
        write_section(SECTION, body)


if __name__ == "__main__":
    main()
