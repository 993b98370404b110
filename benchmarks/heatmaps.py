"""Does the heat map point at the anomaly? The pointing game on DigitAnatomy test inputs,
for each explainer of ``squid_monai.scoring.explain`` (the score's saliency, the default,
and Grad-CAM of the discriminator), for any set of trained models.

    python -m benchmarks.heatmaps --out docs/figures/heatmaps.png \\
        --model seed0=runs/seeds/seed0/models --model seed1=runs/seeds/seed1/models

An anomalous image is a hit when the cell holding the most heat is one of the cells its
anomaly changed (:func:`squid_monai.metrics.pointing_rates`); chance is the changed share of
the nine cells (the ``chance`` rows: that share per type). ``--n_per_type`` images of each
type. Writes ``<out>.json`` (per model and explainer, the hit rate per anomaly type) and
``<out>``: the first input of each type, then per model each explainer's heat maps.

On chest X-rays there is no anomaly mask to point at. With ``--dataset_dir`` (and the
``--seed`` the models were trained with) the report split is scored instead, and per
explainer the mean share of each image's heat that lies in the border band (the outer
``--band`` of the side, where the markers, collimation edges and text sit, the shortcuts a
detector should not use) is given per class, beside a uniform map's share:

    python -m benchmarks.heatmaps --dataset_dir ../shared/data/zhanglab224 --seed 0 \
        --out docs/figures/heatmaps_chest.png --model seed0=runs/chest/models
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

from benchmarks.figure6 import model_arguments, named_models
from squid_monai.baselines import image_stack
from squid_monai.data.digitanatomy import GRID, inpainting_set
from squid_monai.metrics import pointing_rates
from squid_monai.scoring import EXPLAINERS, explainer_for
from squid_monai.transforms.spatial import ResizeRadiograph
from squid_monai.visualize import image_grid
from squid_monai.workflow import choose_data, trained_intensity


def chance(items: list[dict]) -> dict[str, float]:
    """Per anomaly type and ``all``, the hit rate of a cell drawn at random: the affected share."""
    shares: dict[str, list[float]] = {}
    for it in items:
        shares.setdefault(it["anomaly"], []).append(len(it["cells"]) / GRID**2)
    shares["all"] = [v for values in shares.values() for v in values]
    return {f"pointing/{kind}": float(np.mean(values)) for kind, values in shares.items()}


def border_share(maps: torch.Tensor, band: float) -> torch.Tensor:
    """(N,) the share of each heat map's total that lies in the outer ``band`` of the side."""
    width = max(1, int(round(band * maps.shape[-1])))
    total = maps.sum((1, 2)).clamp_min(1e-12)
    return 1 - maps[:, width:-width, width:-width].sum((1, 2)) / total


def explained(scorer, shown: torch.Tensor, batch: int = 50):
    """Per explainer of ``scorer`` (those it has), the heat maps (N, H, W) of ``shown``; the
    scorer runs once per batch for all of them."""
    batches = [(x, scorer(x)) for x in shown.split(batch)]
    for explain in EXPLAINERS:
        explainer = explainer_for(scorer, explain)
        if explainer is not None:
            yield (
                explain,
                torch.from_numpy(np.concatenate([explainer.explain(x, out) for x, out in batches])),
            )


def digitanatomy(args) -> tuple[dict, list, list, list]:
    items = inpainting_set(args.n_per_type, seed=0, split=args.split)
    kinds, cells = [it["anomaly"] for it in items], [it["cells"] for it in items]
    first = [kinds.index(k) for k in dict.fromkeys(kinds)]
    image = image_stack(items)
    report: dict = {"chance": chance(items)}
    rows, titles = [image[first]], ["input"]
    back = ResizeRadiograph(image.shape[-1])
    for name, scorer, resize, _ in named_models(args.model, args.weights):
        shown = torch.stack([resize(x) for x in image])
        report[name] = {}
        for explain, maps in explained(scorer, shown):
            maps = torch.stack([back(m[None])[0] for m in maps])  # on the input's grid of cells
            report[name][explain] = pointing_rates(maps, cells, kinds, grid=GRID)
            rows.append(maps[first][:, None])
            titles.append(f"{name} {explain}")
    return report, rows, titles, [kinds[i] for i in first]


def chest(args) -> tuple[dict, list, list, list]:
    data = choose_data(args.dataset_dir, seed=args.seed)
    report: dict = {"uniform": None}
    rows, titles, shown_first = [], [], None
    for name, scorer, resize, folder in named_models(args.model, args.weights):
        split = data.validation(
            resize.spatial_size[0],
            split="report",
            intensity=trained_intensity(folder, "percentile"),
        )
        items = [split[i] for i in range(len(split))]
        image, label = image_stack(items), torch.tensor([int(item["label"]) for item in items])
        first = torch.cat([torch.where(label == 0)[0][:3], torch.where(label == 1)[0][:3]])
        if shown_first is None:
            shown_first = image[first]
            rows, titles = [shown_first], ["input"]
        report["uniform"] = float(border_share(torch.ones(1, *image.shape[-2:]), args.band)[0])
        report[name] = {}
        for explain, maps in explained(scorer, image):
            share = border_share(maps.float(), args.band)
            report[name][explain] = {
                f"border/{c}": float(share[label == k].mean())
                for k, c in ((0, "normal"), (1, "abnormal"))
            }
            rows.append(maps[first][:, None])
            titles.append(f"{name} {explain}")
    return report, rows, titles, ["normal"] * 3 + ["abnormal"] * 3


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.heatmaps", description=__doc__.split("\n\n")[0]
    )
    model_arguments(parser)
    parser.add_argument(
        "--n_per_type", type=int, default=25, help="DigitAnatomy: images per anomaly type"
    )
    parser.add_argument(
        "--split", default="test", help="DigitAnatomy: the split the images come from"
    )
    parser.add_argument(
        "--dataset_dir", default=None, help="chest X-rays: the data set folder (report split)"
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="chest X-rays: the seed that split the data set"
    )
    parser.add_argument(
        "--band",
        type=float,
        default=1 / 8,
        help="chest X-rays: the border band, a fraction of the side",
    )
    parser.add_argument("--out", required=True, help="the PNG to write (and <out>.json)")
    args = parser.parse_args(argv)
    report, rows, titles, columns = chest(args) if args.dataset_dir else digitanatomy(args)
    path = Path(args.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    image_grid(rows, titles, path, max_images=len(columns), value_ranges=[(0, 1)] * len(rows))
    key = "border" if args.dataset_dir else "pointing"
    path.with_suffix(".json").write_text(
        json.dumps(
            {
                "columns": columns,
                "n_per_type": args.n_per_type,
                "dataset_dir": args.dataset_dir,
                "seed": args.seed,
                key: report,
            },
            indent=2,
        )
    )
    for name, per in report.items():
        if not isinstance(per, dict) or not all(isinstance(v, dict) for v in per.values()):
            print(
                f"{name:10s}",
                per
                if not isinstance(per, dict)
                else "  ".join(f"{k.split('/')[-1]}={v:.2f}" for k, v in per.items()),
            )
            continue
        for explain, rates in per.items():
            print(
                f"{name:10s} {explain:14s}",
                "  ".join(f"{k.split('/')[-1]}={v:.2f}" for k, v in rates.items()),
            )
    return report


if __name__ == "__main__":
    main(sys.argv[1:])
