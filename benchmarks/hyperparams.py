"""The paper's hyper-parameter study (Figure 9). It varies one setting at a time around the
recipe, trains and evaluates each value over seeds with the multi-seed runner
(:func:`compare.run_variants`), and checks the paper's claims on the report split.

    python -m benchmarks.hyperparams --dataset_dir ../shared/data/zhanglab224 --output_root runs/figure9 --write
    python -m benchmarks.hyperparams --dataset_dir DATA --output_root runs/figure9 --preset paper --epochs 200
    python -m benchmarks.hyperparams --dataset_dir DATA --output_root runs/figure9 --settings tiles --dry_run

The settings are network keys (:mod:`squid_monai.methods.squid.presets`): ``tiles`` (N x N; 1 means
no space awareness), ``queue_slots`` (memory-queue items per region), ``top_k`` (Gumbel
shrinkage) and ``mask_prob`` (keep probability of the masked shortcuts). A value equal to the
preset's own is one ``default`` run, shared by every setting. ``--values tiles=1,3`` replaces
a setting's values (DigitAnatomy's 96 px does not split into 4 x 4 tiles of the encoder's
size). ZhangLab is scored on validation and report; DigitAnatomy (no ``--dataset_dir``) is
scored on its test split. Everything after ``--`` goes to every training and evaluation.
Writes ``hyperparams.md``, ``.json`` and ``.png`` into ``--output_root``, and with ``--write``
the section into BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import ast
import json
import shlex
import sys
import time
from pathlib import Path

from benchmarks import compare, seeds
from benchmarks.report import (
    curve_figure,
    markdown_table,
    provenance,
    publish,
    published_figure,
)

HEADING = "## Hyper-parameter study (paper Figure 9)"
#: setting -> (values, the paper's claim). The paper gives no top-k values in its text; these are ours.
FIGURE9: dict[str, tuple[tuple, str]] = {
    "tiles": ((1, 2, 4), "1 x 1 (no space awareness) is the worst"),
    "queue_slots": (
        (50, 100, 200, 500, 1000),
        "200 items per region is best; above 500 the AUC drops",
    ),
    "top_k": ((1, 3, 5, 10, 20), "top-k matters (the paper uses 5)"),
    "mask_prob": (
        (0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 1.0),
        "about 0.95 is best; skipping more features hurts",
    ),
}


#: setting -> the paper's claim as value pairs ``(a, b)``, "a scores above b", given the values run
CLAIM_PAIRS = {
    "tiles": lambda values: [(v, 1) for v in values if v != 1],
    "queue_slots": lambda values: [(200, v) for v in values if v != 200] + [(500, 1000)],
    "mask_prob": lambda values: [(0.95, v) for v in values if v != 0.95],
}


def claim_holds(setting: str, seeds_by_value: dict, split: str) -> str:
    """The paper's claim about ``setting``, tested pair by pair with :func:`compare.paired` on
    ``split`` (seed by seed): ``yes`` every pair in the claimed order and resolved; ``same
    direction, n.s.`` in order but not every pair resolved; ``not resolved`` a pair reversed
    within the seed spread; ``no`` a pair reversed and resolved; ``-`` no checkable claim, or
    a value it needs was not run. Reading means alone would call a 0.9-point reversal inside a
    2.6-point seed spread a refutation."""
    if setting not in CLAIM_PAIRS:
        return "-"
    pairs = CLAIM_PAIRS[setting](list(seeds_by_value))
    if not pairs or any(v not in seeds_by_value for pair in pairs for v in pair):
        return "-"
    diffs = [
        compare.paired(seeds_by_value[a], seeds_by_value[b], split) for a, b in pairs
    ]  # b - a: claimed < 0
    if any(d is None for d in diffs):
        return "-"
    reversed_ = [d for d in diffs if d["mean"] >= 0]
    if any(d["resolved"] for d in reversed_):
        return "no"
    if reversed_:
        return "not resolved"
    return "yes" if all(d["resolved"] for d in diffs) else "same direction, n.s."


def variants(
    settings: dict[str, tuple], defaults: dict, base: dict, train: str, common: list[str]
) -> tuple[dict, dict]:
    """``(runs, where)``: the runs for :func:`compare.run_variants` (folder -> (command,
    overrides)) and, per setting, value -> folder; a preset value is the shared ``default``."""
    runs, where = {}, {}
    for setting, values in settings.items():
        where[setting] = {}
        for value in values:
            name = "default" if value == defaults.get(setting) else f"{setting}_{value}"
            network = base if name == "default" else {**base, setting: value}
            runs[name] = (
                train,
                [*common, *(["--network_overrides", repr(network)] if network else [])],
            )
            where[setting][value] = name
    return runs, where


def main(argv: list[str] | None = None) -> int:
    own, extra = seeds.split_args(argv)
    args = _parser().parse_args(own)
    start = time.time()
    from squid_monai.methods.squid.presets import get_config

    settings = {s: FIGURE9[s][0] for s in args.settings}
    for spec in args.values:
        setting, _, values = spec.partition("=")
        settings[setting] = tuple(ast.literal_eval(v) for v in values.split(","))
    base = ast.literal_eval(args.network_overrides)
    recipe = compare.recipe(args, chest=bool(args.dataset_dir))
    defaults = get_config(_preset(args.preset, recipe, args.dataset_dir), **base)
    data = ["--dataset_dir", args.dataset_dir] if args.dataset_dir else []
    common = [*data, "--progress", "false", *compare.budget_overrides(args), *extra]
    runs, where = variants(settings, defaults, base, compare.train_command("squid", recipe), common)
    splits = compare.SPLITS["zhanglab" if args.dataset_dir else "digitanatomy"]
    root = Path(args.output_root).resolve()
    rows = compare.run_variants(
        runs, root, args.seeds, splits, args.parallel, args.collect, args.dry_run
    )
    if args.dry_run:
        return 0
    by_name = {row["name"]: row for row in rows}
    primary = splits[-1]  # report (chooses nothing: docs/EVIDENCE.md), or DigitAnatomy's test split
    result = {
        "command": "python -m benchmarks.hyperparams "
        + shlex.join(own + (["--", *extra] if extra else [])),
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "splits": splits,
        "primary_split": primary,
        "train_command": compare.train_command("squid", recipe),
        "common_overrides": common,
        "settings": {},
    }
    for setting, values in where.items():
        reference = by_name["default"]["seeds"] if "default" in by_name else []
        entries = [
            {
                "value": v,
                "run": name,
                "aggregate": by_name[name]["aggregate"],
                "seeds": by_name[name]["seeds"],
                "vs_default": {
                    s: None
                    if name == "default"
                    else compare.paired(reference, by_name[name]["seeds"], s)
                    for s in splits
                },
            }
            for v, name in values.items()
        ]
        means = {
            e["value"]: e["aggregate"][primary]["auc"]["mean"]
            for e in entries
            if (e["aggregate"].get(primary) or {}).get("auc")
        }
        result["settings"][setting] = {
            "claim": FIGURE9.get(setting, ((), "-"))[1],
            "runs": entries,
            "best": max(means, key=means.get) if means else None,
            "worst": min(means, key=means.get) if means else None,
            "holds": claim_holds(setting, {e["value"]: e["seeds"] for e in entries}, primary),
        }
    result["wall_time_s"] = time.time() - start
    figure = curve_figure(
        [
            {
                "title": setting,
                "xlabel": setting,
                "x": [e["value"] for e in s["runs"]],
                "series": compare.auc_series([e["aggregate"] for e in s["runs"]], splits),
            }
            for setting, s in result["settings"].items()
        ],
        root / "hyperparams.png",
    )
    figure_ref = published_figure(figure, "figure9.png", args.write)
    publish(
        root,
        "hyperparams",
        HEADING,
        markdown(result, figure_ref, compare.how(args)),
        result,
        args.write,
    )
    return 0


def markdown(result: dict, figure: str, how: str) -> str:
    splits, primary = result["splits"], result["primary_split"]
    head = [
        "setting",
        "value",
        "run",
        "seeds",
        *compare.split_headings(splits),
        *(f"{s} AUC vs default (paired)" for s in splits),
        "train time per run (s)",
    ]
    lines = markdown_table(
        head,
        [
            [
                setting,
                str(e["value"]),
                e["run"],
                str(len(e["seeds"])),
                *compare.split_cells(e["aggregate"], splits),
                *(compare.paired_cell(e["vs_default"][s]) for s in splits),
                compare.train_time_cell(e["aggregate"]),
            ]
            for setting, s in result["settings"].items()
            for e in s["runs"]
        ],
    )
    claims = markdown_table(
        ["setting", "the paper's claim", f"best on {primary} (ours)", "worst", "holds here?"],
        [
            [setting, s["claim"], str(s["best"]), str(s["worst"]), s["holds"]]
            for setting, s in result["settings"].items()
        ],
    )
    return "\n".join(
        [
            *provenance(result["command"], result["wall_time_s"], how),
            f"Every run: `{result['train_command']} {shlex.join(result['common_overrides'])}` with its "
            "`--network_overrides`, then `evaluate.json` on each split; runs and `seeds.md` in `<output_root>/<run>/`. "
            "In %: mean +- sample std over seeds; accuracy and F1 at the threshold chosen on validation.",
            "",
            *lines,
            "",
            *claims,
            "",
            f'"best" and "worst" compare mean AUCs on {primary}. "holds here?" tests the claim pair by pair '
            f"on {primary}, each pair paired seed by seed: yes (every pair in the claimed order, resolved), same "
            "direction, n.s. (in order, not all resolved), not resolved (a pair reversed within the seed spread), "
            'no (a pair reversed and resolved). "vs default (paired)": the run\'s AUC minus the '
            "default's, seed by seed on the same images (mean +- std over seeds); a difference is "
            "resolved where its 95 % t interval over seeds excludes 0 (for 3 seeds: |mean| > 4.30 x "
            "std / sqrt(3)). "
            "Figure (AUC vs value, mean +- std over seeds): "
            f"{figure}. For the paper's scale, add `--preset paper --epochs 200` (the authors' released "
            "configs) on a GPU, where every run takes the paper preset's time instead of the CPU recipe's.",
            "",
        ]
    )


def _preset(preset: str | None, recipe: str | None, dataset_dir: str | None) -> str:
    """The preset the runs will use: ``--preset``, else the recipe's, else the data's default."""
    preset = preset or (recipe and json.loads((compare.REPO / recipe).read_text()).get("preset"))
    if preset:
        return preset
    from squid_monai.workflow import DatalistSource, DigitAnatomySource

    return (DatalistSource if dataset_dir else DigitAnatomySource).preset


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.hyperparams",
        description=__doc__.split("\n\n")[0],
        epilog="Bundle overrides for every run go after `--`.",
    )
    parser.add_argument(
        "--dataset_dir",
        default=None,
        help="ZhangLab or normal/abnormal folders (default: DigitAnatomy)",
    )
    parser.add_argument("--settings", nargs="+", choices=sorted(FIGURE9), default=list(FIGURE9))
    parser.add_argument(
        "--values",
        nargs="*",
        default=[],
        metavar="SETTING=V1,V2",
        help="replace a setting's values, e.g. tiles=1,3",
    )
    parser.add_argument(
        "--network_overrides", default="{}", help="network settings of every run (a Python dict)"
    )
    compare.study_arguments(parser)
    return parser


if __name__ == "__main__":
    sys.exit(main())
