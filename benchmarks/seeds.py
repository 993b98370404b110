"""Run one bundle training over several seeds, evaluate every seed on the validation and
report splits, and tabulate per seed and as mean +- std over seeds (the way the paper
reports its results).

    python -m benchmarks.seeds --output_root runs/seeds --seeds 0 1 2 --parallel 2 -- \\
        --dataset_dir ../shared/data/zhanglab224 --preset small --epochs 16 \\
        --network_overrides "{'skip_levels': 1}"

Everything after ``--`` is passed unchanged to both the training and the evaluation
command (bundle overrides). Each seed trains with ``--seed k --output_dir
<output_root>/seed<k>``, in its own process with ``OMP_NUM_THREADS=1``, at most
``--parallel`` at a time, then runs ``evaluate.json`` with ``--eval_split`` for each of
``--splits`` (default ``validation report``). A ``python -m monai.bundle ...`` training
command runs in the same process as the evaluations (one start-up per seed, parsed exactly
as ``python -m monai.bundle`` parses it); any other command runs on its own first. A seed
whose ``models/training_summary.json`` exists is not trained again (``--rerun`` forces
it; an interrupted one resumes from its last checkpoint as the bundle does); evaluation
always runs (``--collect`` only tabulates what separate calls trained and evaluated;
``--dry_run`` prints every command and runs none). Log: ``seed<k>/run.log``.

Writes ``<output_root>/seeds.json`` (commands, per-seed rows, aggregates) and
``<output_root>/seeds.md`` (the table). Per seed: the best epoch and its validation AUC
(training), the AUC of the best model on each split with its 95 % bootstrap interval, the
sharpness baseline's AUC on the same images and the paired bootstrap interval of SQUID
minus the baseline (``metrics.json`` of the evaluation), accuracy and F1 at the validation
threshold, and the standard deviation of the validation AUC from epoch to epoch after
warm-up (``training_summary.json``'s ``val_auc_per_epoch``; see
:func:`squid_monai.workflow.curve_stability`); with DigitAnatomy, the AUC per anomaly type.
Aggregates: mean and sample standard deviation (ddof 1) over seeds.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
TRAIN_COMMAND = "python -m monai.bundle run training --config_file bundles/squid/configs/train.json"
EVALUATE_CONFIGS = "['bundles/squid/configs/train.json','bundles/squid/configs/evaluate.json']"
#: Runs ``python -m monai.bundle <argv>`` for each argument list in one process (one start-up
#: for all of them), each parsed exactly as ``python -m monai.bundle`` parses its command line.
_BUNDLE_COMMANDS_IN_ONE_PROCESS = (
    "import json, sys, fire\n"
    "from monai.bundle import run\n"
    "for argv in json.loads(sys.argv[1]):\n"
    "    fire.Fire({'run': run}, command=argv)\n"
)
_BUNDLE_MODULE = ["-m", "monai.bundle"]
#: Columns of the per-split part of a row, and their headings in seeds.md.
SPLIT_COLUMNS = {
    "auc": "AUC",
    "baseline_auc": "sharpness AUC",
    "gain": "SQUID - sharpness",
    "pixel_knn_auc": "pixel kNN AUC",
    "pixel_knn_gain": "SQUID - pixel kNN",
    "control_auc": "control AUC",
    "control_gain": "SQUID - control",
    "accuracy": "Acc",
    "f1": "F1",
}


def main(argv: list[str] | None = None) -> int:
    own, overrides = split_args(argv)
    args = _parser().parse_args(own)
    root = Path(args.output_root).resolve()
    train = shlex.split(args.train_command)
    failures = []
    bundle_train = _bundle_argv(train)

    def commands(seed: int) -> tuple[list[str], list[list[str]]]:
        return seed_commands(
            train, seed, root / f"seed{seed}", overrides, args.splits, args.evaluate_configs
        )

    if args.dry_run:
        for seed in args.seeds:
            train_cmd, evaluations = commands(seed)
            print(
                "\n".join(
                    command_line(c)
                    for c in [train_cmd, *(["python", *_BUNDLE_MODULE, *e] for e in evaluations)]
                )
            )
        return 0
    root.mkdir(parents=True, exist_ok=True)

    def run_seed(seed: int) -> None:
        out = root / f"seed{seed}"
        out.mkdir(parents=True, exist_ok=True)
        log = out / "run.log"
        train_cmd, bundle_commands = commands(seed)
        if not (out / "models" / "training_summary.json").is_file() or args.rerun:
            if bundle_train is not None:
                bundle_commands.insert(0, _bundle_argv(train_cmd))
            elif _run(_python(train_cmd), log) != 0:
                failures.append(f"seed {seed}: training failed, see {log}")
                return
        cmd = [sys.executable, "-c", _BUNDLE_COMMANDS_IN_ONE_PROCESS, json.dumps(bundle_commands)]
        if _run(cmd, log, append=bundle_train is None) != 0:
            failures.append(f"seed {seed}: training or evaluation failed, see {log}")

    if not args.collect:
        with ThreadPoolExecutor(max_workers=max(1, args.parallel)) as pool:
            list(pool.map(run_seed, args.seeds))

    rows = [
        row
        for row in (
            collect_seed(root / f"seed{s}", s, args.splits, args.warmup_fraction)
            for s in args.seeds
        )
        if row is not None
    ]
    result = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "train_command": [
            *train,
            "--seed",
            "<k>",
            "--output_dir",
            str(root / "seed<k>"),
            *overrides,
        ],
        "evaluate_command": [
            "python",
            "-m",
            "monai.bundle",
            "run",
            "evaluating",
            "--config_file",
            args.evaluate_configs,
            "--seed",
            "<k>",
            "--output_dir",
            str(root / "seed<k>"),
            "--eval_split",
            "<split>",
            *overrides,
        ],
        "splits": list(args.splits),
        "warmup_fraction": args.warmup_fraction,
        "seeds": rows,
        "aggregate": aggregate(rows),
        "failures": failures,
    }
    (root / "seeds.json").write_text(json.dumps(result, indent=2))
    (root / "seeds.md").write_text(markdown(result))
    for failure in failures:
        print(failure, file=sys.stderr)
    print(f"{len(rows)} of {len(args.seeds)} seeds done; {root / 'seeds.md'}")
    return 1 if failures else 0


def split_args(argv: list[str] | None) -> tuple[list[str], list[str]]:
    """A command's own arguments, and the bundle overrides after ``--``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    return (argv[: argv.index("--")], argv[argv.index("--") + 1 :]) if "--" in argv else (argv, [])


