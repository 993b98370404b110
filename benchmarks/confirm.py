"""Confirm a recipe chosen on validation, once, on fresh seeds' report images, by a rule
written before the runs (``docs/EVIDENCE.md``, "The rule, from now on").

    python -m benchmarks.shift --combine runs/confirm/seed*/models/shift.json --out confirm.json
    python -m benchmarks.confirm confirm.json --rule chest_recipe --score model

The input is ``benchmarks.shift --combine``'s JSON (one shift test per fresh seed); the rule
reads the report split only, and prints each criterion, whether it holds, and the targets
apart (a target missed is a result, not a failed confirmation). Rules (``RULES``):

* ``chest_recipe``: the chosen score beats the control ensemble (sharpness and pixel nearest
  neighbour, standardised on the calibration normals and summed) and each of its parts, seed
  by seed, on the report split: the lower end of the 95 % t-interval of the paired difference
  is above 0, unshifted and on the mean over shifts; at least 3 seeds.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

UNSHIFTED = "none"
MEAN = "mean_over_shifts"
PARTS = ("control", "sharpness", "pixel_knn")


def _lower(cell: dict) -> float | None:
    if cell.get("half_width") is None:
        return None
    return cell["mean"] - cell["half_width"]


def rule_chest_recipe(row: dict, min_seeds: int = 3) -> dict:
    """Criteria of the ``chest_recipe`` rule on one score's report-split row."""
    criteria = {}
    for condition in (UNSHIFTED, MEAN):
        for ref in PARTS:
            cell = row[f"{condition}_minus_{ref}"]
            lower = _lower(cell)
            criteria[f"{condition}: beats {ref}"] = {
                "difference": cell["mean"],
                "lower_95": lower,
                "holds": lower is not None and lower > 0 and cell["n"] >= min_seeds,
            }
    return criteria


def targets(row: dict) -> dict:
    """Issue 38's targets, reported beside the rule (they do not decide the confirmation)."""
    return {
        "report AUC unshifted >= 0.95": row[UNSHIFTED]["mean"] >= 0.95,
        "mean over shifts >= control + 0.10": row[f"{MEAN}_minus_control"]["mean"] >= 0.10,
        "mean over shifts >= sharpness + 0.10": row[f"{MEAN}_minus_sharpness"]["mean"] >= 0.10,
        "mean over shifts >= pixel_knn + 0.10": row[f"{MEAN}_minus_pixel_knn"]["mean"] >= 0.10,
    }


RULES = {"chest_recipe": rule_chest_recipe}


def decide(combined: dict, rule: str, score: str, split: str = "report") -> dict:
    """Apply ``rule`` to ``score`` of a combined shift result on ``split``."""
    if split not in combined["splits"]:
        raise SystemExit(f"the combined result has no {split!r} split")
    row = combined["splits"][split].get(score)
    if row is None:
        raise SystemExit(f"no score {score!r}; the result has {sorted(combined['splits'][split])}")
    criteria = RULES[rule](row)
    return {
        "rule": rule,
        "score": score,
        "split": split,
        "models": combined["models"],
        "auc": {c: row[c] for c in (UNSHIFTED, MEAN)},
        "criteria": criteria,
        "confirmed": all(c["holds"] for c in criteria.values()),
        "targets": targets(row),
    }


def markdown(decision: dict) -> str:
    lines = [
        f"Rule `{decision['rule']}`, score `{decision['score']}`, {decision['split']} split, "
        f"{len(decision['models'])} seeds: **{'confirmed' if decision['confirmed'] else 'not confirmed'}**",
        "",
        "| criterion | difference | lower end of the 95 % t-interval | holds |",
        "|---|---:|---:|---|",
    ]
    for name, c in decision["criteria"].items():
        lower = "-" if c["lower_95"] is None else f"{100 * c['lower_95']:.1f}"
        lines.append(f"| {name} | {100 * c['difference']:.1f} | {lower} | {c['holds']} |")
    lines += ["", "| target | reached |", "|---|---|"]
    lines += [f"| {name} | {reached} |" for name, reached in decision["targets"].items()]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.confirm", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("combined", help="benchmarks.shift --combine's JSON")
    parser.add_argument("--rule", choices=sorted(RULES), required=True)
    parser.add_argument("--score", default="model", help="the chosen score (default: model)")
    parser.add_argument("--split", default="report")
    parser.add_argument("--out", default=None, help="JSON file; .md beside it")
    args = parser.parse_args(argv)
    decision = decide(
        json.loads(Path(args.combined).read_text()), args.rule, args.score, args.split
    )
    text = markdown(decision)
    if args.out:
        Path(args.out).write_text(json.dumps(decision, indent=2))
        Path(args.out).with_suffix(".md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
