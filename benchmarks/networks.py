"""Cost of the SQUID networks per preset on this machine: one generator step and one full
training iteration at batch 16, scoring at batch 1 and 64, FLOPs and peak memory.

    python -m benchmarks.networks --threads 2 --write

Each preset runs in its own process so that its peak resident memory is its own.
FLOPs are counted by ``torch.utils.flop_counter`` and do not depend on the machine's load.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from datetime import date

import torch
from torch.utils.flop_counter import FlopCounterMode

from benchmarks.report import cpu_name, load_average, write_section

HEADING = "## Networks"
AUTHORS = "authors' code on a quiet 2-core machine: 6.8 s generator step, 8.9 s D + G iteration, 0.148 s scoring at batch 1"


def _median_time(fn, repeats: int) -> float:
    fn()  # warm-up (allocations, oneDNN primitive caches)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def training_steps(gen, disc, g_opt, d_opt, x):
    """The generator step and the full D + G iteration of the SQUID trainer on batch ``x``, as
    closures (shared with ``training_speed.py``)."""
    from squid_monai.methods.squid.losses import (
        SQUIDLossWeights,
        discriminator_loss,
        generator_losses,
    )

    weights = SQUIDLossWeights()

    def generator_step():
        gen.train(), disc.train()
        out = gen(x)
        g_opt.zero_grad()
        generator_losses(out, x, disc(out["student"]), weights)["generator"].backward()
        g_opt.step()
        gen.enqueue(out["tokens"])

    def iteration():
        gen.train(), disc.train()
        out = gen(x)
        d_opt.zero_grad()
        discriminator_loss(disc(x), disc(out["student"].detach()), weights).backward()
        d_opt.step()
        g_opt.zero_grad()
        generator_losses(out, x, disc(out["student"]), weights)["generator"].backward()
        g_opt.step()
        gen.enqueue(out["tokens"])

    return generator_step, iteration


def _measure(preset: str, repeats: int, threads: int) -> dict:
    from squid_monai.methods.squid.presets import build, get_config
    from squid_monai.methods.squid.scorer import SQUIDScorer

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    size = get_config(preset)["image_size"]
    gen, disc = build(preset)
    g_opt, d_opt = (
        torch.optim.Adam(gen.parameters(), 1e-4),
        torch.optim.Adam(disc.parameters(), 1e-4),
    )
    generator_step, iteration = training_steps(
        gen, disc, g_opt, d_opt, torch.rand(16, 1, size, size)
    )

    with FlopCounterMode(display=False) as counter:
        iteration()
    iteration_gflop = counter.get_total_flops() / 1e9
    scorer = SQUIDScorer(gen, disc)
    one, batch = torch.rand(1, 1, size, size), torch.rand(64, 1, size, size)
    with FlopCounterMode(display=False) as counter:
        scorer(one)
    row = {
        "preset": preset,
        "image_size": size,
        "generator_params_m": sum(p.numel() for p in gen.parameters()) / 1e6,
        "iteration_gflop": iteration_gflop,
        "scoring_gflop": counter.get_total_flops() / 1e9,
        "generator_step_s": _median_time(generator_step, repeats),
        "iteration_s": _median_time(iteration, repeats),
        "score_b1_s": _median_time(lambda: scorer(one), repeats * 4),
        "score_b64_s_per_image": _median_time(lambda: scorer(batch), repeats) / 64,
    }
    row["peak_rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    return row


def _table(rows: list[dict], args) -> str:
    paper = next((r for r in rows if r["preset"] == "paper"), None)
    lines = [
        f"Measured {date.today().isoformat()} on {cpu_name()} with {args.threads} threads, torch {torch.__version__}, "
        f"fp32, batch 16 for training (medians of {args.repeats} after a warm-up). Load average before: "
        f"{args.load_before}; after: {load_average()} (a shared machine: other jobs inflate the seconds, not the FLOPs). "
        "Command (from the repository root):",
        "",
        f"    python -m benchmarks.networks --threads {args.threads} --repeats {args.repeats} --write",
        "",
        "| preset | px | G params (M) | GFLOP / iteration (D + G, b16) | G step (s, b16) | D + G iteration (s, b16) "
        "| scoring GFLOP / image | scoring b1 (s / image) | scoring b64 (s / image) | peak RSS (GB) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['preset']} | {r['image_size']} | {r['generator_params_m']:.2f} | {r['iteration_gflop']:.0f} | "
            f"{r['generator_step_s']:.2f} | {r['iteration_s']:.2f} | {r['scoring_gflop']:.2f} | "
            f"{r['score_b1_s']:.3f} | {r['score_b64_s_per_image']:.4f} | {r['peak_rss_gb']:.2f} |"
        )
    if paper:
        lines += [
            "",
            "Cost relative to `paper` (FLOP ratio of one training iteration): "
            + ", ".join(
                f"`{r['preset']}` {r['iteration_gflop'] / paper['iteration_gflop']:.3f}"
                for r in rows
                if r is not paper
            )
            + ".",
        ]
    lines += [
        "",
        f"For scale, the {AUTHORS}. Their scoring also runs the teacher (14.8 GFLOP at batch 1 here); "
        "ours computes only the student path and the discriminator (the teacher is not needed for the score) "
        "and projects keys and values once per tile instead of once per neighbour.",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--presets", nargs="+", default=["paper", "digitanatomy", "small", "digitanatomy_small"]
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--write", action="store_true", help="write the section of BENCHMARKS.md")
    parser.add_argument(
        "--one", help=argparse.SUPPRESS
    )  # internal: measure one preset in this process
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(_measure(args.one, args.repeats, args.threads)))
        return 0
    args.load_before = load_average()
    rows = []
    for preset in args.presets:
        out = subprocess.run(
            [
                sys.executable,
                "-m",
                "benchmarks.networks",
                "--one",
                preset,
                "--threads",
                str(args.threads),
                "--repeats",
                str(args.repeats),
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(rows[-1], flush=True)
    table = _table(rows, args)
    print(table)
    if args.write:
        write_section(HEADING, table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
