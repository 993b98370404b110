"""The shift test: every score of one trained model on the validation and report images after
documented acquisition shifts, beside the unshifted images (``docs/SHIFT_TEST.md``).

    python -m benchmarks.shift --model_dir runs/x/models --dataset_dir /data/zhanglab --seed 0
    python -m benchmarks.shift --combine runs/*/models/shift.json --out shift_seeds.json
    python -m benchmarks.shift --combine runs/aug*/models/shift.json --against runs/base*/models/shift.json

Each shift of :data:`squid_monai.transforms.shifts.SHIFTS` is applied to the raw image before
the model's own preprocessing (the model's intensity rule and size), deterministically per image
(``--shift_seed``, the shift's name and the file name). The model is calibrated as it was
trained (on unshifted normal training images: a hospital's calibration comes from its training
data, its new studies from elsewhere). Scores, abnormal = high: ``model`` (the model's own
calibrated score), ``residual`` (mean squared reconstruction residual), ``feature`` (the
discriminator-feature residual, families with a discriminator), for SQUID also ``logit``,
``tile_residual`` and ``combined`` (each score source it supports, calibrated on the same
normals); and the controls with no learning on the same images, preprocessed at 64 px
whatever the model's size (``--control_size``): ``sharpness``, ``pixel_knn``
(to the unshifted calibration normals) and ``control`` (:class:`~squid_monai.baselines.
ControlEnsemble`). Writes the AUC of every score under every shift, and the mean over shifts,
as JSON (``--out``, default ``<model_dir>/shift.json``) and markdown (same name, ``.md``).

``--combine`` tabulates several such JSON files (one per training seed): mean +- the 95 %
t-interval half-width over seeds (critical value of Student's t with n - 1 degrees of
freedom) of each score, unshifted and mean over shifts, and its difference to each control
(and, ``--against``, to the same score of another variant's models of the same seeds).
``--diagnostics swap_sharpness`` adds a label-dependent condition, reported apart: the normal
images blurred and the abnormal ones sharpened, which reverses the ZhangLab shortcut, so a
score that lives on global sharpness falls below 50 there.
Nothing here chooses anything; the report split is read, never selected on.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from pathlib import Path

import numpy as np
import torch
from monai.data import DataLoader, Dataset
from scipy import stats

from squid_monai.artifact import Recipe
from squid_monai.baselines import ControlEnsemble, image_stack
from squid_monai.engines.evaluator import feature_residual
from squid_monai.loading import image_size, load_scorer
from squid_monai.methods.squid.scorer import SCORE_SOURCES, SQUIDScorer
from squid_monai.metrics import roc_auc
from squid_monai.scoring import calibrate
from squid_monai.transforms.shifts import SHIFTS, shifted_transforms
from squid_monai.workflow import choose_data, trained_intensity

#: The controls with no learning, last in every table.
CONTROLS = ("sharpness", "pixel_knn", "control")
UNSHIFTED = "none"
MEAN = "mean_over_shifts"
#: Label-dependent diagnostics (``--diagnostics``), by name: the shift of the normal and of
#: the abnormal images. Not acquisition shifts and never in the mean over shifts: they turn a
#: global cue against the labels, so that a score living on it falls (``swap_sharpness``:
#: normals blurred, abnormals sharpened, the ZhangLab shortcut reversed).
DIAGNOSTICS = {"swap_sharpness": ("blur", "sharpen")}
#: the controls' input size, whatever the model's: at 128 px sharpness reads noise as
#: sharpness and the control ensemble loses 6 points over the shifts (BENCHMARKS.md), so a
#: model of another size would otherwise face a weaker bar; 64 px is every chest recipe's size
CONTROL_SIZE = 64


class ByLabel:
    """A transform per label: ``transforms[label]`` of each item (0 normal, 1 abnormal)."""

    def __init__(self, *transforms):
        self.transforms = transforms

    def __call__(self, item: dict) -> dict:
        return self.transforms[int(item["label"])](item)


def source_scorers(scorer, calibration) -> dict:
    """For a SQUID scorer, a copy per other score source it supports (``tile_residual``,
    ``combined``), each calibrated on the normal ``calibration`` set; none for other families."""
    if not isinstance(scorer, SQUIDScorer):
        return {}
    out = {}
    for source in SCORE_SOURCES[2:]:
        other = copy.deepcopy(scorer)
        try:
            other.set_score_source(source)
        except ValueError:  # e.g. combined without the teacher: not a score this model has
            continue
        calibrate(other, DataLoader(calibration, batch_size=32))
        out[source] = other
    return out


@torch.no_grad()
def score_images(
    scorer, others: dict, control: ControlEnsemble | None, dataset, batch_size: int = 32
) -> dict:
    """Every score of every image of ``dataset`` (abnormal = high) and its label, as arrays;
    the controls too unless ``control`` is None (they are then scored on their own images,
    :func:`control_scores`)."""
    parts: dict[str, list] = {}
    discriminator = getattr(scorer, "discriminator", None)
    for batch in DataLoader(dataset, batch_size=batch_size, shuffle=False):
        image = torch.as_tensor(batch["image"]).float()
        out = scorer(image)
        values = {"model": out["score"]}
        if "residual" in out:
            values["residual"] = out["residual"]
        if hasattr(discriminator, "features"):
            values["feature"] = feature_residual(discriminator, image, out["reconstruction"])
        if isinstance(scorer, SQUIDScorer):
            values["logit"] = -out["logit"]
        values.update({source: other(image)["score"] for source, other in others.items()})
        if control is not None:
            values.update(control.parts(image))
        values["label"] = torch.as_tensor(batch["label"]).reshape(-1)
        _append(parts, values)
    return {key: np.concatenate(chunks) for key, chunks in parts.items()}


@torch.no_grad()
def control_scores(control: ControlEnsemble, dataset, batch_size: int = 32) -> dict:
    """The controls' scores of every image of ``dataset`` (in order), as arrays."""
    parts: dict[str, list] = {}
    for batch in DataLoader(dataset, batch_size=batch_size, shuffle=False):
        _append(parts, control.parts(torch.as_tensor(batch["image"]).float()))
    return {key: np.concatenate(chunks) for key, chunks in parts.items()}


