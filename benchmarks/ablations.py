"""The paper's component studies, Table 2 and its appendix's Table 6: the full model and every
ablation switch (SQUID.md section 5), trained and evaluated over seeds with the multi-seed
runner (:func:`compare.run_variants`), each variant paired with the full model seed by seed.

    python -m benchmarks.ablations --dataset_dir ../shared/data/zhanglab224 --output_root runs/ablations --write
    python -m benchmarks.ablations --output_root runs/ablations_da --write       # DigitAnatomy, its test split
    python -m benchmarks.ablations --dataset_dir DATA --output_root runs/ablations --preset paper --epochs 200
    python -m benchmarks.ablations --dataset_dir DATA --output_root runs/ablations --only table6 --dry_run

A variant is the full model's training command with its ``--network_overrides``; ``--only``
takes variant names, ``table2`` or ``table6``. Every seed of a variant trains on the same
images as the same seed of the full model, so the difference to the full model is taken per
seed (mean +- std over seeds); it is "resolved" when its 95 % t interval over seeds excludes 0
(:func:`compare.paired`). ZhangLab is scored on validation and on the report split (which
chooses nothing: docs/EVIDENCE.md), DigitAnatomy on
its test split. Everything after ``--`` goes to every training and evaluation. Writes
``ablations.md`` and ``.json`` into ``--output_root``, with ``--write`` the section into
BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

from benchmarks import compare, seeds
from benchmarks.report import markdown_table, provenance, publish

HEADING = "## Component study, 3 seeds (paper Tables 2 and 6)"
FULL = "full SQUID"
#: name -> (network overrides, the paper's table, its ZhangLab AUC in %; SQUID.md section 5)
ABLATIONS: dict[str, tuple[dict, str, float]] = {
    FULL: ({}, "2, 6", 87.6),
    "no space-aware memory": ({"space_aware": False}, "2", 77.6),
    "no in-painting block": ({"inpainting": False}, "2", 80.9),
    "no Gumbel shrinkage": ({"shrinkage": False}, "2", 81.1),
    "no knowledge distillation": ({"distillation": False}, "2", 81.2),
    "no stop-gradient": ({"stop_gradient": False}, "2", 81.7),
    "memory matrix instead of queue": ({"memory": "matrix"}, "2", 82.5),
    "no masked shortcuts": ({"shortcut": "none"}, "2", 82.5),
    "no decoder memory": ({"decoder_memory": False}, "2", 82.9),
    "convolution instead of transformer": ({"context": "conv"}, "6", 76.9),
    "soft masked shortcut": ({"shortcut": "soft"}, "6", 79.7),
    "pixel-level in-painting": ({"pixel_mask_ratio": 0.25}, "6", 79.1),
    "out-of-grid neighbours as zero tokens (authors' code)": (
        {"mask_out_of_grid": False},
        "-",
        float("nan"),
    ),
}


def selected(only: list[str] | None) -> list[str]:
    """The variant names ``--only`` asks for (names, ``table2``, ``table6``), the full model first."""
    names = []
    for item in only or list(ABLATIONS):
        table = [
            n
            for n, (_, tables, _) in ABLATIONS.items()
            if item.startswith("table") and item[len("table") :] in tables.split(", ")
        ]
        if table:
            names += table
        elif item in ABLATIONS:
            names.append(item)
        else:
            raise SystemExit(
                f"unknown variant {item!r}; choose from table2, table6 or {sorted(ABLATIONS)}"
            )
    return [FULL] + [n for n in dict.fromkeys(names) if n != FULL]


def slug(name: str) -> str:
    """The variant's folder name."""
    return "".join(c if c.isalnum() else "_" for c in name.split(" (")[0]).strip("_")


def direction(delta: dict | None, paper_auc: float | None) -> str:
    """Does our variant fall below the full model, as every ablation does in the paper?"""
    if delta is None or paper_auc is None:
        return "-"
    same = "yes" if delta["mean"] < 0 else "**no**"
    return same + ("" if delta["resolved"] else " (n.s.)")


