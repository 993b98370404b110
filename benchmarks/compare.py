"""Every model family side by side on one data set, at one budget: train and evaluate each
family over seeds (:mod:`benchmarks.seeds`, one process per (family, seed), one thread
each, ``--parallel`` at a time), then one table with the paper's Table 1 figures beside ours.

    python -m benchmarks.compare --data digitanatomy --output_root runs/compare --seeds 0 1 2 -- --epochs 5
    python -m benchmarks.compare --data zhanglab --dataset_dir ../shared/data/zhanglab224 \\
        --output_root runs/compare --seeds 0 1 2 -- --preset small --epochs 5

A family is trained with ``train.json`` plus its config
(``bundles/squid/configs/methods/<family>.json``; SQUID needs none; ``daad_plus`` is DAAD's
second config) and evaluated with the family-neutral ``evaluate.json``; DigitAnatomy is scored on its test split, ZhangLab on
validation and on the report split (which chooses nothing: docs/EVIDENCE.md). Everything
after ``--`` goes to every training and evaluation command; ``--families`` picks the rows
(``--methods``, its old name, still works). A (family, seed) already trained is not trained
again. Writes ``<output_root>/<data>/compare.md`` and ``compare.json``; each family's runs
and ``seeds.md`` are in ``<output_root>/<data>/<family>/``.

:func:`run_variants` is the runner of every study that trains several variants over seeds
(the paper's hyper-parameter, diseased-training and memory studies use it too), and
:func:`study_arguments` / :func:`budget_overrides` their shared options.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import shlex
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from scipy import stats

from benchmarks import seeds
from benchmarks.report import markdown_table

REPO = Path(__file__).resolve().parents[1]
CONFIGS = "bundles/squid/configs"
#: The settled chest X-ray recipe (BENCHMARKS.md, "Detection"), merged last.
CHEST_RECIPE = f"{CONFIGS}/chest_cpu.json"
FAMILIES = (
    "squid",
    "autoencoder",
    "memae",
    "patch_memae",
    "fanogan",
    "ganomaly",
    "daad",
    "daad_plus",
    "anatpaste",
)
#: The SQUID paper's Table 1 (ZhangLab, AUC / Acc / F1 in %, mean +- std where given);
#: Patch-MemAE from Table 7, printed there as the change against MemAE. DAAD is not in it;
#: AnatPaste's figure is its own paper's.
PAPER_ZHANGLAB = {
    "squid": "87.6 +- 1.5 / 80.3 +- 1.3 / 84.7 +- 0.8",
    "autoencoder": "59.9 / 63.4 / 77.2",
    "memae": "77.8 +- 1.4 / 56.5 +- 1.1 / 82.6 +- 0.9",
    "patch_memae": "MemAE +0.5 / +18.5 / +1.3 (Table 7)",
    "fanogan": "75.5 / 74.0 / 81.0",
    "ganomaly": "78.0 / 70.0 / 79.0",
    "daad": "-",
    "daad_plus": "-",
    "anatpaste": "92.1 AUC (the AnatPaste paper; not in SQUID's Table 1)",
}
SPLITS = {"digitanatomy": ["test"], "zhanglab": ["validation", "report"]}
#: Per split, the columns of a table row: key of the seeds aggregate -> heading. Both
#: baselines with no learning, on the same images: sharpness, the pixel nearest neighbour and the
#: control ensemble (the two, each standardised on the normal calibration images, summed).
SPLIT_COLUMNS = {
    "auc": "AUC",
    "accuracy": "Acc",
    "f1": "F1",
    "baseline_auc": "sharpness AUC",
    "gain": "method - sharpness",
    "pixel_knn_auc": "pixel kNN AUC",
    "pixel_knn_gain": "method - pixel kNN",
    "control_auc": "control AUC",
    "control_gain": "method - control",
}


def train_command(family: str, recipe: str | None = None) -> str:
    """The bundle training command of a family, with ``recipe`` (a config file) merged last."""
    configs = [f"{CONFIGS}/train.json"] + (
        [] if family == "squid" else [f"{CONFIGS}/methods/{family}.json"]
    )
    configs += [recipe] if recipe else []
    return (
        'python -m monai.bundle run training --config_file "' + str(configs).replace(" ", "") + '"'
    )


def run_variants(
    variants: dict[str, tuple[str, list[str]]],
    root: Path,
    seed_list,
    splits,
    parallel: int = 2,
    collect: bool = False,
    dry_run: bool = False,
) -> list[dict]:
    """Train and evaluate every variant (folder name -> (training command, bundle overrides))
    over ``seed_list`` with ``benchmarks/seeds.py`` into ``root/<name>/seed<k>``: one process
    per (variant, seed), one thread each, ``parallel`` at a time; a (variant, seed) already
    trained is not trained again. Returns one row per variant (``name``, ``command``,
    ``overrides``, the seeds' rows and their ``aggregate``). ``collect``: only tabulate what
    earlier calls ran; ``dry_run``: print the commands, run nothing, return no rows."""

    def seeds_argv(name: str, which, *flags: str) -> list[str]:
        train, overrides = variants[name]
        return [
            "--output_root",
            str(root / name),
            "--seeds",
            *map(str, which),
            "--splits",
            *splits,
            "--train_command",
            train,
            *flags,
            "--",
            *overrides,
        ]

    if dry_run:
        for name in variants:
            print(f"# {name}")
            seeds.main(seeds_argv(name, seed_list, "--dry_run"))
        return []

    def run(job) -> None:
        name, seed = job
        (root / name).mkdir(parents=True, exist_ok=True)
        with open(root / name / f"compare_seed{seed}.log", "w") as log:
            subprocess.run(
                [sys.executable, "-m", "benchmarks.seeds", *seeds_argv(name, [seed])],
                cwd=REPO,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    if not collect:
        with ThreadPoolExecutor(max_workers=max(1, parallel)) as pool:
            list(pool.map(run, [(name, s) for s in seed_list for name in variants]))
    rows = []
    for name, (train, overrides) in variants.items():
        with contextlib.redirect_stdout(io.StringIO()):
            seeds.main(seeds_argv(name, seed_list, "--collect"))
        result = json.loads((root / name / "seeds.json").read_text())
        rows.append(
            {
                "name": name,
                "command": train,
                "overrides": overrides,
                "seeds": result["seeds"],
                "aggregate": result["aggregate"],
            }
        )
    return rows


def runner_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of :func:`run_variants`, shared by every command built on it."""
    parser.add_argument("--output_root", required=True)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument(
        "--parallel", type=int, default=2, help="(variant, seed) runs at a time, one thread each"
    )
    parser.add_argument(
        "--collect", action="store_true", help="only tabulate what earlier calls ran"
    )
    parser.add_argument(
        "--dry_run", action="store_true", help="print the training and evaluation commands only"
    )


def study_arguments(parser: argparse.ArgumentParser) -> None:
    """:func:`runner_arguments` and the training budget and recipe of the paper's studies."""
    runner_arguments(parser)
    parser.add_argument(
        "--preset", default=None, help="network preset, e.g. paper on a GPU (default: the recipe's)"
    )
    parser.add_argument(
        "--epochs", type=int, default=None, help="epochs per run (default: the recipe's)"
    )
    parser.add_argument(
        "--recipe",
        default="auto",
        help=f"config merged last into every training (default: {CHEST_RECIPE} on chest X-rays, "
        "none on DigitAnatomy; 'none': train.json alone)",
    )
    parser.add_argument(
        "--write", action="store_true", help="also write the table into BENCHMARKS.md"
    )


def budget_overrides(args: argparse.Namespace) -> list[str]:
    """``--preset`` and ``--epochs`` of a study as bundle overrides (only those given)."""
    return [
        *(["--preset", args.preset] if args.preset else []),
        *(["--epochs", str(args.epochs)] if args.epochs else []),
    ]


def recipe(args: argparse.Namespace, chest: bool) -> str | None:
    """The study's ``--recipe``: ``auto`` is the chest recipe on chest X-rays, none on DigitAnatomy."""
    if args.recipe == "auto":
        return CHEST_RECIPE if chest else None
    return None if args.recipe in ("", "none") else args.recipe


def split_headings(splits, columns=SPLIT_COLUMNS) -> list[str]:
    return [f"{split} {heading}" for split in splits for heading in columns.values()]


def split_cells(aggregate: dict, splits, columns=SPLIT_COLUMNS) -> list[str]:
    """A row's cells for :func:`split_headings`: mean +- std over seeds, in %."""
    return [
        pct((aggregate.get(split) or {}).get(key), signed=key.endswith("gain"))
        for split in splits
        for key in columns
    ]


def auc_series(aggregates: list[dict], splits) -> dict[str, tuple[list, list]]:
    """Per split, the AUC means and stds (in %) of a list of aggregates, for ``curve_figure``."""

    def stat(agg, split, key):
        auc = (agg.get(split) or {}).get("auc")
        return None if not auc or auc.get(key) is None else 100 * auc[key]

    return {
        split: (
            [stat(a, split, "mean") for a in aggregates],
            [stat(a, split, "std") for a in aggregates],
        )
        for split in splits
    }


def how(args: argparse.Namespace) -> str:
    """What a study's call did, for :func:`report.provenance`."""
    return "tabulated from finished runs (--collect)" if args.collect else "trained and evaluated"


def train_time_cell(aggregate: dict) -> str:
    t = aggregate.get("train_time_s")
    return "-" if not t else f"{t['mean']:.0f}"


def pct(stats: dict | None, signed: bool = False) -> str:
    if not stats:
        return "-"
    mean = f"{100 * stats['mean']:+.1f}" if signed else f"{100 * stats['mean']:.1f}"
    return mean + ("" if stats.get("std") is None else f" +- {100 * stats['std']:.1f}")


def paired(reference_seeds: list[dict], variant_seeds: list[dict], split: str) -> dict | None:
    """AUC(variant) - AUC(reference) seed by seed on ``split`` (the same seed trains on the same
    images), over the seeds both finished: mean, std, n, the 95 % t interval of the mean and
    whether it is resolved (the interval excludes 0; None with one seed). The t critical value
    for n - 1 degrees of freedom (4.30 for 3 seeds), not 2: with few seeds two standard errors
    call about one difference in five resolved where nothing differs."""
    reference = {r["seed"]: r[split]["auc"] for r in reference_seeds if split in r}
    deltas = [
        r[split]["auc"] - reference[r["seed"]]
        for r in variant_seeds
        if split in r and r["seed"] in reference
    ]
    if not deltas:
        return None
    mean = sum(deltas) / len(deltas)
    if len(deltas) < 2:
        return {"mean": mean, "std": None, "n": 1, "resolved": None}
    std = math.sqrt(sum((d - mean) ** 2 for d in deltas) / (len(deltas) - 1))
    half = float(stats.t.ppf(0.975, len(deltas) - 1)) * std / math.sqrt(len(deltas))
    return {
        "mean": mean,
        "std": std,
        "n": len(deltas),
        "t_95ci": [mean - half, mean + half],
        "resolved": abs(mean) > half,
    }


def paired_cell(stats: dict | None) -> str:
    """A :func:`paired` difference in points: mean +- std over seeds."""
    if not stats:
        return "-"
    return f"{100 * stats['mean']:+.1f}" + (
        "" if stats["std"] is None else f" +- {100 * stats['std']:.1f}"
    )


def main(argv: list[str] | None = None) -> int:
    own, overrides = seeds.split_args(argv)
    args = _parser().parse_args(own)
    if args.data == "zhanglab" and not args.dataset_dir:
        raise SystemExit("--data zhanglab needs --dataset_dir")
    root = Path(args.output_root).resolve() / args.data
    data = ["--dataset_dir", args.dataset_dir] if args.dataset_dir else []
    splits = SPLITS[args.data]
    variants = {
        m: (train_command(m), [*data, "--progress", "false", *overrides]) for m in args.families
    }
    rows = run_variants(
        variants, root, args.seeds, splits, args.parallel, args.collect, args.dry_run
    )
    if args.dry_run:
        return 0
    for row in rows:
        row["paper_zhanglab"] = PAPER_ZHANGLAB.get(row["name"], "-")
    out = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "data": args.data,
        "splits": splits,
        "overrides": overrides,
        "dataset_dir": args.dataset_dir,
        "rows": rows,
    }
    root.mkdir(parents=True, exist_ok=True)
    (root / "compare.json").write_text(json.dumps(out, indent=2))
    (root / "compare.md").write_text(markdown(out))
    print((root / "compare.md").read_text())
    return 0


