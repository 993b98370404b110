"""Two variants trained on the same seeds, compared seed by seed, and a decision rule applied
as it was stated before the runs.

    python -m benchmarks.paired --variant runs/bias --baseline runs/default \\
        --splits validation report test --rule worst_seed

Both roots are :mod:`benchmarks.seeds` output roots (``seed<k>/models/training_summary.json``,
``seed<k>/eval/<split>/scores.csv``); a seed counts when both have it trained and evaluated
on every split asked for. Per seed and split: each variant's AUC and the paired bootstrap
interval of variant minus baseline (the same images, resampled together, so the difficulty
they share cancels); the validation curve's drop from its peak and its std after warm-up.
Over seeds: each variant's mean +- std, its worst seed and how many seeds miss
``--target``; the mean difference +- std with its 95 % t interval over seeds; seeds up, and
resolved gains and losses.

Why a rule in code: one run's validation AUC swings by several points from seed to seed, so
a setting is adopted by a rule written down before the runs that decide it, and the rule is
applied here exactly, on the ``--decide`` split only (the report and test splits are reported,
not read by the rule). Rules (``RULES``):

- ``strict`` (sessions 16-19): no seed loses with a resolved interval, the mean difference is
  positive, and no variant run falls more than ``--max_drop`` below its peak.
- ``worst_seed`` (session 20): the mean difference is positive, the variant's worst seed is no
  worse than the baseline's, resolved losses do not outnumber resolved gains, and at least
  ``--min_no_fall`` of the variant's runs stay within ``--max_drop`` of their peak. Why: with
  ten seeds and a change that does nothing, at least one per-seed 95 % interval excludes 0 on
  the losing side about one time in five, and what a user who trains once risks is the worst
  seed, which ``strict`` ignores.

Writes ``<variant>/paired_<baseline folder>.md`` and ``.json``.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

import numpy as np
from scipy import stats

from squid_monai.metrics import bootstrap_auc, roc_auc
from squid_monai.workflow import curve_stability


def read_scores(path: Path) -> dict[str, tuple[int, float]]:
    """``image -> (label, score)`` of one evaluation's ``scores.csv``."""
    with open(path, newline="") as f:
        return {row["image"]: (int(row["label"]), float(row["score"])) for row in csv.DictReader(f)}


def paired_split(variant: Path, baseline: Path) -> dict:
    """Both AUCs on one split's images and the paired bootstrap interval of their difference."""
    a, b = read_scores(variant), read_scores(baseline)
    if a.keys() != b.keys():
        raise ValueError(
            f"{variant} and {baseline} score different images ({len(a.keys() ^ b.keys())} not in both)"
        )
    images = sorted(a)
    labels = [a[i][0] for i in images]
    if labels != [b[i][0] for i in images]:
        raise ValueError(f"{variant} and {baseline} label the same images differently")
    sa, sb = [a[i][1] for i in images], [b[i][1] for i in images]
    diff = bootstrap_auc(labels, sa, reference=sb)
    return {
        "variant": roc_auc(labels, sa),
        "baseline": roc_auc(labels, sb),
        "difference": diff["value"],
        "difference_95ci": [diff["low"], diff["high"]],
        "n": len(images),
    }


def curve(run: Path, warmup_fraction: float) -> dict:
    summary = json.loads((run / "models" / "training_summary.json").read_text())
    c = curve_stability(summary.get("val_auc_per_epoch", {}), warmup_fraction)
    return {"drop": c.get("val_auc_drop_from_peak"), "std": c.get("val_auc_std_after_warmup")}


def seeds_in(root: Path, splits) -> dict[int, Path]:
    """The seeds of a root that finished training and every split's evaluation."""
    runs = {}
    for run in root.glob("seed*"):
        if (
            run.name[4:].isdigit()
            and (run / "models" / "training_summary.json").is_file()
            and all((run / "eval" / s / "scores.csv").is_file() for s in splits)
        ):
            runs[int(run.name[4:])] = run
    return runs


