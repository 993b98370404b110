"""Every model family side by side on one data set, at one budget: train and evaluate each
method over seeds (:mod:`benchmarks.seeds`, one process per (method, seed), one thread
each, ``--parallel`` at a time), then one table with the paper's Table 1 figures beside ours.

    python benchmarks/compare.py --data digitanatomy --output_root runs/compare --seeds 0 1 2 -- --epochs 5
    python benchmarks/compare.py --data zhanglab --dataset_dir ../shared/data/zhanglab224 \\
        --output_root runs/compare --seeds 0 1 2 -- --preset small --epochs 5

A method is trained with ``train.json`` plus its method config
(``bundles/squid/configs/methods/<method>.json``; SQUID needs none) and evaluated with the
method-agnostic ``evaluate.json``; DigitAnatomy is scored on its test split, ZhangLab on
validation and on the report split (never used for any choice). Everything after ``--`` goes
to every training and evaluation command. A (method, seed) already trained is not trained
again. Writes ``<output_root>/<data>/compare.md`` and ``compare.json``; each method's runs
and ``seeds.md`` are in ``<output_root>/<data>/<method>/``.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CONFIGS = "bundles/squid/configs"
METHODS = ("squid", "autoencoder", "memae", "patch_memae", "fanogan", "ganomaly", "daad", "daad_plus")
#: The SQUID paper's Table 1 (ZhangLab, AUC / Acc / F1 in %, mean +- std where given);
#: Patch-MemAE from Table 7, printed there as the change against MemAE. DAAD is not in it.
PAPER_ZHANGLAB = {
    "squid": "87.6 +- 1.5 / 80.3 +- 1.3 / 84.7 +- 0.8",
    "autoencoder": "59.9 / 63.4 / 77.2",
    "memae": "77.8 +- 1.4 / 56.5 +- 1.1 / 82.6 +- 0.9",
    "patch_memae": "MemAE +0.5 / +18.5 / +1.3 (Table 7)",
    "fanogan": "75.5 / 74.0 / 81.0",
    "ganomaly": "78.0 / 70.0 / 79.0",
    "daad": "-",
    "daad_plus": "-",
}
SPLITS = {"digitanatomy": ["test"], "zhanglab": ["validation", "report"]}


def train_command(method: str) -> str:
    configs = [f"{CONFIGS}/train.json"] + ([] if method == "squid" else [f"{CONFIGS}/methods/{method}.json"])
    return "python -m monai.bundle run training --config_file " + shlex.quote(str(configs).replace(" ", ""))


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    overrides = argv[argv.index("--") + 1:] if "--" in argv else []
    args = _parser().parse_args(argv[: argv.index("--")] if "--" in argv else argv)
    if args.data == "zhanglab" and not args.dataset_dir:
        raise SystemExit("--data zhanglab needs --dataset_dir")
    root = Path(args.output_root).resolve() / args.data
    data = ["--dataset_dir", args.dataset_dir] if args.dataset_dir else []
    splits = SPLITS[args.data]

    def seeds_cmd(method: str, seeds, collect: bool = False) -> list[str]:
        return [sys.executable, str(REPO / "benchmarks" / "seeds.py"), "--output_root", str(root / method),
                "--seeds", *map(str, seeds), "--splits", *splits, "--train_command", train_command(method),
                *(["--collect"] if collect else []), "--", *data, "--progress", "false", *overrides]

    def run(job) -> None:
        method, seed = job
        (root / method).mkdir(parents=True, exist_ok=True)
        with open(root / method / f"compare_seed{seed}.log", "w") as log:
            subprocess.run(seeds_cmd(method, [seed]), cwd=REPO, stdout=log, stderr=subprocess.STDOUT)

    if not args.collect:
        jobs = [(m, s) for s in args.seeds for m in args.methods]
        with ThreadPoolExecutor(max_workers=max(1, args.parallel)) as pool:
            list(pool.map(run, jobs))
    rows = []
    for method in args.methods:
        subprocess.run(seeds_cmd(method, args.seeds, collect=True), cwd=REPO, stdout=subprocess.DEVNULL)
        result_file = root / method / "seeds.json"
        result = json.loads(result_file.read_text()) if result_file.is_file() else {"seeds": [], "aggregate": {}}
        rows.append({"method": method, "command": train_command(method), "seeds": result["seeds"],
                     "aggregate": result["aggregate"], "paper_zhanglab": PAPER_ZHANGLAB.get(method, "-")})
    out = {"date": time.strftime("%Y-%m-%d %H:%M:%S"), "data": args.data, "splits": splits,
           "overrides": overrides, "dataset_dir": args.dataset_dir, "rows": rows}
    root.mkdir(parents=True, exist_ok=True)
    (root / "compare.json").write_text(json.dumps(out, indent=2))
    (root / "compare.md").write_text(markdown(out))
    print((root / "compare.md").read_text())
    return 0


def markdown(out: dict) -> str:
    head = ["method", "seeds"]
    for split in out["splits"]:
        head += [f"{split} AUC", f"{split} Acc", f"{split} F1", f"{split} sharpness AUC", f"{split} method - sharpness"]
    head += ["train time per run (s)", "paper Table 1, ZhangLab AUC / Acc / F1"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in out["rows"]:
        agg = row["aggregate"]
        cells = [row["method"], str(len(row["seeds"]))]
        for split in out["splits"]:
            a = agg.get(split) or {}
            cells += [_pct(a.get("auc")), _pct(a.get("accuracy")), _pct(a.get("f1")), _pct(a.get("baseline_auc")),
                      _pct(a.get("gain"), signed=True)]
        t = agg.get("train_time_s")
        cells += ["-" if not t else f"{t['mean']:.0f}", row["paper_zhanglab"]]
        lines.append("| " + " | ".join(cells) + " |")
    command = "python benchmarks/compare.py --data " + out["data"] + (
        f" --dataset_dir {out['dataset_dir']}" if out["dataset_dir"] else "") + " -- " + shlex.join(out["overrides"])
    return "\n".join([
        f"# Methods compared on {out['data']} ({out['date']})", "",
        f"Command: `{command}`", "",
        "Per method: `" + (out["rows"][0]["command"] if out["rows"] else "") + "` and the method config, "
        "see each method's `seeds.md`. In %: mean +- sample std over seeds; accuracy and F1 at the threshold "
        "chosen on validation; the sharpness baseline (no learning) on the same images.", "", *lines, ""])


def _pct(stats: dict | None, signed: bool = False) -> str:
    if not stats:
        return "-"
    mean = f"{100 * stats['mean']:+.1f}" if signed else f"{100 * stats['mean']:.1f}"
    return mean + ("" if stats.get("std") is None else f" +- {100 * stats['std']:.1f}")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python benchmarks/compare.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", choices=sorted(SPLITS), required=True)
    parser.add_argument("--dataset_dir", default=None, help="the chest X-ray folder (for --data zhanglab)")
    parser.add_argument("--output_root", required=True)
    parser.add_argument("--methods", nargs="+", default=list(METHODS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--parallel", type=int, default=2, help="(method, seed) runs at a time, one thread each")
    parser.add_argument("--collect", action="store_true", help="only tabulate what earlier calls ran")
    return parser


if __name__ == "__main__":
    sys.exit(main())
