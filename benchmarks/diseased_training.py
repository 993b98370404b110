"""The paper's diseased-training study (Figure 10). It mixes 0, 10, 25 and 50 % pneumonia into
the training set and calibrates on the training images as they are, since nobody knows which
ones are normal. Every run is scored on the same validation and report images.

    python -m benchmarks.diseased_training --dataset_dir ../shared/data/zhanglab224 --output_root runs/figure10 --write
    python -m benchmarks.diseased_training --dataset_dir DATA --output_root runs/figure10 --families squid ganomaly memae
    python -m benchmarks.diseased_training --dataset_dir DATA --output_root runs/figure10 --preset paper --epochs 200

Each fraction gets one datalist in ``<output_root>/datalists/``, made with the protocol of
``python -m squid_monai.data.datalist`` and ``--abnormal_fraction``. Validation and report are
drawn before the abnormal training images, so every fraction has the same validation, report
and normal training images. Every run trains with ``--datalist`` and ``--calibrate_on
training``, over seeds, with the multi-seed runner (:func:`compare.run_variants`), for SQUID
and any other family given to ``--families`` (``--methods``, its old name, still works). Everything after ``--`` goes to every training and
evaluation. Writes ``diseased_training.md``, ``.json`` and ``.png`` into ``--output_root``,
and with ``--write`` the section into BENCHMARKS.md; ``--dry_run`` writes the datalists and
prints the commands.
"""

from __future__ import annotations

import argparse
import math
import shlex
import sys
import time
from pathlib import Path

from scipy import stats

from benchmarks import compare, seeds
from benchmarks.report import (
    curve_figure,
    markdown_table,
    provenance,
    publish,
    published_figure,
)

HEADING = "## Diseased images in training (paper Figure 10)"
FRACTIONS = (0.0, 0.1, 0.25, 0.5)
CLAIM = "SQUID tolerates up to 50 % diseased training images"


def write_datalists(
    dataset_dir: str, fractions, folder: Path, seed: int, val_per_class: int, report_per_class: int
) -> dict[float, Path]:
    """One datalist per fraction of abnormal training images (the same held-out splits in all)."""
    from squid_monai.data.datalist import build_from_folder, write_datalist

    paths = {}
    for fraction in fractions:
        datalist = build_from_folder(
            dataset_dir,
            seed=seed,
            abnormal_fraction=fraction,
            n_val_normal=val_per_class,
            n_val_abnormal=val_per_class,
            n_report_normal=report_per_class,
            n_report_abnormal=report_per_class,
        )
        paths[fraction] = write_datalist(datalist, folder / f"abnormal_{_pct(fraction)}.json")
    return paths


def change(first: dict | None, last: dict | None) -> dict | None:
    """AUC at the largest fraction minus at 0 % (points), its standard error over seeds, and
    whether a drop is resolved: the 95 % interval of the difference of the two seed means
    excludes 0, with Welch's t critical value (the two shares train on different images, so
    their seeds are not paired; about 3 to 4.3 for 3 seeds each, not 2). None with one seed."""
    if not first or not last:
        return None
    delta = 100 * (last["mean"] - first["mean"])
    if first["std"] is None or last["std"] is None:
        return {"points": delta, "se": None, "resolved_drop": None}
    a, b = (s["std"] ** 2 / s["n"] for s in (first, last))
    se = 100 * math.sqrt(a + b)
    if a + b == 0:
        return {"points": delta, "se": 0.0, "resolved_drop": delta < 0}
    df = (a + b) ** 2 / (a**2 / (first["n"] - 1) + b**2 / (last["n"] - 1))  # Welch
    return {"points": delta, "se": se, "resolved_drop": delta < -float(stats.t.ppf(0.975, df)) * se}