def main(argv: list[str] | None = None) -> int:
    own, extra = seeds.split_args(argv)
    args = _parser().parse_args(own)
    start = time.time()
    names = selected(args.only)
    recipe = compare.recipe(args, chest=bool(args.dataset_dir))
    data = ["--dataset_dir", args.dataset_dir] if args.dataset_dir else []
    common = [*data, "--progress", "false", *compare.budget_overrides(args), *extra]
    train = compare.train_command("squid", recipe)
    runs = {
        slug(n): (
            train,
            [*common, *(["--network_overrides", repr(ABLATIONS[n][0])] if ABLATIONS[n][0] else [])],
        )
        for n in names
    }
    splits = compare.SPLITS["zhanglab" if args.dataset_dir else "digitanatomy"]
    rows = compare.run_variants(
        runs,
        Path(args.output_root).resolve(),
        args.seeds,
        splits,
        args.parallel,
        args.collect,
        args.dry_run,
    )
    if args.dry_run:
        return 0
    full = rows[0]
    result = {
        "command": "python -m benchmarks.ablations "
        + shlex.join(own + (["--", *extra] if extra else [])),
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "splits": splits,
        "train_command": train,
        "common_overrides": common,
        "variants": [],
    }
    for name, row in zip(names, rows):
        overrides, tables, paper_auc = ABLATIONS[name]
        deltas = {
            s: None if row is full else compare.paired(full["seeds"], row["seeds"], s)
            for s in splits
        }
        result["variants"].append(
            {
                "name": name,
                "run": row["name"],
                "overrides": overrides,
                "paper_tables": tables,
                "paper_auc": None if paper_auc != paper_auc else paper_auc,
                "seeds": row["seeds"],
                "aggregate": row["aggregate"],
                "vs_full": deltas,
            }
        )
    result["wall_time_s"] = time.time() - start
    publish(
        Path(args.output_root).resolve(),
        "ablations",
        HEADING,
        markdown(result, compare.how(args)),
        result,
        args.write,
    )
    return 0


def markdown(result: dict, how: str) -> str:
    splits = result["splits"]
    head = [
        "variant",
        "switch",
        "paper table",
        "paper AUC (ZhangLab)",
        "seeds",
        *compare.split_headings(splits),
        *(f"{s} AUC vs full (paired)" for s in splits),
        "below full, as the paper?",
        "train time per run (s)",
    ]
    primary = splits[-1]
    body = []
    for v in result["variants"]:
        paper = "-" if v["paper_auc"] is None else f"{v['paper_auc']:.1f}"
        deltas = [compare.paired_cell(v["vs_full"][s]) for s in splits]
        body.append(
            [
                v["name"],
                f"`{v['overrides']}`" if v["overrides"] else "(none)",
                v["paper_tables"],
                paper,
                str(len(v["seeds"])),
                *compare.split_cells(v["aggregate"], splits),
                *deltas,
                direction(v["vs_full"][primary], v["paper_auc"]),
                compare.train_time_cell(v["aggregate"]),
            ]
        )
    return "\n".join(
        [
            *provenance(result["command"], result["wall_time_s"], how),
            f"Every run: `{result['train_command']} {shlex.join(result['common_overrides'])}` with the variant's "
            "`--network_overrides`, then `evaluate.json` on each split; runs and `seeds.md` in `<output_root>/<variant>/`. "
            "In %: mean +- sample std over seeds; accuracy and F1 at the threshold chosen on validation; the sharpness "
            "baseline (no learning) on the same images.",
            "",
            *markdown_table(head, body),
            "",
            "\"vs full\": the variant's AUC minus the full model's, seed by seed on the same images (mean +- std over "
            f'seeds). "below full, as the paper?" reads the {primary} split: the paper reports every ablation below the '
            "full model; **no** marks a variant at or above ours; (n.s.) a difference whose 95 % t "
            "interval over seeds contains 0, i.e. not resolved by this many seeds. The paper's figures "
            "are its ZhangLab test split at 128 px and 200+ epochs on a GPU; for that scale add "
            "`--preset paper --epochs 200`.",
            "",
        ]
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.ablations",
        description=__doc__.split("\n\n")[0],
        epilog="Bundle overrides for every run go after `--`.",
    )
    parser.add_argument(
        "--dataset_dir",
        default=None,
        help="ZhangLab or normal/abnormal folders (default: DigitAnatomy)",
    )
    parser.add_argument(
        "--only",
        nargs="+",
        default=None,
        metavar="VARIANT",
        help="variant names, table2 or table6 (default: all); the full model always runs",
    )
    compare.study_arguments(parser)
    return parser


if __name__ == "__main__":
    sys.exit(main())