def seed_commands(
    train: list[str],
    seed: int,
    out: Path,
    overrides: list[str],
    splits,
    evaluate_configs: str = EVALUATE_CONFIGS,
) -> tuple[list[str], list[list[str]]]:
    """One seed's training command and the ``monai.bundle`` arguments of its evaluations (one
    per split): the overrides go to both, so training and evaluation see the same data."""
    seeded = ["--seed", str(seed), "--output_dir", str(out), *overrides]
    evaluations = [
        ["run", "evaluating", "--config_file", evaluate_configs, *seeded, "--eval_split", split]
        for split in splits
    ]
    return [*train, *seeded], evaluations


def command_line(cmd: list[str]) -> str:
    """``cmd`` as a shell line to copy, a config list such as ``['a.json','b.json']`` in double quotes."""
    return " ".join(
        f'"{a}"' if "'" in a and not set('"$`\\') & set(a) else shlex.quote(a) for a in cmd
    )


def collect_seed(out: Path, seed: int, splits, warmup_fraction: float = 0.3) -> dict | None:
    """The row of one seed from its ``training_summary.json`` and evaluation ``metrics.json``
    files; ``None`` if it has not finished training."""
    from squid_monai.evaluation import detector_gain, detector_section
    from squid_monai.workflow import curve_stability

    summary_file = out / "models" / "training_summary.json"
    if not summary_file.is_file():
        return None
    summary = json.loads(summary_file.read_text())
    curve = summary.get("val_auc_per_epoch", {})
    row = {
        "seed": seed,
        "best_epoch": summary.get("best_epoch"),
        "best_val_auc": summary.get("best_val_auc"),
        "epochs": summary.get("epochs"),
        "train_time_s": summary.get("train_time_s"),
        "val_auc_std_after_warmup": curve_stability(curve, warmup_fraction).get(
            "val_auc_std_after_warmup"
        ),
    }
    for split in splits:
        metrics_file = out / "eval" / split / "metrics.json"
        if not metrics_file.is_file():
            continue
        m = json.loads(metrics_file.read_text())
        detector = detector_section(m)
        gain, at_val = detector_gain(m, "sharpness"), detector["at_validation_threshold"]
        row[split] = {
            "n": m.get("n"),
            "auc": detector["auc"],
            "auc_95ci": detector.get("auc_95ci"),
            "baseline_auc": m["baseline_sharpness"]["auc"],
            "gain": gain["value"],
            "gain_95ci": [gain["low"], gain["high"]],
            "accuracy": at_val["accuracy"],
            "f1": at_val["f1"],
        }
        if "baseline_pixel_knn" in m:  # reports written before it existed lack it
            knn = detector_gain(m, "pixel_knn")
            row[split].update(
                pixel_knn_auc=m["baseline_pixel_knn"]["auc"],
                pixel_knn_gain=knn["value"],
                pixel_knn_gain_95ci=[knn["low"], knn["high"]],
            )
        if "baseline_control" in m:  # the control ensemble (issue 38); older reports lack it
            ctl = detector_gain(m, "control")
            row[split].update(
                control_auc=m["baseline_control"]["auc"],
                control_gain=ctl["value"],
                control_gain_95ci=[ctl["low"], ctl["high"]],
            )
        if "auc_by_anomaly" in detector:  # DigitAnatomy: which anomaly type the score misses
            row[split]["auc_by_anomaly"] = detector["auc_by_anomaly"]
    return row