def compare(
    variant: Path, baseline: Path, splits, target: float = 0.95, warmup_fraction: float = 0.3
) -> dict:
    """Per-seed paired rows and the aggregates over the seeds both roots have."""
    va, ba = seeds_in(variant, splits), seeds_in(baseline, splits)
    rows = []
    for seed in sorted(va.keys() & ba.keys()):
        row = {
            "seed": seed,
            "variant_curve": curve(va[seed], warmup_fraction),
            "baseline_curve": curve(ba[seed], warmup_fraction),
        }
        for split in splits:
            row[split] = paired_split(
                va[seed] / "eval" / split / "scores.csv", ba[seed] / "eval" / split / "scores.csv"
            )
        rows.append(row)
    return {
        "variant": str(variant),
        "baseline": str(baseline),
        "splits": list(splits),
        "target": target,
        "seeds": rows,
        "aggregate": {split: aggregate([r[split] for r in rows], target) for split in splits},
    }


def aggregate(cells: list[dict], target: float) -> dict:
    """Over seeds: each arm's mean, std, worst and misses of ``target``; the difference's mean,
    std and 95 % t interval; seeds up, resolved gains and losses."""
    if not cells:
        return {}
    out = {arm: _spread([c[arm] for c in cells]) for arm in ("variant", "baseline")}
    for arm in out:
        out[arm]["below_target"] = sum(c[arm] < target for c in cells)
    d = _spread([c["difference"] for c in cells])
    half = (
        None
        if d["std"] is None
        else float(stats.t.ppf(0.975, len(cells) - 1) * d["std"] / np.sqrt(len(cells)))
    )
    out["difference"] = {
        "mean": d["mean"],
        "std": d["std"],
        "t_95ci": None if half is None else [d["mean"] - half, d["mean"] + half],
        "up": sum(c["difference"] > 0 for c in cells),
        "n": len(cells),
        "resolved_gains": sum(c["difference_95ci"][0] > 0 for c in cells),
        "resolved_losses": sum(c["difference_95ci"][1] < 0 for c in cells),
    }
    return out


def _std(std: float | None) -> str:
    """A std for the table: ``n/a`` for a single seed (seeds.py's convention), not 0."""
    return "n/a" if std is None else f"{std:.3f}"


def _spread(values: list[float]) -> dict:
    v = np.array(values, dtype=float)
    return {
        "mean": float(v.mean()),
        "std": float(v.std(ddof=1)) if v.size > 1 else None,
        "worst": float(v.min()),
    }


def rule_strict(result: dict, split: str, max_drop: float = 0.02, **_) -> dict[str, bool]:
    agg, rows = result["aggregate"][split], result["seeds"]
    return {
        "no seed loses (resolved)": agg["difference"]["resolved_losses"] == 0,
        "mean difference > 0": agg["difference"]["mean"] > 0,
        f"no variant run falls > {max_drop}": all(
            r["variant_curve"]["drop"] <= max_drop for r in rows
        ),
    }


def rule_worst_seed(
    result: dict, split: str, max_drop: float = 0.02, min_no_fall: float = 0.9, **_
) -> dict[str, bool]:
    agg, rows = result["aggregate"][split], result["seeds"]
    kept = sum(r["variant_curve"]["drop"] <= max_drop for r in rows)
    return {
        "mean difference > 0": agg["difference"]["mean"] > 0,
        "worst seed no worse": agg["variant"]["worst"] >= agg["baseline"]["worst"],
        "resolved losses <= resolved gains": agg["difference"]["resolved_losses"]
        <= agg["difference"]["resolved_gains"],
        f">= {min_no_fall:.0%} of variant runs fall <= {max_drop}": kept >= min_no_fall * len(rows),
    }


RULES = {"strict": rule_strict, "worst_seed": rule_worst_seed}


def decide(result: dict, rule: str, split: str = "validation", **options) -> dict:
    """The rule's criteria on ``split``, each True or False, and whether all hold."""
    if not result["seeds"]:
        raise ValueError("no seed is trained and evaluated in both roots")
    criteria = RULES[rule](result, split, **options)
    return {
        "rule": rule,
        "split": split,
        "options": options,
        "criteria": criteria,
        "adopt": all(criteria.values()),
    }