def markdown(out: dict) -> str:
    head = [
        "method",
        "seeds",
        *split_headings(out["splits"]),
        "train time per run (s)",
        "paper Table 1, ZhangLab AUC / Acc / F1",
    ]
    lines = markdown_table(
        head,
        [
            [
                row["name"],
                str(len(row["seeds"])),
                *split_cells(row["aggregate"], out["splits"]),
                train_time_cell(row["aggregate"]),
                row["paper_zhanglab"],
            ]
            for row in out["rows"]
        ],
    )
    command = (
        "python -m benchmarks.compare --data "
        + out["data"]
        + (f" --dataset_dir {out['dataset_dir']}" if out["dataset_dir"] else "")
        + " -- "
        + shlex.join(out["overrides"])
    )
    return "\n".join(
        [
            f"# Methods compared on {out['data']} ({out['date']})",
            "",
            f"Command: `{command}`",
            "",
            "Per method: `"
            + (out["rows"][0]["command"] if out["rows"] else "")
            + "` and the method config, "
            "see each method's `seeds.md`. In %: mean +- sample std over seeds; accuracy and F1 at the threshold "
            "chosen on validation; the sharpness and pixel nearest-neighbour baselines (no learning) and their "
            "control ensemble (each standardised on the normal calibration images, summed) on the same images.",
            "",
            *lines,
            "",
        ]
    )


def family_arguments(parser: argparse.ArgumentParser, default: list[str]) -> None:
    """``--families`` (the configs of :data:`FAMILIES` to train), and ``--methods``, its
    deprecated name, hidden from ``--help`` so that old command lines still run."""
    parser.add_argument(
        "--families",
        nargs="+",
        choices=FAMILIES,
        default=default,
        metavar="FAMILY",
        help=f"families to train, each a config of bundles/squid/configs/methods (one of {', '.join(FAMILIES)})",
    )
    parser.add_argument(
        "--methods",
        nargs="+",
        choices=FAMILIES,
        dest="families",
        default=argparse.SUPPRESS,
        help=argparse.SUPPRESS,
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.compare", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--data", choices=sorted(SPLITS), required=True)
    parser.add_argument(
        "--dataset_dir", default=None, help="the chest X-ray folder (for --data zhanglab)"
    )
    family_arguments(parser, default=list(FAMILIES))
    runner_arguments(parser)
    return parser


if __name__ == "__main__":
    sys.exit(main())
