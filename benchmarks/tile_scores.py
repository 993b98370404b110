"""The tile score's definitions side by side on one trained SQUID model.

The ``tile_residual`` score source has two settings (``squid_monai.methods.squid.scorer.SQUIDScorer``):
the exponent of the residual (``tile_power``: 2 = mean squared) and the sidedness
(``tile_two_sided``: the largest standardised residual, or the largest absolute
standardised log residual). This scores the validation, report and test splits with every
combination of ``--powers`` and both sidednesses, the statistics fitted on the normal
calibration images as training does, and prints each AUC, its AUC per anomaly type, and the
paired bootstrap difference to the reference (``--reference``, default ``2:one``: the
squared one-sided rule). Reconstructions are computed once; only the score changes.

    python -m benchmarks.tile_scores --model_dir /tmp/exp/da/seed0/models --seed 0
"""

from __future__ import annotations

import argparse
import copy
import json
from pathlib import Path

import numpy as np
import torch

from squid_monai.loading import load_scorer
from squid_monai.methods.squid.scorer import tile_residuals
from squid_monai.metrics import auc_by_anomaly, bootstrap_auc
from squid_monai.workflow import choose_data

SIDES = {"one": False, "two": True}


@torch.no_grad()
def residual_maps(scorer, dataset, batch_size: int = 50) -> dict:
    """Absolute residual images (N, 1, H, W), labels and anomaly types of a data set."""
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False)
    maps, labels, kinds = [], [], []
    for batch in loader:
        image = torch.as_tensor(batch["image"]).float()
        maps.append((image - scorer(image)["reconstruction"]).abs())
        labels.append(torch.as_tensor(batch.get("label", torch.zeros(len(image)))).reshape(-1))
        kinds += list(batch.get("anomaly", [""] * len(image)))
    return {
        "maps": torch.cat(maps),
        "label": torch.cat(labels).numpy().astype(int),
        "anomaly": np.array(kinds),
    }


def rule_scores(
    rule, normal_maps: torch.Tensor, maps: torch.Tensor, power: float, two_sided: bool
) -> np.ndarray:
    """The tile score of ``maps`` under one rule (higher = more anomalous), the statistics
    fitted on ``normal_maps`` by the scorer's own :meth:`fit_normals`; ``rule`` is a scorer
    whose tile settings and statistics this overwrites."""
    rule.tile_power.fill_(power)
    rule.tile_two_sided.fill_(two_sided)
    tile = rule.generator.image_size // rule.generator.grid
    zeros = torch.zeros_like(normal_maps)
    rule.fit_normals({"tile_residual": tile_residuals(normal_maps, zeros, tile, rule.tile_power)})
    return rule.worst_tile(
        tile_residuals(maps, torch.zeros_like(maps), tile, rule.tile_power)
    ).numpy()


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model_dir", required=True)
    parser.add_argument("--model", default="model.pt")
    parser.add_argument("--dataset_dir", default=None)
    parser.add_argument(
        "--seed", type=int, default=0, help="the training run's seed (it drew the splits)"
    )
    parser.add_argument("--per_class", type=int, default=100)
    parser.add_argument("--splits", nargs="+", default=["validation", "report", "test"])
    parser.add_argument("--powers", nargs="+", type=float, default=[2.0, 3.0, 4.0])
    parser.add_argument(
        "--reference", default="2:one", help="POWER:one|two, the rule differences are taken against"
    )
    parser.add_argument(
        "--out", default=None, help="JSON file (default: <model_dir>/tile_scores.json)"
    )
    args = parser.parse_args(argv)
    model_dir = Path(args.model_dir)
    scorer = load_scorer(model_dir / args.model)
    size = scorer.generator.image_size
    data = choose_data(
        args.dataset_dir,
        None,
        seed=args.seed,
        val_per_class=args.per_class,
        report_per_class=args.per_class,
    )
    normal = residual_maps(scorer, data.calibration(size))["maps"]
    rules = [f"{p:g}:{side}" for p in args.powers for side in SIDES]
    if args.reference not in rules:
        parser.error(f"--reference {args.reference!r} is not among the rules {rules}")
    results: dict = {"model": str(model_dir / args.model), "reference": args.reference}
    rule = copy.deepcopy(scorer)  # the model's own tile settings stay untouched
    for split in args.splits:
        sets = residual_maps(
            scorer,
            data.validation(size, split=split, n_normal=args.per_class, n_abnormal=args.per_class),
        )
        labels, kinds = sets["label"], sets["anomaly"]
        scores = {
            r: rule_scores(
                rule, normal, sets["maps"], float(r.split(":")[0]), SIDES[r.split(":")[1]]
            )
            for r in rules
        }
        rows = {}
        for name, s in scores.items():
            row = {"auc": bootstrap_auc(labels, s), "by_anomaly": auc_by_anomaly(labels, s, kinds)}
            if name != args.reference:
                row["minus"] = bootstrap_auc(labels, s, reference=scores[args.reference])
            rows[name] = row
        results[split] = rows
    out = Path(args.out) if args.out else model_dir / "tile_scores.json"
    out.write_text(json.dumps(results, indent=2))
    for split in args.splits:
        for name, row in results[split].items():
            a, d = row["auc"], row.get("minus")
            diff = (
                f"  minus {args.reference} {100 * d['value']:+.1f} [{100 * d['low']:+.1f}, {100 * d['high']:+.1f}]"
                if d
                else ""
            )
            types = " ".join(f"{t} {100 * v:.0f}" for t, v in row["by_anomaly"].items())
            print(
                f"{split:10s} {name:6s} AUC {100 * a['value']:.1f} [{100 * a['low']:.1f}, {100 * a['high']:.1f}]{diff}  ({types})"
            )
    return results


if __name__ == "__main__":
    main()
