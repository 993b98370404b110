"""How bright each trained DigitAnatomy model's reconstruction is where the normal input is
black and where it is a stroke: the probe that separated the seeds that fail from a bad start.

    python -m benchmarks.brightness --model seed0=runs/seeds/seed0/models --model seed9=runs/seeds/seed9/models

Why: the student's output level moves slowly from where it starts (Adam moves the output bias
by about the learning rate per step), and the seeds that fail are those whose output stays
grey on the black background (sessions 19-20: 0.39 and 0.45 against 0.06-0.34 on the others)
or, with the output bias started at the images' mean logit, dim on the strokes
(docs/EXPERIMENTS.md, session 20). Prints, per model, the mean reconstruction of the background
(input below ``--background``) and of the strokes, beside the strokes' mean input, on
``--n`` normal images of ``--split``; ``--json`` writes them too.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from benchmarks.figure6 import model_arguments, named_models
from squid_monai.data.digitanatomy import inpainting_set


def output_levels(
    inputs: torch.Tensor, reconstructions: torch.Tensor, background: float = 0.05
) -> dict[str, float]:
    """Mean reconstruction where the input is below ``background`` and where it is not, and
    the input's own mean there."""
    dark = inputs < background
    if dark.all() or not dark.any():
        raise ValueError(
            f"the inputs need background (< {background}) and strokes to compare the two"
        )
    return {
        "background": float(reconstructions[dark].mean()),
        "strokes": float(reconstructions[~dark].mean()),
        "strokes_input": float(inputs[~dark].mean()),
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.brightness", description=__doc__.split("\n\n")[0]
    )
    model_arguments(parser)
    parser.add_argument("--n", type=int, default=8, help="normal images")
    parser.add_argument("--split", default="test")
    parser.add_argument(
        "--background", type=float, default=0.05, help="inputs below this are background"
    )
    parser.add_argument("--json", type=Path, help="also write the levels here")
    args = parser.parse_args(argv)
    normal = torch.stack(
        [torch.as_tensor(it["normal"]) for it in inpainting_set(args.n, seed=0, split=args.split)]
    )
    levels = {}
    for name, scorer, resize, _ in named_models(args.model, args.weights):
        x = torch.stack([resize(i) for i in normal])
        with torch.no_grad():
            levels[name] = output_levels(x, scorer(x)["reconstruction"].float(), args.background)
        print(
            f"{name}: background {levels[name]['background']:.3f}, strokes {levels[name]['strokes']:.3f} "
            f"(input {levels[name]['strokes_input']:.3f})"
        )
    if args.json:
        args.json.write_text(json.dumps(levels, indent=1))
    return levels


if __name__ == "__main__":
    main()
