"""Where does an anomaly reach SQUID's student reconstruction? (DigitAnatomy)

Loads a trained model folder (``model.pt`` + ``network.json``), reconstructs anomalous
DigitAnatomy images of every type whose normal counterpart is known
(:func:`squid_monai.data.digitanatomy.inpainting_set`), and reports the in-painting rate
(:func:`squid_monai.metrics.inpainting_rates`) for the model as trained and under
interventions that swap one path of the generator for the normal counterpart's:

- ``as trained``: the student reconstruction of the anomalous image;
- ``normal skips``: anomalous bottleneck (in-painted), normal image's encoder skips;
- ``normal bottleneck``: normal image's in-painted bottleneck, anomalous skips;
- ``no skips``: the skips replaced by those of an all-zero image.

If ``normal skips`` in-paints and ``as trained`` does not, the anomaly travels through the
skips (and their decoder memory), not through the memory-queue bottleneck. It also reports
how many queue items a tile's read actually uses (weights above 1 %), and writes a figure
like the paper's Figure 6 (inputs of each type and a blank image, with reconstructions).

    python -m benchmarks.inpainting --model_dir bundles/squid/models --out /tmp/inpainting
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from squid_monai.data.digitanatomy import inpainting_set
from squid_monai.handlers.inpainting import figure6
from squid_monai.loading import load_scorer
from squid_monai.metrics import inpainting_rates
from squid_monai.nn.blocks import tile


@torch.no_grad()
def _student(gen, bottleneck_from: torch.Tensor, skips_from: torch.Tensor) -> torch.Tensor:
    bottleneck, _ = gen.encoder(tile(bottleneck_from, gen.grid))
    if gen.inpainting is not None:
        bottleneck, _ = gen.inpainting(bottleneck)
    _, skips = gen.encoder(tile(skips_from, gen.grid))
    return gen.student(bottleneck, skips)[0]


@torch.no_grad()
def queue_usage(gen, images: torch.Tensor, threshold: float = 0.01) -> dict:
    """Mean number of queue items with read weight above ``threshold`` per tile, and how
    often the anomalous and normal images' tiles read the same top item."""
    block = gen.inpainting
    bottleneck, _ = gen.encoder(tile(images, gen.grid))
    z = block.project_in(bottleneck)
    weights = block.memory.weights(z.reshape(-1, gen.grid**2, z[0].numel()))
    return {
        "items_used_per_tile": float((weights > threshold).float().sum(-1).mean()),
        "top_weight": float(weights.max(-1).values.mean()),
        "top_item": weights.argmax(-1),
    }


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model_dir", required=True)
    parser.add_argument("--model", default="model.pt", help="weights file in model_dir")
    parser.add_argument("--n_per_type", type=int, default=25)
    parser.add_argument("--split", default="test")
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    scorer = load_scorer(Path(args.model_dir) / args.model)
    gen = scorer.generator.eval()
    items = inpainting_set(args.n_per_type, seed=0, split=args.split)
    image = torch.as_tensor(np.stack([it["image"] for it in items]))
    normal = torch.as_tensor(np.stack([it["normal"] for it in items]))
    cells, kinds = [it["cells"] for it in items], [it["anomaly"] for it in items]
    variants = {
        "as trained": _student(gen, image, image),
        "normal skips": _student(gen, image, normal),
        "normal bottleneck": _student(gen, normal, image),
        "no skips": _student(gen, image, torch.zeros_like(image)),
        "normal image (reference)": _student(gen, normal, normal),
    }
    report = {
        name: inpainting_rates(rec, normal, image, cells, kinds, grid=gen.grid)
        for name, rec in variants.items()
    }
    if gen.inpainting is not None:
        a, n = queue_usage(gen, image), queue_usage(gen, normal)
        report["queue"] = {
            "items_used_per_tile": a["items_used_per_tile"],
            "top_weight": a["top_weight"],
            "same_top_item_as_normal": float((a["top_item"] == n["top_item"]).float().mean()),
        }
    figure6(gen.reconstruct, image, variants["as trained"], kinds, out / "figure6.png")
    (out / "inpainting.json").write_text(json.dumps(report, indent=2))
    for name, rates in report.items():
        print(
            f"{name:28s}",
            "  ".join(
                f"{k.split('/')[-1]}={v:.2f}"
                for k, v in rates.items()
                if k.startswith("inpainted/")
            )
            if name != "queue"
            else rates,
        )
    return report


if __name__ == "__main__":
    main()
