"""The reference model: a trained model folder packaged for the repository, so that a fresh
clone scores radiographs with no training.

``python -m squid_monai.reference build --model_dir runs/chest/models --dataset_dir
/data/zhanglab --seed 0`` writes ``bundles/squid/reference/chest_xray/`` (:data:`FOLDER`), a
model folder like any other (every consumer loads it: bundle inference with
``configs/reference.json``, which finds it with
:func:`squid_monai.workflow.reference_model`), :func:`squid_monai.loading.load_scorer`, the MLflow model, the
export for the deploy app), plus

* ``reference.json`` (:data:`~squid_monai.artifact.REFERENCE_FILE`): everything the build
  measured; it also marks the folder, so that no training run writes into it
  (:func:`~squid_monai.artifact.refuse_reference_folder`);
* ``README.md``: the model's card, written from ``reference.json`` alone (no number in it
  is typed by hand); ``roc_<split>.png``: the ROC curves of the evaluation.

The build, family-neutral, in order:

1. the weights are stored as trained when they fit the budget (:data:`MAX_BYTES` less
   :data:`RESERVED_BYTES` for the card, figures and records), else compacted: the largest
   floating-point tensors (convolutions, memory items, stored normal tokens) go to half
   precision, largest first, until the rest fits; the small ones (the first layers, biases,
   normalisation statistics, calibration, thresholds), where a rounding error would travel
   through the whole network or straight into the score, stay as trained. Loading casts them
   back to float32, so scoring runs in float32 as before;
2. the compacted scorer is measured against the trained one on the validation split with the
   export parity contract (:mod:`squid_monai.scoring.parity`: half-precision storage is a
   quantisation, so AUC within ``AUC_MARGIN``, Spearman at least ``MIN_SPEARMAN``, batch
   independence); a miss fails the build, and so does a folder still over the limit;
3. the compacted model is evaluated by the bundle's own evaluation (``evaluate.json``:
   AUC with its interval, the sharpness, pixel nearest-neighbour and control-ensemble
   baselines beside it) on the validation and report splits;
4. the folder is written beside its final place and swapped in whole.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from . import artifact, loading
from .evaluation import detector_gain, detector_section
from .workflow import REFERENCE_DIR as FOLDER
from .workflow import bundle_root as find_bundle_root
from .workflow import choose_data

__all__ = [
    "FOLDER",
    "RESERVED_BYTES",
    "MAX_BYTES",
    "build",
    "compact_state",
    "data_description",
    "main",
    "model_card",
    "run_bundle",
]

logger = logging.getLogger(__name__)

#: largest folder the repository takes (15 MB)
MAX_BYTES = 15_000_000
#: room the card, the ROC figures and the JSON records take beside the weights
RESERVED_BYTES = 500_000
#: files of the trained model folder the reference keeps beside the weights (JSON records)
RECORDS = (
    artifact.RECIPE_FILE,
    artifact.PREPROCESSING_FILE,
    artifact.TRAINING_FILE,
    "training_summary.json",
)
#: the splits the card reports by default (validation chose the epoch and the threshold; report
#: chooses nothing); ``test`` (the data's official test split, when it has one) may be added
SPLITS = ("validation", "report")

#: credit of a known data set, by the ``source`` its datalist items carry (squid_monai.data.datalist)
DATA_CREDITS = {
    "zhanglab": (
        'ZhangLab chest X-ray (Kermany, Zhang, Goldbaum et al., "Identifying Medical Diagnoses and '
        'Treatable Diseases by Image-Based Deep Learning", Cell 172(5):1122-1131, 2018; data: '
        "Mendeley Data, doi:10.17632/rscbjbr9sj.2, licence CC BY 4.0)"
    ),
    "digitanatomy": (
        "DigitAnatomy (synthetic, generated on the fly from scikit-learn's handwritten digits)"
    ),
}
#: what a model of a known data set knows, for the card's domain section (the guard's
#: machine-readable domain record, when the model folder has one, travels with the records)
DATA_DOMAINS = {
    "zhanglab": (
        "paediatric chest radiographs (children aged one to five, one hospital), frontal "
        "(anterior-posterior) views; normal training images only, pneumonia (bacterial and viral) "
        "as the abnormal class of validation and report"
    ),
    "digitanatomy": "synthetic images of handwritten digits in a fixed anatomy-like layout",
}


def compact_state(state: Mapping[str, Any], max_bytes: int) -> tuple[dict[str, Any], dict]:
    """``(state, storage)``: ``state`` with its largest floating-point tensors in half
    precision, largest first, until its file (``torch.save``) takes at most ``max_bytes``
    (none when it fits already; a tensor half precision cannot hold, with a value beyond its
    range, is skipped). ``storage`` says what was done: ``dtype`` (``"float32"``, or
    ``"float16+float32"``), ``half_tensors`` and ``half_elements``, ``float_elements``."""
    state = dict(state)
    total = sum(_bytes(v) for v in state.values())
    buffer = io.BytesIO()
    torch.save(state, buffer)
    budget = max_bytes - (buffer.getbuffer().nbytes - total)  # the file's own bytes besides tensors
    floats = [k for k, v in state.items() if torch.is_tensor(v) and v.is_floating_point()]
    halved = []
    for key in sorted(floats, key=lambda k: -state[k].numel()):
        if total <= budget:
            break
        half = state[key].detach().cpu().half()
        if state[key].dtype == torch.float16 or not bool(torch.isfinite(half).all()):
            continue
        total -= _bytes(state[key]) - _bytes(half)
        state[key] = half
        halved.append(key)
    if total > budget:
        raise RuntimeError(
            f"the weights file would take {total + max_bytes - budget} bytes even in half precision, "
            f"over {max_bytes}"
        )
    storage = {
        "dtype": "float16+float32" if halved else "float32",
        "half_tensors": len(halved),
        "half_elements": sum(state[k].numel() for k in halved),
        "float_elements": sum(state[k].numel() for k in floats),
    }
    return state, storage


def _bytes(value: Any) -> int:
    return value.numel() * value.element_size() if torch.is_tensor(value) else 0


def data_description(source) -> dict[str, Any]:
    """What the card says about the training data of ``source`` (a
    :class:`~squid_monai.workflow.DataSource`): the data set by the ``source`` of its items,
    its credit, the split sizes, and the stored sizes of a sample of training images (the
    resizing the files went through before the model's own)."""
    if source.splits is None:
        return {"name": source.name, "credit": DATA_CREDITS.get(source.name, source.name)}
    training = source.splits["training"]
    names = sorted({str(it.get("source", "")) for it in training} - {""})
    name = names[0] if len(names) == 1 else "+".join(names) or "images"
    sizes: dict[str, int] = {}
    for item in training[:: max(1, len(training) // 50)][:50]:
        size = _stored_size(item["image"])
        sizes[size] = sizes.get(size, 0) + 1
    return {
        "name": name,
        "credit": DATA_CREDITS.get(
            name, f"images of {source.origin} (give their source and licence)"
        ),
        "origin": source.origin,
        "split_sizes": {
            split: len(items) for split, items in source.splits.items() if isinstance(items, list)
        },
        "stored_sizes_of_sampled_training_images": sizes,
    }


def _stored_size(path: str) -> str:
    """``"W x H"`` of an image file as stored (its header only), or why it was not read."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            return f"{image.width} x {image.height}"
    except (OSError, ValueError):
        return "not read by PIL (DICOM or other)"


def _commit(repository: Path) -> str:
    """The checkout's commit, ``+dirty`` when tracked files differ from it; "unknown" outside git."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=repository, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=repository,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("+dirty" if dirty else "")


def portable(text: str, repository: Path) -> str:
    """``text`` with every absolute path in it made fit for the card: inside ``repository``
    relative to it, elsewhere ``/path/to/`` and its last two parts (the machine that built the
    model is nobody else's)."""

    def one(match: re.Match) -> str:
        path = Path(match.group(0))
        try:
            return path.resolve().relative_to(repository.resolve()).as_posix()
        except ValueError:
            return "/path/to/" + "/".join(path.parts[-2:])

    return re.sub(r"(?<![\w.])/[^\s'\",\]]+", one, text)


def _training_command(family: str, configs: Path, data_args: Sequence[str]) -> str:
    """The documented chest recipe's command for ``family`` (its config where the family has one)."""
    files = [
        configs / "train.json",
        configs / "methods" / f"{family}.json",
        configs / "chest_cpu.json",
    ]
    listed = ",".join(
        f"'{f.relative_to(configs.parents[2]).as_posix()}'" for f in files if f.is_file()
    )
    return f'python -m monai.bundle run training --config_file "[{listed}]" {shlex.join(data_args)}'


def run_bundle(
    bundle_root: str | os.PathLike, configs: Sequence[str], run_id: str, **overrides: Any
) -> None:
    """``python -m monai.bundle run <run_id> --config_file <configs>`` with ``overrides``, in
    this process: ``configs`` are file names in ``<bundle_root>/configs``, merged in order."""
    from monai.bundle import ConfigWorkflow

    folder = Path(bundle_root) / "configs"
    workflow = ConfigWorkflow(
        config_file=[str(folder / name) for name in configs],
        meta_file=str(folder / "metadata.json"),
        logging_file=False,
        run_id=run_id,
        workflow_type=None,
        bundle_root=str(bundle_root),
        **overrides,
    )
    workflow.initialize()
    workflow.run()
    workflow.finalize()


def _evaluate(
    bundle_root: Path, model_dir: Path, split: str, work: Path, overrides: Mapping[str, Any]
) -> dict:
    """The bundle's evaluation (``train.json`` + ``evaluate.json``) of ``model_dir`` on ``split``,
    with its outputs in ``work``: its ``metrics.json`` and ROC file."""
    run_bundle(
        bundle_root,
        ["train.json", "evaluate.json"],
        "evaluating",
        output_dir=str(work),
        ckpt_dir=str(model_dir),
        eval_dir=str(work / "eval"),
        eval_split=split,
        mlflow_tracking=False,
        **overrides,
    )
    out = work / "eval" / split
    return {"metrics": json.loads((out / "metrics.json").read_text()), "roc": out / "roc.png"}


def _split_summary(metrics: Mapping[str, Any]) -> dict[str, Any]:
    """The card's numbers of one evaluated split (from the evaluation's ``metrics.json``)."""
    model = detector_section(metrics)
    summary = {
        "n_normal": metrics["n_normal"],
        "n_abnormal": metrics["n_abnormal"],
        "auc": model["auc"],
        "auc_95ci": model["auc_95ci"],
        "at_validation_threshold": {
            k: model["at_validation_threshold"].get(k)
            for k in ("accuracy", "sensitivity", "specificity", "f1")
        },
    }
    for name in ("sharpness", "pixel_knn", "control"):
        if f"baseline_{name}" in metrics:
            summary[f"baseline_{name}"] = {
                "auc": metrics[f"baseline_{name}"]["auc"],
                "auc_95ci": metrics[f"baseline_{name}"]["auc_95ci"],
            }
    gain = detector_gain(metrics, "control")
    if gain is not None:
        summary["minus_control"] = {k: gain[k] for k in ("value", "low", "high")}
    return summary


def build(
    model_dir: str | os.PathLike,
    output: str | os.PathLike | None = None,
    dataset_dir: str | None = None,
    datalist: str | None = None,
    seed: int = 0,
    val_per_class: int = 100,
    report_per_class: int = 100,
    calibration_images: int = 256,
    max_bytes: int = MAX_BYTES,
    bundle_root: str | os.PathLike | None = None,
    train_command: str | None = None,
    argv: Sequence[str] | None = None,
    splits: Sequence[str] = SPLITS,
) -> dict[str, Any]:
    """Package the trained model folder ``model_dir`` as the reference model ``output``
    (default ``<bundle_root>/reference/chest_xray``); ``dataset_dir`` / ``datalist`` /
    ``seed`` / ``val_per_class`` / ``report_per_class`` name the training run's data as for
    training. Returns the ``reference.json`` record. See the module docstring."""
    from .export import split_images
    from .scoring.parity import measure_parity

    model_dir = Path(model_dir).resolve()
    bundle_root = Path(bundle_root or find_bundle_root()).resolve()
    output = Path(output).resolve() if output else bundle_root / FOLDER
    if output == model_dir or model_dir in output.parents or output in model_dir.parents:
        raise ValueError(
            f"{output}: the reference folder must lie outside the trained model folder {model_dir}"
        )
    for name in (artifact.WEIGHTS_FILE, artifact.RECIPE_FILE):
        if not (model_dir / name).is_file():
            raise FileNotFoundError(
                f"{model_dir / name}: missing; a trained model folder holds {artifact.WEIGHTS_FILE} and {artifact.RECIPE_FILE}"
            )
    recipe = artifact.Recipe.load(model_dir)
    size, intensity = loading.image_size(recipe), artifact.trained_intensity(model_dir)
    source = choose_data(dataset_dir, datalist, seed, val_per_class, report_per_class)
    trained = loading.load_scorer(model_dir / artifact.WEIGHTS_FILE)

    output.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{output.name}.", dir=output.parent) as tmp:
        stage, work = Path(tmp) / output.name, Path(tmp) / "work"
        stage.mkdir()
        for name in RECORDS:
            if (model_dir / name).is_file():
                shutil.copy2(model_dir / name, stage / name)
        state, storage = compact_state(trained.state_dict(), max_bytes - RESERVED_BYTES)
        torch.save(state, stage / artifact.WEIGHTS_FILE)
        compact = loading.load_scorer(stage / artifact.WEIGHTS_FILE)
        images, labels = split_images(source, "validation", size, intensity, val_per_class)
        parity = measure_parity(
            trained, compact, images, labels, quantised=storage["dtype"] != "float32"
        )
        if not parity["default"]:
            raise RuntimeError(
                f"{model_dir}: the {storage['dtype']} copy of the weights misses the parity contract on the "
                f"validation split ({parity}); the reference model would not score as trained"
            )
        overrides = {
            "dataset_dir": dataset_dir,
            "datalist": datalist,
            "seed": seed,
            "val_per_class": val_per_class,
            "report_per_class": report_per_class,
            "calibration_images": calibration_images,
            "progress": "auto",
        }
        evaluated = {
            split: _evaluate(bundle_root, stage, split, work, overrides) for split in splits
        }
        for split, result in evaluated.items():
            shutil.copy2(result["roc"], stage / f"roc_{split}.png")
        family, recipe_name, settings = (
            artifact.load_training_settings(model_dir)
            if (model_dir / artifact.TRAINING_FILE).is_file()
            else (recipe.family, "", {})
        )
        data_args = (
            ["--dataset_dir", str(dataset_dir)]
            if dataset_dir
            else (["--datalist", str(datalist)] if datalist else [])
        )
        record = {
            "family": recipe.family,
            "preset": recipe.preset,
            "image_size": size,
            "intensity": intensity,
            "domain": recipe.domain,
            "training_recipe": {"name": recipe_name, "settings": settings},
            "training_summary": _read_json(model_dir / "training_summary.json"),
            "training_command": train_command
            or _training_command(
                recipe.family, bundle_root / "configs", [*data_args, "--seed", str(seed)]
            ),
            "build_command": shlex.join(["python", "-m", "squid_monai.reference", *(argv or ())]),
            "commit": _commit(bundle_root),
            "built": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "source_model": str(model_dir),
            "data": {**data_description(source), "seed": seed},
            "storage": {
                **storage,
                "weights_bytes": (stage / artifact.WEIGHTS_FILE).stat().st_size,
                "trained_weights_bytes": (model_dir / artifact.WEIGHTS_FILE).stat().st_size,
                "max_bytes": max_bytes,
                "parity_on_validation": parity,
            },
            "calibration": {
                k: float(getattr(compact, k))
                for k in ("mean", "std", "threshold", "normal_threshold")
            },
            "splits": {split: _split_summary(r["metrics"]) for split, r in evaluated.items()},
        }
        repository = bundle_root.parents[1]
        for key in ("training_command", "build_command", "source_model"):
            record[key] = portable(record[key], repository)
        record["data"]["origin"] = portable(str(record["data"].get("origin", "")), repository)
        (stage / "README.md").write_text(model_card(record))
        artifact.write_json(
            stage / artifact.REFERENCE_FILE, record
        )  # last: from here on the folder is a reference
        total = sum(f.stat().st_size for f in stage.iterdir())
        if total > max_bytes:
            raise RuntimeError(
                f"{output}: the reference folder would take {total} bytes, over the limit of {max_bytes}"
            )
        _swap_in(stage, output, Path(tmp))
    logger.info("reference model written to %s", output)
    return record


def _read_json(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


def _swap_in(stage: Path, output: Path, tmp: Path) -> None:
    """Replace ``output`` by ``stage`` (both in the same folder tree, so renames): the old
    reference is moved aside first and removed with the temporary folder."""
    if output.exists():
        os.replace(output, tmp / "previous")
    os.replace(stage, output)


#: the command that scores radiographs with the reference model (README, set-up command 1)
SCORE_COMMAND = (
    "python -m monai.bundle run inference --config_file \"['bundles/squid/configs/train.json',"
    "'bundles/squid/configs/inference.json','bundles/squid/configs/reference.json']\" "
    "--input /path/to/dicoms"
)


def _auc(entry: Mapping[str, Any] | None) -> str:
    if not entry:
        return "-"
    low, high = entry["auc_95ci"]
    return f"{entry['auc']:.3f} ({low:.3f}-{high:.3f})"


def _results(record: Mapping[str, Any]) -> list[str]:
    family = record["family"]
    lines = [
        f"| split | normal / abnormal | {family} AUC (95 % CI) | sharpness | pixel nearest neighbour "
        f"| control ensemble | {family} - control (95 % CI) |",
        "|---|---|---|---|---|---|---|",
    ]
    for split, s in record["splits"].items():
        gain = s.get("minus_control")
        gain = f"{gain['value']:+.3f} ({gain['low']:+.3f} to {gain['high']:+.3f})" if gain else "-"
        lines.append(
            f"| {split} | {s['n_normal']} / {s['n_abnormal']} | {_auc(s)} | "
            f"{_auc(s.get('baseline_sharpness'))} | {_auc(s.get('baseline_pixel_knn'))} | "
            f"{_auc(s.get('baseline_control'))} | {gain} |"
        )
    return lines


def _at_threshold(record: Mapping[str, Any]) -> str:
    parts = []
    for split, s in record["splits"].items():
        t = s["at_validation_threshold"]
        values = ", ".join(
            f"{k} {t[k]:.3f}"
            for k in ("accuracy", "sensitivity", "specificity")
            if t.get(k) is not None
        )
        parts.append(f"{split}: {values}")
    return "; ".join(parts)


def _domain_lines(record: Mapping[str, Any]) -> list[str]:
    """The card's domain section, for people; the machine-readable record the domain guard
    reads is ``network.json``'s ``domain`` with the guard's buffers in ``model.pt``."""
    data, size = record["data"], record["image_size"]
    sizes = data.get("stored_sizes_of_sampled_training_images") or {}
    stored = ", ".join(f"{k} ({n} of {sum(sizes.values())})" for k, n in sizes.items())
    lines = [
        f"- **What it was trained on**: {DATA_DOMAINS.get(data['name'], data['credit'])}.",
        f"- **Input**: one grey channel, resized whole to {size} x {size} px without keeping the aspect "
        f"ratio (antialiased bilinear), intensity rule `{record['intensity']}`; DICOM MONOCHROME1 is "
        "inverted so that bone is bright.",
    ]
    if stored:
        lines.append(
            f"- **The training files as stored** (sampled): {stored}. Where this is one square size "
            "for images of many shapes, the files were resized by a third party without keeping the "
            "aspect ratio (the ZhangLab copy at 224 x 224 is such a squashed resizing); the model "
            "knows anatomy squashed that way."
        )
    lines.append(
        "- **Outside it** (adult or lateral radiographs, other modalities, other resizings, "
        "non-radiographs) the score means nothing it was measured to mean: read such scores as "
        "unvalidated."
    )
    guard = (record.get("domain") or {}).get("guard")
    lines.append(
        f"- **The domain guard**: {guard}. An input beyond the limit, or a saturated score, is "
        "flagged `out_of_domain` with a warning in every output (record, CSV, summary, served "
        "response, deploy report). It sees the layout of a picture, not age or population: adult "
        "frontal radiographs pass it."
        if guard
        else "- **The domain guard**: not recorded for this model (packaged from a folder trained "
        "before the guard; `squid_monai.workflow.add_domain_guard` fits it without retraining)."
    )
    return lines


def model_card(record: Mapping[str, Any]) -> str:
    """The reference model's ``README.md``, from its ``reference.json`` record alone."""
    family, summary = record["family"], record.get("training_summary") or {}
    storage, parity = record["storage"], record["storage"]["parity_on_validation"]
    trained = (
        f"{summary.get('epochs')} epochs, best validation epoch {summary.get('best_epoch')} "
        f"(selection metric {summary.get('selection_metric')} {summary.get('best_selection_value', float('nan')):.4f}), "
        f"{summary.get('train_time_s')} s"
        if summary
        else "training summary not recorded"
    )
    if storage["dtype"] == "float32":
        stored = "stored as trained (float32): scores are the trained model's exactly"
    else:
        stored = (
            f"its {storage['half_tensors']} largest tensors ({storage['half_elements']} of "
            f"{storage['float_elements']} values) stored in half precision to fit the repository, "
            "the rest as trained, all loaded back to float32 for scoring; against the trained weights "
            f"on the {parity['images']} validation "
            f"images: largest score difference {parity['max_abs_score_diff']:.2g}, Spearman "
            f"{parity['spearman']:.6f}, AUC {parity.get('auc', float('nan')):.4f} against "
            f"{parity.get('auc_reference', float('nan')):.4f}, batch independence "
            f"{parity['batch_max_abs_score_diff']:.2g} (the export parity contract for quantised "
            "weights: met, or the build fails)"
        )
    splits = ", ".join(f"{k} {v}" for k, v in (record["data"].get("split_sizes") or {}).items())
    lines = [
        f"# Reference chest X-ray model: {family} ({record['preset']} preset, {record['image_size']} px)",
        "",
        "Written by `python -m squid_monai.reference build` from what it measured (`reference.json`);",
        "rebuild rather than edit. No training run writes into this folder.",
        "",
        "Score radiographs with it right after install (from the repository root):",
        "",
        "```bash",
        SCORE_COMMAND,
        "```",
        "",
        "## Data",
        "",
        f"Trained on normal images of {record['data']['credit']}; split seed {record['data']['seed']}"
        + (f" (images per split: {splits})" if splits else "")
        + ". The validation and report splits hold normal and abnormal images carved from the "
        "training folder, never trained on.",
        "",
        "## artifact.Recipe",
        "",
        f"- family `{family}`, preset `{record['preset']}`, input {record['image_size']} x "
        f"{record['image_size']} px, intensity rule `{record['intensity']}`",
        f"- training recipe `{record['training_recipe']['name']}`: "
        f"`{json.dumps(record['training_recipe']['settings'], sort_keys=True)}`",
        f"- trained: {trained}",
        f"- command: `{record['training_command']}`",
        f"- commit: `{record['commit']}`; packaged {record['built']} by `{record['build_command']}`",
        f"- weights: {storage['weights_bytes']} bytes (trained file {storage['trained_weights_bytes']}), {stored}",
        f"- calibration: mean {record['calibration']['mean']:.6g}, std {record['calibration']['std']:.6g}; "
        f"decision threshold {record['calibration']['threshold']:.6g} (chosen on validation), "
        f"normal-only threshold {record['calibration']['normal_threshold']:.6g}",
        "",
        "## Results",
        "",
        "The bundle's evaluation of this folder's weights (`evaluate.json`), with the scores that",
        "need no learning beside it (sharpness: the smoothness shortcut of this data; pixel nearest",
        "neighbour: distance to the nearest normal calibration image; control ensemble: the two,",
        "standardised and summed). Validation chose the epoch and the threshold, so its figure is",
        "optimistic; the report split chose nothing (nor did `test`, the data's official test split,",
        "where it is listed).",
        "",
        *_results(record),
        "",
        f"At the validation threshold: {_at_threshold(record)}.",
        "",
        *[f"![ROC, {split} split](roc_{split}.png)" for split in record["splits"]],
        "",
        "## Domain",
        "",
        *_domain_lines(record),
        "",
        "## The same model everywhere",
        "",
        "- bundle inference: the command above (`--input` any folder, file list or image; PNG, JPEG, "
        "DICOM incl. JPEG and JPEG 2000 through the pylibjpeg plugins of the base install);",
        "- Python: `squid_monai.loading.load_scorer('bundles/squid/reference/chest_xray/model.pt')`;",
        "- MLflow: `squid_monai.mlflow_model.save_pyfunc(path, 'bundles/squid/reference/chest_xray')`;",
        "- deploy app: export once, outside this folder, then run the app: `python -m "
        "squid_monai.export --model_dir bundles/squid/reference/chest_xray --filepath "
        "runs/reference/model.ts`, then `python -m pipelines.squid_app -i <dicom folder> -o <out> -m "
        "runs/reference/model.ts`.",
        "",
        "## Licence",
        "",
        "Code and weights: Apache-2.0. Data: credited above; its licence terms are in",
        "`bundles/squid/docs/data_license.txt`. Research and triage support only, not a diagnostic device.",
        "",
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(
        prog="python -m squid_monai.reference", description=__doc__.split("\n\n")[0]
    )
    commands = parser.add_subparsers(dest="command", required=True)
    b = commands.add_parser("build", help="package a trained model folder as the reference model")
    b.add_argument(
        "--model_dir", required=True, help="trained model folder (model.pt, network.json, ...)"
    )
    b.add_argument(
        "--output", default=None, help=f"reference folder (default: <bundle>/{FOLDER.as_posix()})"
    )
    b.add_argument(
        "--dataset_dir",
        default=None,
        help="the training data, as for training (default: DigitAnatomy)",
    )
    b.add_argument("--datalist", default=None, help="MONAI datalist JSON instead of --dataset_dir")
    b.add_argument("--seed", type=int, default=0, help="the training run's seed (its data split)")
    b.add_argument("--val_per_class", type=int, default=100, help="as for training")
    b.add_argument("--report_per_class", type=int, default=100, help="as for training")
    b.add_argument(
        "--calibration_images",
        type=int,
        default=256,
        help="as for training (the control ensemble's normals)",
    )
    b.add_argument(
        "--max_bytes", type=int, default=MAX_BYTES, help="largest reference folder (default 15 MB)"
    )
    b.add_argument(
        "--bundle_root", default=None, help="bundle folder (default: found from the current folder)"
    )
    b.add_argument(
        "--train_command",
        default=None,
        help="the command that trained the model (default: the chest recipe's for its family)",
    )
    b.add_argument(
        "--splits",
        nargs="+",
        default=list(SPLITS),
        choices=["validation", "report", "test"],
        help="splits evaluated for the card (default: validation report; add test for the official one)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    record = build(
        args.model_dir,
        args.output,
        args.dataset_dir,
        args.datalist,
        args.seed,
        args.val_per_class,
        args.report_per_class,
        args.calibration_images,
        args.max_bytes,
        args.bundle_root,
        args.train_command,
        argv,
        args.splits,
    )
    for split, s in record["splits"].items():
        print(
            f"{record['family']} {split}: AUC {s['auc']:.4f} (control ensemble {s.get('baseline_control', {}).get('auc', float('nan')):.4f})"
        )
    print(
        f"reference model: {record['storage']['weights_bytes']} bytes of weights ({record['storage']['dtype']})"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
