"""SQUID.md section 5 ablation study: train and evaluate the full model and every
ablation switch with the bundle's own commands, and write the table beside the paper's
Table 2 into BENCHMARKS.md.

    python benchmarks/ablations.py --epochs 5 --digitanatomy_length 512 --write
    python benchmarks/ablations.py --dataset_dir ../shared/data/zhanglab224 --preset small --epochs 16 --only "full SQUID" "no in-painting block" --write

Two invocations may share an ``--output_root`` (e.g. one per core, each with ``--only``);
a last one with ``--write`` and every name then tabulates the finished rows without
re-running them.

Each run: ``monai.bundle run training`` (model selection on the validation split), then
``monai.bundle run evaluating`` on the held-out split (DigitAnatomy: its fixed-seed test
set; ZhangLab without its official test split: the validation split, labelled as such).
Runs are resumable: a finished variant is not repeated, and a killed one resumes from its
last checkpoint.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shlex
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from report import REPO, cpu_name, load_average, write_section  # noqa: E402

from squid_monai.metrics import bootstrap_auc  # noqa: E402

HEADING = "## Ablation study"
TRAIN = "bundles/squid/configs/train.json"
EVALUATE = "['bundles/squid/configs/train.json','bundles/squid/configs/evaluate.json']"

#: name -> (network overrides, the paper's ZhangLab AUC from SQUID.md section 5)
ABLATIONS: dict[str, tuple[dict, float]] = {
    "full SQUID": ({}, 87.6),
    "no space-aware memory": ({"space_aware": False}, 77.6),
    "no in-painting block": ({"inpainting": False}, 80.9),
    "no Gumbel shrinkage": ({"shrinkage": False}, 81.1),
    "no knowledge distillation": ({"distillation": False}, 81.2),
    "no stop-gradient": ({"stop_gradient": False}, 81.7),
    "memory matrix instead of queue": ({"memory": "matrix"}, 82.5),
    "no masked shortcuts": ({"shortcut": "none"}, 82.5),
    "no decoder memory": ({"decoder_memory": False}, 82.9),
    "convolution instead of transformer": ({"context": "conv"}, 76.9),
    "soft masked shortcut": ({"shortcut": "soft"}, 79.7),
    "pixel-level in-painting": ({"pixel_mask_ratio": 0.25}, 79.1),
    "out-of-grid neighbours as zero tokens (authors' code)": ({"mask_out_of_grid": False}, float("nan")),
}


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in name.split(" (")[0]).strip("_")


def _common(args, out: Path, overrides: dict) -> list[str]:
    # Python literals: the CLI (python-fire) would read JSON's `false` as the string "false"
    cmd = ["--output_dir", str(out), "--network_overrides", repr(overrides), "--mlflow_tracking", "false",
           "--seed", str(args.seed)]
    if args.preset:
        cmd += ["--preset", args.preset]
    if args.dataset_dir:
        cmd += ["--dataset_dir", str(Path(args.dataset_dir).resolve())]
    else:
        cmd += ["--digitanatomy_length", str(args.digitanatomy_length)]
    return cmd


def _run_one(name: str, overrides: dict, args) -> dict:
    """Train and evaluate one variant; a finished variant's row (``ablation_row.json``) is
    reused as measured, so a resumed study reports each run's own wall time."""
    out = Path(args.output_root) / _slug(name)
    row_file = out / "ablation_row.json"
    if row_file.exists():
        row = json.loads(row_file.read_text())
        if row["overrides"] == overrides and row["epochs"] == args.epochs:
            return row
    train = [sys.executable, "-m", "monai.bundle", "run", "training", "--config_file", TRAIN,
             "--epochs", str(args.epochs), "--progress", "false", *_common(args, out, overrides)]
    evaluate = [sys.executable, "-m", "monai.bundle", "run", "evaluating", "--config_file", EVALUATE,
                "--eval_split", args.eval_split, *_common(args, out, overrides)]
    start = time.time()
    subprocess.run(train, cwd=REPO, check=True, capture_output=True, text=True)  # resumes a killed run
    train_s = time.time() - start
    subprocess.run(evaluate, cwd=REPO, check=True, capture_output=True, text=True)
    summary = json.loads((out / "models" / "training_summary.json").read_text())
    metrics = json.loads((out / "eval" / args.eval_split / "metrics.json").read_text())
    row = {
        "name": name, "overrides": overrides, "epochs": args.epochs, "train_s": train_s,
        "total_s": time.time() - start, "load_after": load_average(),
        "best_val_auc": summary["best_val_auc"], "best_epoch": summary["best_epoch"],
        "val_curve": summary.get("val_auc_per_epoch", {}),
        "eval_auc": metrics["squid"]["auc"], "baseline_auc": metrics["baseline_sharpness"]["auc"],
        "command": " ".join(train[1:]).replace(sys.executable, "python"),
    }
    row_file.write_text(json.dumps(row, indent=1))
    return row


def _scores(row: dict, args) -> dict[str, tuple[int, float]]:
    """image -> (label, score) of one variant's evaluation ``scores.csv``."""
    path = Path(args.output_root) / _slug(row["name"]) / "eval" / args.eval_split / "scores.csv"
    with open(path, newline="") as f:
        return {r["image"]: (int(r["label"]), float(r["score"])) for r in csv.DictReader(f)}