def aggregate(rows: list[dict]) -> dict:
    """Mean and sample standard deviation over seeds of every number in the rows."""

    def stats(values):
        values = np.array([v for v in values if v is not None], dtype=float)
        if values.size == 0:
            return None
        std = float(values.std(ddof=1)) if values.size > 1 else None
        return {"mean": float(values.mean()), "std": std, "n": int(values.size)}

    out = {
        key: stats(r.get(key) for r in rows)
        for key in ("best_epoch", "best_val_auc", "val_auc_std_after_warmup", "train_time_s")
    }
    splits = {key for r in rows for key, value in r.items() if isinstance(value, dict)}
    for split in sorted(splits):
        out[split] = {col: stats(r.get(split, {}).get(col) for r in rows) for col in SPLIT_COLUMNS}
        types = sorted({t for r in rows for t in r.get(split, {}).get("auc_by_anomaly", {})})
        if types:
            out[split]["auc_by_anomaly"] = {
                t: stats(r.get(split, {}).get("auc_by_anomaly", {}).get(t) for r in rows)
                for t in types
            }
    return out


def markdown(result: dict) -> str:
    splits = [s for s in result["splits"] if any(s in r for r in result["seeds"])]
    head = ["seed", "best epoch", "best val AUC (training)", "val AUC std after warm-up"]
    head += [f"{split} {SPLIT_COLUMNS[c]}" for split in splits for c in SPLIT_COLUMNS]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in result["seeds"]:
        cells = [
            str(r["seed"]),
            str(r["best_epoch"]),
            _num(r["best_val_auc"]),
            _num(r["val_auc_std_after_warmup"]),
        ]
        for split in splits:
            s = r.get(split)
            cells += (
                [
                    _with_ci(s["auc"], s["auc_95ci"]),
                    _num(s["baseline_auc"]),
                    _with_ci(s["gain"], s["gain_95ci"]),
                    _num(s.get("pixel_knn_auc")),
                    _with_ci(s.get("pixel_knn_gain"), s.get("pixel_knn_gain_95ci")),
                    _num(s.get("control_auc")),
                    _with_ci(s.get("control_gain"), s.get("control_gain_95ci")),
                    _num(s["accuracy"]),
                    _num(s["f1"]),
                ]
                if s
                else ["-"] * len(SPLIT_COLUMNS)
            )
        lines.append("| " + " | ".join(cells) + " |")
    agg = result["aggregate"]
    cells = [
        "mean +- std",
        _mean_std(agg.get("best_epoch"), 1),
        _mean_std(agg.get("best_val_auc")),
        _mean_std(agg.get("val_auc_std_after_warmup")),
    ]
    cells += [_mean_std((agg.get(split) or {}).get(c)) for split in splits for c in SPLIT_COLUMNS]
    lines.append("| " + " | ".join(f"**{c}**" for c in cells) + " |")
    by_type = {
        split: agg[split]["auc_by_anomaly"]
        for split in splits
        if "auc_by_anomaly" in (agg.get(split) or {})
    }
    if by_type:
        types = sorted({t for per in by_type.values() for t in per})
        lines += [
            "",
            "AUC per anomaly type (all normals against that type), mean +- std over seeds:",
            "",
            "| split | " + " | ".join(types) + " |",
            "|" + "---|" * (len(types) + 1),
        ]
        lines += [
            "| " + " | ".join([split] + [_mean_std(per.get(t)) for t in types]) + " |"
            for split, per in by_type.items()
        ]
    n = len(result["seeds"])
    return (
        "\n".join(
            [
                f"# Seeds: {n} run(s), {result['date']}",
                "",
                "Training: `" + shlex.join(result["train_command"]) + "`",
                "",
                "Evaluation: `" + shlex.join(result["evaluate_command"]) + "`",
                "",
                "Model selection on the validation split; the report split chooses nothing here "
                "(docs/EVIDENCE.md). "
                "AUC with its 95 % bootstrap interval; the sharpness baseline (negated Laplacian energy, no learning) "
                "and the pixel nearest neighbour (distance to the closest calibration image, no learning) on the same "
                "images, the control ensemble (the two, each standardised on the normal calibration images, summed), "
                "and the paired bootstrap interval of SQUID minus each; accuracy and F1 at the "
                f"threshold chosen on validation. Std after warm-up: of the validation AUC over epochs, the first "
                f"{result['warmup_fraction']:.0%} of the validated epochs left out. Last row: mean +- sample std over seeds.",
                "",
                *lines,
                "",
                *(f"Failed: {f}" for f in result["failures"]),
            ]
        )
        + "\n"
    )


