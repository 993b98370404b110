"""The source documents' anomaly scores on one trained SQUID model, side by side.

For a trained model folder, scores the validation and report splits with

- ``logit``: the discriminator's calibrated logit (the paper's score, the default);
- ``residual``: mean squared reconstruction residual (auto-encoder, MemAE, DAAD's R);
- ``tile_residual``: the worst tile's residual, standardised by that tile's mean and std on
  the normal training (calibration) images (the ``tile_residual`` score source, with the
  model's own exponent and sidedness; ``benchmarks/tile_scores.py`` compares the rules);
- ``feature``: discriminator-feature residual (f-AnoGAN's kappa term, DAAD's L);
- ``feature_two_sided``, ``residual_two_sided``: how far that residual lies from its mean on
  the normal training (calibration) images, in either direction, in their standard
  deviations (on ZhangLab the feature residual of a pneumonia lies *below* the normals');
- ``combined``: the scorer's ``combined`` source (the sum of the standardised logit,
  teacher-student, nearest-normal token and two-sided feature evidence), refitted on the
  calibration images through the scorer's own path;
- ``fused``: DAAD's ``gamma * R + (1 - gamma) * L``, each term standardised by its mean and
  std on normal *training* images (so a score never depends on the other test images),
  with gamma chosen on validation (grid 0, 0.1, ..., 1) and applied unchanged to report;
- ``memory_distance``, ``inpainting_shift``, ``teacher_student``: what inside SQUID an
  anomaly should move (:meth:`SQUIDGenerator.probes`: a tile's distance to its nearest
  memory-queue item, the in-painting's change of the bottleneck, the teacher-student
  reconstruction difference), and ``normal_knn``: the same nearest-item distance to the
  tokens of the normal *training* (calibration) images at the tile's position instead of the
  queue (the ``combined`` scorer's own); beyond the source documents;
- ``sharpness``: the trivial negated-Laplacian-energy baseline on the same images, and
  ``pixel_knn``: the pixel distance to the nearest normal calibration image (no learning),

and prints each AUC with its 95 % bootstrap interval and the paired difference to the
sharpness baseline (``--versus``: to another of the scores instead). Nothing is chosen on
the report split (nor on ``test``, which ``--splits`` can add).

    python -m benchmarks.scores --model_dir runs/x/models --dataset_dir ../shared/data/zhanglab224 --seed 0
    python -m benchmarks.scores --model_dir bundles/squid/models          # DigitAnatomy
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from squid_monai.baselines import image_stack, nearest_normal_pixels, sharpness_score
from squid_monai.engines.evaluator import feature_residual
from squid_monai.loading import load_scorer
from squid_monai.metrics import bootstrap_auc, roc_auc
from squid_monai.scoring import calibrate
from squid_monai.workflow import choose_data, trained_intensity

GAMMAS = [round(0.1 * i, 1) for i in range(11)]
SCORES = (
    "logit",
    "residual",
    "tile_residual",
    "feature",
    "feature_two_sided",
    "residual_two_sided",
    "combined",
    "fused",
    "memory_distance",
    "inpainting_shift",
    "teacher_student",
    "normal_knn",
)
BASELINES = ("sharpness", "pixel_knn")


@torch.no_grad()
def score_set(scorer, dataset, batch_size: int = 32) -> dict[str, np.ndarray]:
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False)
    scorer.generator.eval()  # the probes run the generator directly, not through the scorer
    parts: dict[str, list] = {}
    for batch in loader:
        image = torch.as_tensor(batch["image"]).float()
        out = scorer(image)
        values = {
            "logit": -out[
                "logit"
            ],  # ranks as the calibrated logit score, whatever the model's score source
            "residual": out["residual"],
            "feature": feature_residual(scorer.discriminator, image, out["reconstruction"]),
            "sharpness": sharpness_score(image),
            **scorer.generator.probes(image),
        }
        if "label" in batch:
            values["label"] = torch.as_tensor(batch["label"]).reshape(-1)
        for k, v in values.items():
            parts.setdefault(k, []).append(v.reshape(-1).cpu().numpy())
        parts.setdefault("tiles", []).append(
            out["tile_residual"].cpu().numpy()
        )  # (B, tiles), standardised later
    return {k: np.concatenate(v) for k, v in parts.items()}


@torch.no_grad()
def combined_set(scorer, dataset, batch_size: int = 32) -> dict[str, np.ndarray]:
    """The ``combined`` scorer's own calibrated scores of ``dataset`` and its nearest-normal
    token distances (``normal_knn``)."""
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False)
    outs = [scorer(torch.as_tensor(b["image"]).float()) for b in loader]
    return {
        "combined": torch.cat([o["score"] for o in outs]).numpy(),
        "normal_knn": torch.cat([o["normal_knn"] for o in outs]).numpy(),
    }


def standardised(scores: dict, normal: dict, key: str) -> np.ndarray:
    """``scores[key]`` in standard deviations from its mean on the normal images ``normal``."""
    return (scores[key] - normal[key].mean()) / (normal[key].std() + 1e-12)


def fused(scores: dict, normal: dict, gamma: float) -> np.ndarray:
    return gamma * standardised(scores, normal, "residual") + (1 - gamma) * standardised(
        scores, normal, "feature"
    )


def two_sided(scores: dict, normal: dict, key: str) -> np.ndarray:
    """|z|: an anomaly may lie on either side of the normal images' spread."""
    return np.abs(standardised(scores, normal, key))


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model_dir", required=True)
    parser.add_argument("--model", default="model.pt")
    parser.add_argument("--dataset_dir", default=None)
    parser.add_argument("--datalist", default=None)
    parser.add_argument(
        "--seed", type=int, default=0, help="the training run's seed (it drew the splits)"
    )
    parser.add_argument("--per_class", type=int, default=100)
    parser.add_argument(
        "--splits",
        nargs="+",
        default=["validation", "report"],
        help="labelled splits to score (validation first: gamma is chosen on it)",
    )
    parser.add_argument(
        "--versus",
        default="sharpness",
        choices=(*SCORES, *BASELINES),
        help="the score every paired difference is taken against",
    )
    parser.add_argument(
        "--out", default=None, help="JSON file for the results (default: <model_dir>/scores.json)"
    )
    args = parser.parse_args(argv)
    model_dir = Path(args.model_dir)
    scorer = load_scorer(model_dir / args.model)
    size = scorer.generator.image_size
    intensity = trained_intensity(model_dir, "percentile")
    data = choose_data(
        args.dataset_dir,
        args.datalist,
        seed=args.seed,
        val_per_class=args.per_class,
        report_per_class=args.per_class,
    )
    calibration = data.calibration(size, intensity=intensity)
    normal = score_set(scorer, calibration)
    # refitted (older models lack them); the tile statistics only: a ``combined`` model's other
    # normal statistics need outputs this table does not keep
    scorer.fit_tiles(torch.from_numpy(normal["tiles"]))
    normal_images = image_stack(calibration)
    combined = load_scorer(model_dir / args.model)
    combined.set_score_source("combined")
    calibrate(combined, torch.utils.data.DataLoader(calibration, batch_size=32))
    sets = {}
    if args.splits[0] != "validation":
        parser.error("--splits must start with validation (gamma is chosen on it)")
    for split in args.splits:
        dataset = data.validation(
            size,
            split=split,
            n_normal=args.per_class,
            n_abnormal=args.per_class,
            intensity=intensity,
        )
        sets[split] = score_set(scorer, dataset)
        sets[split].update(combined_set(combined, dataset))
        sets[split]["pixel_knn"] = nearest_normal_pixels(
            image_stack(dataset), normal_images
        ).numpy()
    val = sets["validation"]
    gamma = max(GAMMAS, key=lambda g: roc_auc(val["label"], fused(val, normal, g)))
    results: dict = {
        "gamma": gamma,
        "model": str(model_dir / args.model),
        "versus": args.versus,
        "tile_power": float(scorer.tile_power),
        "tile_two_sided": bool(scorer.tile_two_sided),
    }
    for split, s in sets.items():
        s["fused"] = fused(s, normal, gamma)
        for key in ("feature", "residual"):
            s[f"{key}_two_sided"] = two_sided(s, normal, key)
        s["tile_residual"] = scorer.worst_tile(torch.from_numpy(s["tiles"])).numpy()
        rows = {}
        for name in (*SCORES, *BASELINES):
            rows[name] = {"auc": bootstrap_auc(s["label"], s[name])}
            if name != args.versus:
                rows[name]["minus"] = bootstrap_auc(s["label"], s[name], reference=s[args.versus])
        results[split] = rows
    out = Path(args.out) if args.out else model_dir / "scores.json"
    out.write_text(json.dumps(results, indent=2))
    print(f"gamma chosen on validation: {gamma}")
    for split in args.splits:
        for name, row in results[split].items():
            a, d = row["auc"], row.get("minus")
            diff = (
                f"  minus {args.versus} {100 * d['value']:+.1f} [{100 * d['low']:+.1f}, {100 * d['high']:+.1f}]"
                if d
                else ""
            )
            print(
                f"{split:10s} {name:16s} AUC {100 * a['value']:.1f} [{100 * a['low']:.1f}, {100 * a['high']:.1f}]{diff}"
            )
    return results


if __name__ == "__main__":
    main()