def _append(parts: dict[str, list], values: dict) -> None:
    for key, value in values.items():
        parts.setdefault(key, []).append(value.reshape(-1).double().cpu().numpy())


def aucs(scores: dict) -> dict[str, float]:
    """The AUC of every score (``label`` excluded), learned scores first, controls last."""
    names = [k for k in scores if k != "label" and k not in CONTROLS] + [
        k for k in CONTROLS if k in scores
    ]
    return {name: roc_auc(scores["label"], scores[name]) for name in names}


def with_mean(table: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
    """``table`` (condition -> score -> AUC) with the mean over the shifted conditions added."""
    shifted = [c for c in table if c != UNSHIFTED and c not in DIAGNOSTICS]
    mean = (
        {s: float(np.mean([table[c][s] for c in shifted])) for s in table[UNSHIFTED]}
        if shifted
        else {}
    )
    return {**table, **({MEAN: mean} if mean else {})}


def run(args: argparse.Namespace) -> dict:
    model_dir = Path(args.model_dir)
    recipe = Recipe.of(model_dir / "network.json")
    size, intensity = image_size(recipe), trained_intensity(model_dir, "percentile")
    control_size = args.control_size or size
    scorer = load_scorer(model_dir / args.model)
    data = choose_data(
        args.dataset_dir,
        args.datalist,
        seed=args.seed,
        val_per_class=args.per_class,
        report_per_class=args.per_class,
    )
    calibration = data.calibration(size, max_images=args.calibration_images, intensity=intensity)
    control_calibration = (
        calibration
        if control_size == size
        else data.calibration(control_size, max_images=args.calibration_images, intensity=intensity)
    )
    control = ControlEnsemble(image_stack(control_calibration))
    others = source_scorers(scorer, calibration)
    shifts = [UNSHIFTED, *args.shifts, *args.diagnostics]
    result = {
        "model": str(model_dir / args.model),
        "family": recipe.family,
        "image_size": size,
        "control_size": control_size,
        "intensity": intensity,
        "seed": args.seed,
        "shift_seed": args.shift_seed,
        "shifts": {name: SHIFTS[name].description for name in args.shifts},
        "diagnostics": {
            name: f"normals: {n}, abnormals: {a}"
            for name, (n, a) in DIAGNOSTICS.items()
            if name in args.diagnostics
        },
        "splits": {},
    }
    for split in args.splits:
        items = data.splits[split] if data.splits else None
        if not items:
            raise SystemExit(f"the data set has no {split!r} split")
        table = {}
        for shift in shifts:
            dataset = Dataset(items, _shift_transform(shift, size, args.shift_seed, intensity))
            if control_size == size:
                scores = score_images(scorer, others, control, dataset)
            else:
                scores = score_images(scorer, others, None, dataset)
                scores.update(
                    control_scores(
                        control,
                        Dataset(
                            items, _shift_transform(shift, control_size, args.shift_seed, intensity)
                        ),
                    )
                )
            table[shift] = aucs(scores)
            print(
                f"{split} {shift}: " + ", ".join(f"{k} {v:.3f}" for k, v in table[shift].items()),
                flush=True,
            )
        result["splits"][split] = {"n": len(items), "auc": with_mean(table)}
    return result


def _shift_transform(shift: str, size: int, shift_seed: int, intensity: str):
    """The preprocessing at ``size`` of the images under ``shift`` (a diagnostic: one shift
    per label)."""
    if shift in DIAGNOSTICS:
        return ByLabel(
            *(shifted_transforms(size, s, shift_seed, intensity) for s in DIAGNOSTICS[shift])
        )
    return shifted_transforms(size, None if shift == UNSHIFTED else shift, shift_seed, intensity)


def markdown(result: dict) -> str:
    """One table per split: a row per score, a column per condition, the mean over shifts last."""
    lines = [
        (
            f"Shift test of `{result['model']}` ({result['family']}, {result['image_size']} px, intensity "
            f"{result['intensity']}, data seed {result['seed']}, shift seed {result['shift_seed']}). AUC in %."
        ),
        "",
    ]
    for split, block in result["splits"].items():
        table = block["auc"]
        conditions = list(table)
        lines += [
            f"**{split}** ({block['n']} images)",
            "",
            "| score | " + " | ".join(c.replace("_", " ") for c in conditions) + " |",
            "|---|" + "---:|" * len(conditions),
        ]
        for score in table[UNSHIFTED]:
            lines.append(
                f"| {score} | "
                + " | ".join(f"{100 * table[c][score]:.1f}" for c in conditions)
                + " |"
            )
        lines.append("")
    lines += ["Shifts: " + "; ".join(f"`{k}` {v}" for k, v in result["shifts"].items()) + "."]
    lines += [
        f"Diagnostic `{k}` ({v}): label-dependent, not in the mean over shifts."
        for k, v in result.get("diagnostics", {}).items()
    ]
    return "\n".join(lines) + "\n"


def t_interval(values) -> dict:
    """Mean and the half-width of the 95 % t-interval of the mean (None with one value)."""
    values = np.asarray(values, dtype=float)
    if values.size < 2:
        return {"mean": float(values.mean()), "half_width": None, "n": int(values.size)}
    critical = float(stats.t.ppf(0.975, values.size - 1))
    return {
        "mean": float(values.mean()),
        "half_width": critical * float(values.std(ddof=1)) / np.sqrt(values.size),
        "n": int(values.size),
        "t_critical": critical,
    }


def combine(results: list[dict], against: list[dict] | None = None) -> dict:
    """Per split and score, the mean +- t-interval over ``results`` (one per seed) of the
    unshifted AUC, the mean over shifts, and its difference to each control, seed by seed;
    with ``against`` (the same seeds of another variant, matched by seed), also the difference
    to that variant's same score (``<condition>_minus_against``)."""
    out = {
        "models": [r["model"] for r in results],
        "family": results[0].get("family", results[0].get("method")),
        "splits": {},
    }
    if against is not None:
        by_seed = {r["seed"]: r for r in against}
        if sorted(by_seed) != sorted(r["seed"] for r in results):
            raise SystemExit(
                f"--against needs the same seeds: {sorted(by_seed)} vs {[r['seed'] for r in results]}"
            )
        out["against"] = [by_seed[r["seed"]]["model"] for r in results]
    for split in results[0]["splits"]:
        rows = {}
        present = [
            c
            for c in (UNSHIFTED, MEAN, *DIAGNOSTICS)
            if all(c in r["splits"][split]["auc"] for r in results)
        ]
        for score in results[0]["splits"][split]["auc"][UNSHIFTED]:
            row = {}
            for condition in present:
                per_seed = [r["splits"][split]["auc"][condition] for r in results]
                row[condition] = t_interval([p[score] for p in per_seed])
                for ref in CONTROLS:
                    if ref != score:
                        row[f"{condition}_minus_{ref}"] = t_interval(
                            [p[score] - p[ref] for p in per_seed]
                        )
                if against is not None and condition in against[0]["splits"].get(split, {}).get(
                    "auc", {}
                ):
                    other = [
                        by_seed[r["seed"]]["splits"][split]["auc"][condition][score]
                        for r in results
                    ]
                    row[f"{condition}_minus_against"] = t_interval(
                        [p[score] - o for p, o in zip(per_seed, other)]
                    )
            rows[score] = row
        out["splits"][split] = rows
    return out


def combined_markdown(out: dict) -> str:
    def cell(s: dict) -> str:
        return f"{100 * s['mean']:.1f}" + (
            "" if s["half_width"] is None else f" +- {100 * s['half_width']:.1f}"
        )

    n = len(out["models"])
    conditions = {UNSHIFTED: "unshifted", MEAN: "mean over shifts"}
    refs = [*CONTROLS, *(["against"] if "against" in out else [])]
    head = [
        "score",
        *conditions.values(),
        *(f"{name} minus {c}" for name in conditions.values() for c in refs),
    ]
    diagnostics = [
        d
        for d in DIAGNOSTICS
        if any(d in row for rows in out["splits"].values() for row in rows.values())
    ]
    head += [f"{d} (diagnostic)" for d in diagnostics]
    lines = [
        (
            f"{out['family']}, {n} seed(s): AUC in %, mean +- half-width of the 95 % t-interval over seeds "
            f"(Student's t, {n - 1} degrees of freedom); differences seed by seed"
            + (
                "; 'against': the same score of the same seed's model in "
                + ", ".join(out["against"])
                if "against" in out
                else ""
            )
            + "."
        ),
        "",
    ]
    for split, rows in out["splits"].items():
        lines += [
            f"**{split}**",
            "",
            "| " + " | ".join(head) + " |",
            "|---|" + "---:|" * (len(head) - 1),
        ]
        for score, row in rows.items():
            cells = [cell(row[c]) if c in row else "-" for c in conditions]
            cells += [
                cell(row[f"{c}_minus_{ref}"]) if f"{c}_minus_{ref}" in row else "-"
                for c in conditions
                for ref in refs
            ]
            cells += [cell(row[d]) if d in row else "-" for d in diagnostics]
            lines.append(f"| {score} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.shift", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "--model_dir", help="a trained model folder (model.pt, network.json, preprocessing.json)"
    )
    parser.add_argument("--model", default="model.pt")
    parser.add_argument("--dataset_dir", default=None)
    parser.add_argument("--datalist", default=None)
    parser.add_argument(
        "--seed", type=int, default=0, help="the training run's seed (it drew the splits)"
    )
    parser.add_argument("--per_class", type=int, default=100)
    parser.add_argument(
        "--calibration_images", type=int, default=256, help="as the bundle's calibration_images"
    )
    parser.add_argument("--splits", nargs="+", default=["validation", "report"])
    parser.add_argument(
        "--control_size",
        type=int,
        default=CONTROL_SIZE,
        help="input size of the controls (default: %(default)s px, whatever the model's; 0: the "
        "model's own), so that models of other sizes face the same control",
    )
    parser.add_argument(
        "--shifts",
        nargs="*",
        default=list(SHIFTS),
        choices=list(SHIFTS),
        help="the shifts (default: all; none: only the unshifted images and --diagnostics)",
    )
    parser.add_argument(
        "--shift_seed", type=int, default=0, help="seeds the random shifts (noise, crop)"
    )
    parser.add_argument(
        "--diagnostics",
        nargs="*",
        default=[],
        choices=list(DIAGNOSTICS),
        help="label-dependent diagnostics, reported apart from the mean over shifts",
    )
    parser.add_argument(
        "--out", default=None, help="JSON file (default: <model_dir>/shift.json); .md beside it"
    )
    parser.add_argument(
        "--combine", nargs="+", default=None, help="tabulate these shift JSON files over seeds"
    )
    parser.add_argument(
        "--against",
        nargs="+",
        default=None,
        help="with --combine: shift JSON files of another variant, same seeds, for paired differences",
    )
    return parser


def main(argv: list[str] | None = None) -> dict:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.combine:
        against = [json.loads(Path(f).read_text()) for f in args.against] if args.against else None
        result = combine([json.loads(Path(f).read_text()) for f in args.combine], against)
        text = combined_markdown(result)
        out = Path(args.out or "shift_seeds.json")
    else:
        if not args.model_dir or not (args.dataset_dir or args.datalist):
            parser.error("--model_dir and --dataset_dir (or --datalist) are needed (or --combine)")
        result = run(args)
        text = markdown(result)
        out = Path(args.out) if args.out else Path(args.model_dir) / "shift.json"
    out.write_text(json.dumps(result, indent=2))
    out.with_suffix(".md").write_text(text)
    print(text)
    return result


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
