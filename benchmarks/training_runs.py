"""Report a finished (or stopped) training run in BENCHMARKS.md: wall time, the validation
AUC of every epoch (from the run's MLflow store), and the evaluation of its best model
beside the trivial sharpness baseline (from ``evaluate.json``'s ``metrics.json``).

    python -m benchmarks.training_runs --output_dir /tmp/zhanglab_small --title "ZhangLab, small preset" \
        --command "python -m monai.bundle run training ..." --wall "31 min" --eval_split validation

Run the training command, then ``monai.bundle run evaluating`` with the same ``--output_dir``,
then this script.
"""

from __future__ import annotations

import argparse
import json
from datetime import date
from pathlib import Path

from mlflow import MlflowClient

from benchmarks.report import cpu_name, write_section
from squid_monai.artifact import DEFAULT_FAMILY
from squid_monai.evaluation import detector_gain, detector_section

HEADING = "## Training runs"


def _history(client: MlflowClient, run_id: str, key: str) -> dict[int, float]:
    return {m.step: m.value for m in client.get_metric_history(run_id, key)}


def _training_run(output_dir: Path):
    client = MlflowClient(f"sqlite:///{output_dir.resolve() / 'mlruns.db'}")
    experiment = client.get_experiment_by_name("squid")
    runs = [
        r
        for r in client.search_runs([experiment.experiment_id])
        if not r.data.tags.get("mlflow.runName", "").startswith("evaluate")
    ]
    return client, runs[0]


def section(args) -> str:
    out = Path(args.output_dir)
    client, run = _training_run(out)
    auc = _history(client, run.info.run_id, "val_auc")
    running = _history(client, run.info.run_id, "val_auc_running_stats")
    logit = _history(client, run.info.run_id, "val_auc_logit")
    params = run.data.params
    best = max(auc, key=auc.get)
    family = params.get("family", DEFAULT_FAMILY)  # runs logged before the key was: SQUID's
    lines = [
        f"### {args.title}",
        "",
        f"Measured {date.today().isoformat()} on {cpu_name()} (2 cores). Command (from the repository root):",
        "",
        f"    {args.command}",
        "",
        f"Preset `{params.get('preset')}`, {params.get('epochs')} epochs planned, {len(auc)} validated; "
        f"wall time {args.wall}. Best validation AUC {auc[best]:.3f} at epoch {best}; last {auc[max(auc)]:.3f}.",
    ]
    metrics_file = out / "eval" / args.eval_split / "metrics.json"
    if metrics_file.exists():
        m = json.loads(metrics_file.read_text())
        model, base = detector_section(m), m["baseline_sharpness"]
        at_val = model.get("at_val_threshold") or model.get("at_validation_threshold") or {}
        lines += [
            "",
            f"Best model on the `{args.eval_split}` split (`monai.bundle run evaluating`, {m.get('n', '?')} images): "
            f"{family} AUC **{model['auc']:.3f}**"
            + (
                f", accuracy {at_val['accuracy']:.3f}, F1 {at_val['f1']:.3f} at the stored threshold"
                if at_val
                else ""
            )
            + f"; trivial sharpness baseline (negated Laplacian energy, no learning) AUC **{base['auc']:.3f}** "
            "on the same images"
            + (
                f", pixel nearest neighbour (distance to the closest calibration image, no learning) AUC "
                f"**{m['baseline_pixel_knn']['auc']:.3f}**"
                if "baseline_pixel_knn" in m
                else ""
            )
            + ".",
        ]
        gain = detector_gain(m, "sharpness")
        if gain is not None:  # reports written before the intervals existed lack them
            (lo, hi), (blo, bhi) = model["auc_95ci"], base["auc_95ci"]
            lines += [
                f"95 % bootstrap intervals: {family} [{lo:.3f}, {hi:.3f}], baseline [{blo:.3f}, {bhi:.3f}]; "
                f"paired difference {family} - baseline {gain['value']:+.3f} [{gain['low']:+.3f}, {gain['high']:+.3f}]"
                + (
                    " (resolved: the interval excludes 0)."
                    if gain["low"] > 0 or gain["high"] < 0
                    else " (not resolved by this many images: the interval contains 0)."
                )
            ]
        if args.eval_split == "validation":
            lines += [
                "(The validation split also chose the checkpoint and the threshold: these figures are "
                "optimistic; the official test split is held out and not in this repository's data.)"
            ]
    lines += [
        "",
        "| epoch | " + " | ".join(str(e) for e in sorted(auc)) + " |",
        "|---|" + "---:|" * len(auc),
        f"| val AUC ({params.get('score_source', 'logit')} score) | "
        + " | ".join(f"{auc[e]:.3f}" for e in sorted(auc))
        + " |",
    ]
    if (
        logit and params.get("score_source", "logit") != "logit"
    ):  # the paper's score beside the one in use
        lines.append(
            "| val AUC (logit, the paper's score) | "
            + " | ".join(f"{logit.get(e, float('nan')):.3f}" for e in sorted(auc))
            + " |"
        )
    if (
        len(set(running.values())) > 1
    ):  # a constant 0.5: the score does not read the discriminator's statistics
        lines.append(
            "| val AUC (logit, running statistics) | "
            + " | ".join(f"{running.get(e, float('nan')):.3f}" for e in sorted(auc))
            + " |"
        )
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--title", required=True)
    parser.add_argument("--command", required=True)
    parser.add_argument("--wall", required=True, help="measured wall time, e.g. '9 min 40 s'")
    parser.add_argument("--eval_split", default="test")
    parser.add_argument("--print_only", action="store_true")
    args = parser.parse_args(argv)
    text = section(args)
    print(text)
    if not args.print_only:
        heading = f"{HEADING}: {args.title}"
        write_section(heading, text.split("\n", 2)[2])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