def _paired_delta(full: dict, variant: dict) -> dict:
    """AUC(variant) - AUC(full) on the same images, with its paired bootstrap interval."""
    if full.keys() != variant.keys():
        raise ValueError("the variants were evaluated on different images")
    names = sorted(full)
    labels = [full[n][0] for n in names]
    return bootstrap_auc(labels, [variant[n][1] for n in names], reference=[full[n][1] for n in names])


def _table(rows: list[dict], args) -> str:
    data = f"ZhangLab (`{args.dataset_dir}`)" if args.dataset_dir else "DigitAnatomy (embedded, generated on the fly)"
    lines = [
        f"Measured {date.today().isoformat()} on {cpu_name()} ({os.cpu_count()} cores; "
        f"{args.machine_note or f'load before {args.load_before}, after {load_average()}'}). Data: {data}; preset `{args.preset or 'bundle default'}`, {args.epochs} epochs "
        f"per run, seed {args.seed}; model selected on the validation split; AUC on the `{args.eval_split}` split. "
        "Command (from the repository root):",
        "",
        f"    python benchmarks/ablations.py {shlex.join(args.argv)}",
        "",
        "Each row's training command is `python -m monai.bundle run training --config_file "
        f"{TRAIN} --epochs {args.epochs} --network_overrides '<switch>' ...`, then `run evaluating` with "
        "`evaluate.json`. The sharpness baseline (no learning) is the same for every row.",
        "",
        f"| variant | switch | paper AUC (ZhangLab, Table 2) | our best val AUC (epoch) | our {args.eval_split} AUC [95% CI] "
        f"| vs full [95% CI] | direction as paper? | sharpness baseline AUC | wall time (s) |",
        "|---|---|---:|---:|---:|---:|---|---:|---:|",
    ]
    full_scores = _scores(rows[0], args)
    for r in rows:
        paper = ABLATIONS[r["name"]][1]
        own = _scores(r, args)
        auc = bootstrap_auc([v[0] for v in own.values()], [v[1] for v in own.values()])
        if r is rows[0]:
            delta, same = "—", "—"
        else:
            d = _paired_delta(full_scores, own)
            delta = f"{100 * d['value']:+.1f} [{100 * d['low']:+.1f}, {100 * d['high']:+.1f}]"
            resolved = d["high"] < 0 or d["low"] > 0
            same = "—" if paper != paper else (("yes" if d["value"] < 0 else "**no**") + ("" if resolved else " (n.s.)"))
        lines.append(
            f"| {r['name']} | `{json.dumps(r['overrides'])}` | {'—' if paper != paper else f'{paper:.1f}'} | "
            f"{100 * r['best_val_auc']:.1f} ({r['best_epoch']}) | {100 * r['eval_auc']:.1f} "
            f"[{100 * auc['low']:.1f}, {100 * auc['high']:.1f}] | {delta} | "
            f"{same} | {100 * r['baseline_auc']:.1f} | {r['total_s']:.0f} |"
        )
    if args.eval_split == "validation":
        lines += ["", "The validation split also chose each run's checkpoint and threshold, so these AUCs are optimistic; "
                  "they compare variants with one another and with the baseline, not with the paper's test-split figures."]
    lines += ["", "\"vs full\": AUC difference to the full model on the same images, with its 95 % paired, "
              "class-stratified bootstrap interval (2000 resamples; `squid_monai.metrics.bootstrap_auc`). "
              "\"direction as paper?\": the paper reports every ablation below the full model; **no** marks a "
              "variant that scored at or above our full model here; (n.s.) marks a difference whose interval "
              "contains 0, i.e. not resolved by this many images. The interval covers the sampling of the images "
              "only: one seed and few epochs per run, and validation AUC swings from epoch to epoch (SQUID.md "
              "section 5), so even a resolved difference may not survive another seed."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--preset", default=None, help="network preset (default: the bundle's for the data)")
    parser.add_argument("--dataset_dir", default=None, help="real data (default: DigitAnatomy)")
    parser.add_argument("--eval_split", default=None, help="default: test on DigitAnatomy, validation on real data")
    parser.add_argument("--only", nargs="*", help="variants to run (names of ABLATIONS)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--digitanatomy_length", type=int, default=1024, help="DigitAnatomy images per epoch")
    parser.add_argument("--output_root", default="/tmp/squid_ablations")
    parser.add_argument("--write", action="store_true")
    parser.add_argument("--machine_note", default="", help="how the machine was shared, for the table's preface")
    args = parser.parse_args(argv)
    args.argv = list(argv if argv is not None else sys.argv[1:])
    if "--machine_note" in args.argv:  # a description, not part of the command to re-run
        i = args.argv.index("--machine_note")
        del args.argv[i:i + 2]
    args.eval_split = args.eval_split or ("validation" if args.dataset_dir else "test")
    args.load_before = load_average()
    names = args.only or list(ABLATIONS)
    rows = []
    heading = HEADING + (" (ZhangLab)" if args.dataset_dir else " (DigitAnatomy)")
    for i, name in enumerate(names):
        rows.append(_run_one(name, ABLATIONS[name][0], args))
        print(json.dumps({k: v for k, v in rows[-1].items() if k != "command"}), flush=True)
        if args.write:  # after every variant, so that an interrupted study still reports what ran
            pending = names[i + 1:]
            note = f"\n\nNot run yet (same command resumes): {', '.join(pending)}." if pending else ""
            write_section(heading, _table(rows, args) + note)
    print(_table(rows, args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
