"""Does the heat map point at the anomaly? The pointing game on DigitAnatomy test inputs,
for each explainer of ``squid_monai.scoring.explain`` (the score's saliency, the default,
and Grad-CAM of the discriminator), for any set of trained models.

    python benchmarks/heatmaps.py --out docs/figures/heatmaps.png \\
        --model seed0=runs/seeds/seed0/models --model seed1=runs/seeds/seed1/models

An anomalous image is a hit when the cell holding the most heat is one of the cells its
anomaly changed (:func:`squid_monai.metrics.pointing_rates`); chance is the changed share of
the nine cells (the ``chance`` rows: that share per type). ``--n_per_type`` images of each
type. Writes ``<out>.json`` (per model and explainer, the hit rate per anomaly type) and
``<out>``: the first input of each type, then per model each explainer's heat maps.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

from squid_monai.data.digitanatomy import GRID, inpainting_set
from squid_monai.metrics import pointing_rates
from squid_monai.scoring import EXPLAINERS, explainer_for
from squid_monai.transforms.spatial import ResizeRadiograph
from squid_monai.visualize import image_grid

sys.path.insert(0, str(Path(__file__).resolve().parent))
from figure6 import model_arguments, named_models  # noqa: E402


def chance(items: list[dict]) -> dict[str, float]:
    """Per anomaly type and ``all``, the hit rate of a cell drawn at random: the affected share."""
    shares: dict[str, list[float]] = {}
    for it in items:
        shares.setdefault(it["anomaly"], []).append(len(it["cells"]) / GRID**2)
    shares["all"] = [v for values in shares.values() for v in values]
    return {f"pointing/{kind}": float(np.mean(values)) for kind, values in shares.items()}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python benchmarks/heatmaps.py", description=__doc__.split("\n\n")[0])
    model_arguments(parser)
    parser.add_argument("--n_per_type", type=int, default=25, help="images per anomaly type")
    parser.add_argument("--split", default="test")
    parser.add_argument("--out", required=True, help="the PNG to write (and <out>.json)")
    args = parser.parse_args(argv)
    items = inpainting_set(args.n_per_type, seed=0, split=args.split)
    kinds, cells = [it["anomaly"] for it in items], [it["cells"] for it in items]
    first = [kinds.index(k) for k in dict.fromkeys(kinds)]
    image = torch.stack([torch.as_tensor(it["image"]) for it in items])
    report: dict = {"chance": chance(items)}
    rows, titles = [image[first]], ["input"]
    back = ResizeRadiograph(image.shape[-1])
    for name, scorer, resize in named_models(args.model, args.weights):
        shown = torch.stack([resize(x) for x in image])
        out = scorer(shown)
        report[name] = {}
        for explain in EXPLAINERS:
            explainer = explainer_for(scorer, explain)
            if explainer is None:
                continue
            maps = torch.from_numpy(explainer.explain(shown, out))
            maps = torch.stack([back(m[None])[0] for m in maps])  # on the input's grid of cells
            report[name][explain] = pointing_rates(maps, cells, kinds, grid=GRID)
            rows.append(maps[first][:, None])
            titles.append(f"{name} {explain}")
    path = Path(args.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    image_grid(rows, titles, path, max_images=len(first), value_ranges=[(0, 1)] * len(rows))
    path.with_suffix(".json").write_text(json.dumps({"columns": [kinds[i] for i in first], "n_per_type": args.n_per_type,
                                                     "pointing": report}, indent=2))
    for name, per in report.items():
        for explain, rates in ({"": per} if name == "chance" else per).items():
            print(f"{name:10s} {explain:14s}", "  ".join(f"{k.split('/')[-1]}={v:.2f}" for k, v in rates.items()))
    return report


if __name__ == "__main__":
    main(sys.argv[1:])
