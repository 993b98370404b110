"""Training throughput of today's step against its cheap wins, in one process: in-place
ReLUs and residual additions (``ResidualDoubleConv.inplace``, ReLU ``inplace``: bitwise the
same values) and PyTorch's fused Adam (``fused=True``, one kernel per parameter group on
CPU: the same update to float rounding).

Each variant is a copy of one freshly built network pair (same weights), stepped on the same
batch; every repetition runs one full D + G iteration (``networks.training_steps``) of each
variant in a rotating order, and the ratio to today's is taken within the repetition. Minor
page faults and system CPU seconds per iteration are reported too (the cost the in-place ops
remove). Then writes the "## Training throughput" section of BENCHMARKS.md.

    python -m benchmarks.training_speed --presets small paper --threads 1
"""

from __future__ import annotations

import argparse
import copy
import datetime
import os
import resource
import statistics
import time

import torch

from benchmarks.networks import training_steps
from benchmarks.report import command_line, cpu_name, load_average, write_section

SECTION = "## Training throughput"
VARIANTS = {
    "today (out of place, Adam)": (False, False),
    "in-place": (True, False),
    "fused Adam": (False, True),
    "in-place + fused Adam": (True, True),
}


def _set_inplace(module: torch.nn.Module, inplace: bool) -> None:
    from squid_monai.nn.blocks import ResidualDoubleConv

    for m in module.modules():
        if isinstance(m, (torch.nn.ReLU, ResidualDoubleConv)):
            m.inplace = inplace


def _variant(gen, disc, x, inplace: bool, fused: bool):
    gen, disc = copy.deepcopy(gen), copy.deepcopy(disc)
    _set_inplace(gen, inplace)
    g_opt = torch.optim.Adam(gen.parameters(), 1e-4, fused=fused)
    d_opt = torch.optim.Adam(disc.parameters(), 1e-4, fused=fused)
    return training_steps(gen, disc, g_opt, d_opt, x)[1], gen


def _timed(fn) -> tuple[float, float, int]:
    before, wall = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    fn()
    after = resource.getrusage(resource.RUSAGE_SELF)
    return (
        time.perf_counter() - wall,
        after.ru_stime - before.ru_stime,
        after.ru_minflt - before.ru_minflt,
    )


def measure(presets: list[str], batch: int, repeats: int) -> list[dict]:
    from squid_monai.methods.squid.presets import build, get_config

    rows = []
    for preset in presets:
        torch.manual_seed(0)
        gen, disc = build(preset)
        size = get_config(preset)["image_size"]
        x = torch.rand(batch, 1, size, size, generator=torch.Generator().manual_seed(0))
        steps = {name: _variant(gen, disc, x, *flags) for name, flags in VARIANTS.items()}
        for step, _ in steps.values():
            step()  # warm-up: allocations, oneDNN primitives
        # same start, same data: after one iteration the variants' weights agree to rounding
        first = [next(iter(g.parameters())).detach() for _, g in steps.values()]
        drift = max(float((p - first[0]).abs().max()) for p in first)
        times: dict[str, list] = {name: [] for name in steps}
        names = list(steps)
        for rep in range(repeats):
            for name in names[rep % len(names) :] + names[: rep % len(names)]:
                times[name].append(_timed(steps[name][0]))
            print(
                f"{preset} rep {rep}: "
                + ", ".join(f"{n} {t[-1][0]:.2f} s" for n, t in times.items()),
                flush=True,
            )
        today = times[names[0]]
        for name in names:
            t = times[name]
            rows.append(
                {
                    "preset": preset,
                    "variant": name,
                    "batch": batch,
                    "repeats": repeats,
                    "iteration_s": statistics.median(w for w, _, _ in t),
                    "ratio": statistics.median(a[0] / b[0] for a, b in zip(t, today)),
                    "system_s": statistics.median(s for _, s, _ in t),
                    "minor_faults": statistics.median(f for _, _, f in t),
                    "weight_drift": drift,
                }
            )
    return rows


def _section(rows: list[dict], command: str, load: tuple[str, str]) -> str:
    table = [
        "| preset | variant | s / iteration (wall) | x today | system CPU-s / iteration | minor page faults "
        "/ iteration |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        table.append(
            f"| {r['preset']} | {r['variant']} | {r['iteration_s']:.2f} | {r['ratio']:.2f} | "
            f"{r['system_s']:.2f} | {r['minor_faults']:.0f} |"
        )
    drift = max(r["weight_drift"] for r in rows)
    return "\n".join(
        [
            f"Measured {datetime.date.today().isoformat()} on {cpu_name()} ({os.cpu_count()} cores, shared with other "
            f"jobs), torch {torch.__version__} with {torch.get_num_threads()} thread(s). Load average before: "
            f"`{load[0]}`; after: `{load[1]}`. One full D + G iteration of the SQUID trainer at batch "
            f"{rows[0]['batch']}, {rows[0]['repeats']} repetitions per variant, interleaved in a rotating order; "
            "medians, the ratio taken within each repetition. Command (from the repository root):",
            "",
            f"    {command}",
            "",
            *table,
            "",
            f"Results: the variants' weights after the warm-up iteration differ by at most {drift:.1e} (fused Adam "
            "rounds differently; in-place is bitwise the same), i.e. the same training in distribution.",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--presets", nargs="+", default=["small", "paper"])
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--no_write", action="store_true", help="print only")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    before = load_average()
    rows = measure(args.presets, args.batch_size, args.repeats)
    after = load_average()
    for r in rows:
        print(
            f"{r['preset']:6s} {r['variant']:28s} {r['iteration_s']:.2f} s x{r['ratio']:.2f} "
            f"sys {r['system_s']:.2f} s faults {r['minor_faults']:.0f}"
        )
    if not args.no_write:
        write_section(SECTION, _section(rows, command_line(__file__, argv), (before, after)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
