"""Inference speed of the scoring path (``SQUIDScorer``): latency and images per second at
batch 1 and 64, PyTorch and TorchScript (traced, as ``ckpt_export`` writes it), with the
inference preprocessing (decode, robust scaling, resize of image files) included and
excluded, for the given presets with random weights (speed does not depend on them).

Each timed repetition runs the pipeline as the inference code does: preprocess the batch's
files one after the other, stack, score; the two phases are timed separately, so
"excluded" is the scorer alone and "included" the whole repetition. Wall-clock and process
CPU time (all threads) are both reported: on a shared machine the CPU figure is the steadier
one. Then writes the "## Inference speed" section of BENCHMARKS.md (that section only).

    python benchmarks/inference_speed.py --presets paper small

Images: 8-bit greyscale JPEGs of 224 x 224 (the ZhangLab format) generated into a temporary
folder, or ``--images_dir`` with real files.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import shlex
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from report import BENCHMARKS, cpu_name, load_average, write_section  # noqa: E402

SECTION = "## Inference speed"
_SYNTHETIC_SIZE = 224


def _synthetic_images(folder: Path, n: int, seed: int = 0) -> list[Path]:
    """Smooth random 'radiographs' (noise would make JPEG decoding unrealistically slow)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:_SYNTHETIC_SIZE, 0:_SYNTHETIC_SIZE] / _SYNTHETIC_SIZE
    paths = []
    for i in range(n):
        cx, cy = rng.uniform(0.3, 0.7, 2)
        picture = 0.8 - 0.5 * np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / 0.05) + 0.03 * rng.standard_normal(x.shape)
        path = folder / f"img{i:03d}.jpeg"
        Image.fromarray(np.clip(picture * 255, 0, 255).astype(np.uint8)).save(path, quality=90)
        paths.append(path)
    return paths


def _timed(fn: Callable[[], object]) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def _models(preset: str) -> tuple[int, dict[str, torch.nn.Module]]:
    from squid_monai.networks import get_config
    from squid_monai.scoring import build_scorer

    torch.manual_seed(0)
    size = get_config(preset)["image_size"]
    scorer = build_scorer(preset).eval()
    with warnings.catch_warnings():  # tracer notes on shape-only branches; parity is tested in tests/test_export.py
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(scorer, torch.rand(1, 1, size, size), strict=False)
    return size, {"PyTorch": scorer, "TorchScript": traced}


def measure(presets: list[str], batch_sizes: list[int], files: list[Path], repeats: dict[int, int],
            warmup: int) -> list[dict]:
    from squid_monai.transforms import preprocess

    rows = []
    for preset in presets:
        size, models = _models(preset)
        for backend, model in models.items():
            for batch in batch_sizes:
                chunk = [files[i % len(files)] for i in range(batch)]
                prep_t, model_t = [], []
                with torch.no_grad():
                    for rep in range(warmup + repeats[batch]):
                        images: list[torch.Tensor] = []
                        t_prep = _timed(lambda: images.extend(preprocess(f, size) for f in chunk))
                        x = torch.stack(images)
                        t_model = _timed(lambda: model(x))
                        if rep >= warmup:
                            prep_t.append(t_prep)
                            model_t.append(t_model)
                        print(f"{preset:8s} {backend:11s} batch {batch:3d} rep {rep}: preprocessing "
                              f"{t_prep[0]:.3f} s, scorer {t_model[0]:.3f} s", flush=True)
                for label, times in (("excluded", model_t), ("included", [(a[0] + b[0], a[1] + b[1])
                                                                          for a, b in zip(prep_t, model_t)])):
                    wall = statistics.median(t[0] for t in times)
                    cpu = statistics.median(t[1] for t in times)
                    rows.append({"preset": preset, "size": size, "backend": backend, "batch": batch,
                                 "preprocessing": label, "latency_s": wall, "images_per_s": batch / wall,
                                 "cpu_s_per_image": cpu / batch, "repeats": len(times)})
    return rows