def _bundle_argv(cmd: list[str]) -> list[str] | None:
    """The ``monai.bundle`` arguments of a ``python -m monai.bundle ...`` command, else None."""
    if (
        len(cmd) > 3
        and cmd[0] in ("python", "python3", sys.executable)
        and cmd[1:3] == _BUNDLE_MODULE
    ):
        return cmd[3:]
    return None


def _python(cmd: list[str]) -> list[str]:
    """A command starting with ``python`` runs with this interpreter."""
    return [sys.executable, *cmd[1:]] if cmd and cmd[0] in ("python", "python3") else cmd


def _run(cmd: list[str], log: Path, append: bool = False) -> int:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    with open(log, "a" if append else "w") as f:
        f.write("$ " + shlex.join(cmd) + "\n")
        f.flush()
        return subprocess.run(cmd, cwd=REPO, env=env, stdout=f, stderr=subprocess.STDOUT).returncode


def _num(value, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _with_ci(value, interval) -> str:
    if value is None:
        return "-"
    return _num(value) + (f" [{interval[0]:.3f}, {interval[1]:.3f}]" if interval else "")


def _mean_std(stats: dict | None, digits: int = 4) -> str:
    if not stats:
        return "-"
    std = "n/a" if stats["std"] is None else f"{stats['std']:.{digits}f}"
    return f"{stats['mean']:.{digits}f} +- {std}"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.seeds",
        description=__doc__.split("\n\n")[0],
        epilog="Bundle overrides for training and evaluation go after `--`.",
    )
    parser.add_argument(
        "--output_root", required=True, help="folder of the seed<k>/ runs and the tables"
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument(
        "--parallel", type=int, default=1, help="processes at a time (each OMP_NUM_THREADS=1)"
    )
    parser.add_argument(
        "--splits", nargs="+", default=["validation", "report"], help="evaluated splits"
    )
    parser.add_argument(
        "--train_command",
        default=TRAIN_COMMAND,
        help="the bundle training command (default: %(default)s)",
    )
    parser.add_argument(
        "--evaluate_configs", default=EVALUATE_CONFIGS, help="config files of the evaluation"
    )
    parser.add_argument(
        "--warmup_fraction",
        type=float,
        default=0.3,
        help="leading fraction of the validated epochs left out of the std (default %(default)s)",
    )
    parser.add_argument(
        "--rerun", action="store_true", help="train again even when a seed has finished"
    )
    parser.add_argument(
        "--collect",
        action="store_true",
        help="only tabulate the seeds already trained and evaluated (seeds run by separate calls)",
    )
    parser.add_argument(
        "--dry_run", action="store_true", help="print the training and evaluation commands only"
    )
    return parser


if __name__ == "__main__":
    sys.exit(main())
