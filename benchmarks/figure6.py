"""The SQUID paper's Figure 6 for any set of trained models: the same anomalous
DigitAnatomy test inputs, one of each anomaly type plus a blank image, then their normal
counterparts (what a perfect in-painting gives), then one reconstruction row per model.

    python -m benchmarks.figure6 --out docs/figures/figure6.png \\
        --model squid=runs/compare/digitanatomy/squid/seed0/models \\
        --model memae=runs/compare/digitanatomy/memae/seed0/models

Each model folder is rebuilt from its ``network.json`` (any family); the images are resized
to each model's input size. Also writes ``<out>.json``: per model, the fraction of affected
cells in-painted per anomaly type (:func:`squid_monai.metrics.inpainting_rates`) on
``--n_per_type`` images of each type (the figure shows the first of each).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from squid_monai.artifact import Recipe
from squid_monai.data.digitanatomy import GRID, inpainting_set
from squid_monai.loading import image_size, load_scorer
from squid_monai.metrics import inpainting_rates
from squid_monai.transforms.spatial import ResizeRadiograph
from squid_monai.visualize import image_grid


def model_arguments(parser: argparse.ArgumentParser) -> None:
    """``--model NAME=MODEL_DIR`` (repeated) and ``--weights``, for :func:`named_models`."""
    parser.add_argument(
        "--model",
        action="append",
        required=True,
        metavar="NAME=MODEL_DIR",
        help="a row: its title and the trained model folder (repeat, in row order)",
    )
    parser.add_argument("--weights", default="model.pt", help="weights file in each model folder")


def named_models(specs: list[str], weights: str = "model.pt"):
    """Per ``NAME=MODEL_DIR``: the name, the scorer (any family, rebuilt from the folder's
    ``network.json``), the resize to its input size and the folder."""
    for spec in specs:
        name, _, folder = spec.partition("=")
        if not folder:
            raise SystemExit(f"--model needs NAME=MODEL_DIR, got {spec!r}")
        folder = Path(folder)
        yield (
            name,
            load_scorer(folder / weights),
            ResizeRadiograph(image_size(Recipe.load(folder / "network.json"))),
            folder,
        )


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.figure6", description=__doc__.split("\n\n")[0]
    )
    model_arguments(parser)
    parser.add_argument(
        "--n_per_type", type=int, default=16, help="images per anomaly type for the rates"
    )
    parser.add_argument("--split", default="test")
    parser.add_argument("--out", required=True, help="the PNG to write")
    args = parser.parse_args(argv)
    items = inpainting_set(args.n_per_type, seed=0, split=args.split)
    kinds = [it["anomaly"] for it in items]
    first = [kinds.index(k) for k in dict.fromkeys(kinds)]
    image = torch.stack([torch.as_tensor(it["image"]) for it in items])
    normal = torch.stack([torch.as_tensor(it["normal"]) for it in items])
    blank = torch.zeros(1, *image.shape[1:])
    rows, titles, report = (
        [torch.cat([image[first], blank]), torch.cat([normal[first], blank])],
        ["input", "normal"],
        {},
    )
    for name, scorer, resize, _ in named_models(args.model, args.weights):
        shown = torch.stack([resize(x) for x in torch.cat([image, blank])])
        with torch.no_grad():
            recon = scorer(shown)["reconstruction"].float()
        size = image.shape[-1]
        back = ResizeRadiograph(size)
        recon = torch.stack([back(r) for r in recon])
        report[name] = inpainting_rates(
            recon[:-1], normal, image, [it["cells"] for it in items], kinds, grid=GRID
        )
        rows.append(torch.cat([recon[first], recon[-1:]]))
        titles.append(name)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    image_grid(rows, titles, out, max_images=len(first) + 1, value_ranges=[(0, 1)] * len(rows))
    out.with_suffix(".json").write_text(
        json.dumps(
            {"columns": [kinds[i] for i in first] + ["blank"], "inpainted": report}, indent=2
        )
    )
    for name, rates in report.items():
        print(
            f"{name:14s}",
            "  ".join(
                f"{k.split('/')[-1]}={v:.2f}"
                for k, v in rates.items()
                if k.startswith("inpainted/")
            ),
        )
    return report


if __name__ == "__main__":
    main(sys.argv[1:])