def markdown(result: dict) -> str:
    splits = result["splits"]
    head = (
        ["seed"]
        + [f"{s} AUC: baseline -> variant (paired)" for s in splits]
        + ["drop: baseline / variant", "std after warm-up: baseline / variant"]
    )
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in result["seeds"]:
        cells = [str(r["seed"])]
        for s in splits:
            c = r[s]
            lo, hi = c["difference_95ci"]
            interval = f"{c['difference']:+.3f} [{lo:+.3f}, {hi:+.3f}]"
            cells.append(
                f"{c['baseline']:.3f} -> {c['variant']:.3f} ("
                + (f"**{interval}**" if lo > 0 or hi < 0 else interval)
                + ")"
            )
        bc, vc = r["baseline_curve"], r["variant_curve"]
        cells += [f"{bc['drop']:.3f} / {vc['drop']:.3f}", f"{bc['std']:.3f} / {vc['std']:.3f}"]
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        "| split | baseline: mean +- std, worst, below target | variant: mean +- std, worst, below target "
        "| difference: mean +- std [95 % t] | up / resolved gains / resolved losses |",
        "|---|---|---|---|---|",
    ]
    for s in splits:
        a = result["aggregate"][s]
        if not a:
            continue
        d = a["difference"]
        arm = [
            f"{a[k]['mean']:.3f} +- {_std(a[k]['std'])}, {a[k]['worst']:.3f}, {a[k]['below_target']}"
            for k in ("baseline", "variant")
        ]
        t = "" if d["t_95ci"] is None else f" [{d['t_95ci'][0]:+.3f}, {d['t_95ci'][1]:+.3f}]"
        lines.append(
            f"| {s} | {arm[0]} | {arm[1]} | {d['mean']:+.3f} +- {_std(d['std'])}{t} "
            f"| {d['up']} of {d['n']} / {d['resolved_gains']} / {d['resolved_losses']} |"
        )
    if "decision" in result:
        dec = result["decision"]
        lines += [
            "",
            f"Rule `{dec['rule']}` on {dec['split']}: "
            + ("**adopt**" if dec["adopt"] else "**do not adopt**"),
            "",
        ]
        lines += [f"- {'holds' if ok else 'FAILS'}: {name}" for name, ok in dec["criteria"].items()]
    return (
        "\n".join(
            [
                f"# {result['variant']} against {result['baseline']}, paired by seed",
                "",
                f"Target {result['target']}; bold: paired 95 % bootstrap interval excludes 0.",
                "",
                *lines,
            ]
        )
        + "\n"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.paired", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "--variant", type=Path, required=True, help="seeds.py output root of the candidate"
    )
    parser.add_argument(
        "--baseline", type=Path, required=True, help="seeds.py output root it is compared with"
    )
    parser.add_argument("--splits", nargs="+", default=["validation", "report"])
    parser.add_argument("--rule", choices=sorted(RULES), help="apply this decision rule")
    parser.add_argument(
        "--decide", default="validation", help="the split the rule reads (default %(default)s)"
    )
    parser.add_argument(
        "--target", type=float, default=0.95, help="AUC a seed should reach (default %(default)s)"
    )
    parser.add_argument(
        "--max_drop", type=float, default=0.02, help="largest allowed fall from the peak"
    )
    parser.add_argument(
        "--min_no_fall",
        type=float,
        default=0.9,
        help="worst_seed: share of runs that must not fall",
    )
    args = parser.parse_args(argv)
    result = compare(args.variant, args.baseline, args.splits, args.target)
    if args.rule:
        result["decision"] = decide(
            result, args.rule, args.decide, max_drop=args.max_drop, min_no_fall=args.min_no_fall
        )
    out = args.variant / f"paired_{args.baseline.name}"
    out.with_suffix(".json").write_text(json.dumps(result, indent=1))
    out.with_suffix(".md").write_text(markdown(result))
    print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