def main(argv: list[str] | None = None) -> int:
    own, extra = seeds.split_args(argv)
    args = _parser().parse_args(own)
    start = time.time()
    root = Path(args.output_root).resolve()
    lists = write_datalists(
        args.dataset_dir,
        args.fractions,
        root / "datalists",
        args.datalist_seed,
        args.val_per_class,
        args.report_per_class,
    )
    budget = [
        "--progress",
        "false",
        "--calibrate_on",
        "training",
        *compare.budget_overrides(args),
        *extra,
    ]
    recipe = compare.recipe(args, chest=True)
    runs = {
        f"{m}_abnormal_{_pct(f)}": (
            compare.train_command(m, recipe),
            ["--datalist", str(path), *budget],
        )
        for m in args.families
        for f, path in lists.items()
    }
    splits = compare.SPLITS["zhanglab"]
    rows = compare.run_variants(
        runs, root, args.seeds, splits, args.parallel, args.collect, args.dry_run
    )
    if args.dry_run:
        return 0
    by_name = {row["name"]: row for row in rows}
    result = {
        "command": "python -m benchmarks.diseased_training "
        + shlex.join(own + (["--", *extra] if extra else [])),
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "splits": splits,
        "fractions": list(args.fractions),
        "datalists": {str(f): str(p) for f, p in lists.items()},
        "common_overrides": budget,
        "methods": {},
    }
    for m in args.families:
        entries = [
            {
                "fraction": f,
                "run": f"{m}_abnormal_{_pct(f)}",
                **{
                    k: by_name[f"{m}_abnormal_{_pct(f)}"][k]
                    for k in ("command", "aggregate", "seeds")
                },
            }
            for f in args.fractions
        ]
        first, last = entries[0]["aggregate"], entries[-1]["aggregate"]
        result["methods"][m] = {
            "runs": entries,
            "change": {
                split: change(
                    (first.get(split) or {}).get("auc"), (last.get(split) or {}).get("auc")
                )
                for split in splits
            },
        }
    result["wall_time_s"] = time.time() - start
    x = [f"{100 * f:g} %" for f in args.fractions]
    panels = [
        {
            "title": f"{split} split",
            "xlabel": "diseased training images",
            "x": x,
            "series": {
                m: compare.auc_series([e["aggregate"] for e in r["runs"]], [split])[split]
                for m, r in result["methods"].items()
            },
        }
        for split in splits
    ]
    figure = curve_figure(panels, root / "diseased_training.png")
    figure_ref = published_figure(figure, "figure10.png", args.write)
    publish(
        root,
        "diseased_training",
        HEADING,
        markdown(result, figure_ref, compare.how(args)),
        result,
        args.write,
    )
    return 0


def markdown(result: dict, figure: str, how: str) -> str:
    splits = result["splits"]
    head = [
        "method",
        "diseased in training",
        "seeds",
        *compare.split_headings(splits),
        "train time per run (s)",
    ]
    lines = markdown_table(
        head,
        [
            [
                m,
                f"{100 * e['fraction']:g} %",
                str(len(e["seeds"])),
                *compare.split_cells(e["aggregate"], splits),
                compare.train_time_cell(e["aggregate"]),
            ]
            for m, r in result["methods"].items()
            for e in r["runs"]
        ],
    )
    last = f"{100 * result['fractions'][-1]:g} %"
    rows = []
    for m, r in result["methods"].items():
        for split, c in r["change"].items():
            c = c or {"points": None, "se": None, "resolved_drop": None}
            cell = (
                "-"
                if c["points"] is None
                else f"{c['points']:+.1f}" + ("" if c["se"] is None else f" +- {c['se']:.1f}")
            )
            rows.append([m, split, cell, {None: "-", True: "yes", False: "no"}[c["resolved_drop"]]])
    changes = markdown_table(
        ["method", "split", f"AUC change, 0 % -> {last} (points +- SE)", "resolved drop?"], rows
    )
    return "\n".join(
        [
            *provenance(result["command"], result["wall_time_s"], how),
            "Every run: its family's training command with `--datalist <output_root>/datalists/abnormal_<pct>.json "
            f"{shlex.join(result['common_overrides'])}`, then `evaluate.json` on each split; runs and `seeds.md` in "
            "`<output_root>/<method>_abnormal_<pct>/`. In %: mean +- sample std over seeds; accuracy and F1 at the "
            "threshold chosen on validation. The validation and report images are the same at every fraction.",
            "",
            *lines,
            "",
            *changes,
            "",
            f"The paper's claim: {CLAIM}; it holds here for a method whose AUC at {last} shows no resolved drop "
            "(the 95 % Welch t interval of the difference of the seed means excludes 0). "
            "Figure (AUC vs the diseased share, "
            f"mean +- std over seeds): {figure}. For the paper's scale, add `--preset paper --epochs 200` on a GPU.",
            "",
        ]
    )


def _pct(fraction: float) -> str:
    """The fraction in a file or folder name: 0.1 -> "10"."""
    return f"{round(100 * fraction):02d}"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.diseased_training",
        description=__doc__.split("\n\n")[0],
        epilog="Bundle overrides for every run go after `--`.",
    )
    parser.add_argument(
        "--dataset_dir", required=True, help="ZhangLab layout or normal/abnormal folders"
    )
    parser.add_argument(
        "--fractions",
        type=float,
        nargs="+",
        default=list(FRACTIONS),
        help="shares of abnormal training images, the first the reference (default %(default)s)",
    )
    compare.family_arguments(parser, default=["squid"])
    parser.add_argument(
        "--datalist_seed", type=int, default=0, help="seed of the splits, the same for every run"
    )
    parser.add_argument("--val_per_class", type=int, default=100)
    parser.add_argument("--report_per_class", type=int, default=100)
    compare.study_arguments(parser)
    return parser


if __name__ == "__main__":
    sys.exit(main())