def _section(rows: list[dict], command: str, load: tuple[str, str], images: str) -> str:
    """The body of the BENCHMARKS.md section (without its heading)."""
    import monai

    table = ["| preset (input) | backend | batch | preprocessing | latency, s (wall) | images / s (wall) "
             "| CPU-s / image |", "|---|---|---:|---|---:|---:|---:|"]
    for r in rows:
        table.append(f"| {r['preset']} ({r['size']} px) | {r['backend']} | {r['batch']} | {r['preprocessing']} | "
                     f"{r['latency_s']:.3f} | {r['images_per_s']:.2f} | {r['cpu_s_per_image']:.3f} |")
    lines = [
        f"Measured {datetime.date.today().isoformat()} on {cpu_name()} ({os.cpu_count()} cores, shared), "
        f"torch {torch.__version__} with {torch.get_num_threads()} threads, MONAI {monai.__version__}, Python "
        f"{platform.python_version()}; no GPU was lent to this task. Load average before: `{load[0]}`; "
        f"after: `{load[1]}`. Other jobs shared the two cores, so wall-clock figures are pessimistic and the "
        "CPU-seconds per image (all threads of the process) are the steadier figure. Random weights. "
        f"Images: {images}. Median of the timed repetitions after warm-up. Command (from the repository root):",
        "",
        f"    {command}",
        "",
        *table,
        "",
        "Reading: latency is one call of the scorer on a batch (\"excluded\"), or preprocessing the batch's files "
        "one by one and then that call (\"included\"; a single process, no DataLoader workers). TorchScript is "
        "the traced export; its first two calls per input shape are slow (profiling executor) and are part of "
        "the warm-up. `inference.json` runs the network on one image at a time by default "
        "(`per_image_forward`, for scores that are bitwise independent of the batch size), so its scorer "
        "throughput is the batch-1 row whatever `--batch_size`; `--per_image_forward false` gives the batch-64 "
        "throughput with scores equal to float rounding. Grad-CAM heat maps (a backward pass per batch) and "
        "PNG writing come on top (`--heatmaps false`, `--save_images false` skip them).",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--presets", nargs="+", default=["paper", "small"])
    parser.add_argument("--batch_sizes", nargs="+", type=int, default=[1, 64])
    parser.add_argument("--repeats_batch1", type=int, default=5, help="timed repetitions at batch 1")
    parser.add_argument("--repeats", type=int, default=3, help="timed repetitions at larger batches")
    parser.add_argument("--warmup", type=int, default=2, help="untimed repetitions first (TorchScript needs 2)")
    parser.add_argument("--images_dir", type=Path, default=None, help="real image files (default: synthetic JPEGs)")
    parser.add_argument("--output", type=Path, default=BENCHMARKS)
    parser.add_argument("--no_write", action="store_true", help="print only")
    args = parser.parse_args(argv)
    before = load_average()
    with tempfile.TemporaryDirectory() as tmp:
        if args.images_dir:
            from squid_monai.inference import collect_inputs

            files = [Path(it["image"]) for it in collect_inputs(args.images_dir)][: max(args.batch_sizes)]
            images = f"{len(files)} files from {args.images_dir}"
        else:
            files = _synthetic_images(Path(tmp), max(args.batch_sizes))
            images = f"{len(files)} synthetic 8-bit greyscale JPEGs of {_SYNTHETIC_SIZE} x {_SYNTHETIC_SIZE}"
        repeats = {b: args.repeats_batch1 if b == 1 else args.repeats for b in args.batch_sizes}
        rows = measure(args.presets, args.batch_sizes, files, repeats, args.warmup)
    after = load_average()
    for r in rows:
        print(f"{r['preset']:8s} {r['backend']:11s} batch {r['batch']:3d} preprocessing {r['preprocessing']:8s}: "
              f"{r['latency_s']:.3f} s, {r['images_per_s']:.2f} img/s, {r['cpu_s_per_image']:.3f} CPU-s/img")
    if not args.no_write:
        command = "python benchmarks/inference_speed.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
        write_section(SECTION, _section(rows, command.strip(), (before, after), images), args.output)
        print(f"updated {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
