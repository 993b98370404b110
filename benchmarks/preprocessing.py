"""Images per second of the training and inference preprocessing on one CPU core.

Measures, with ``torch.set_num_threads(1)`` and no DataLoader workers:

- inference preprocessing (decode, robust scaling, resize: ``inference_transforms``) of
  ZhangLab JPEGs and of DICOM files;
- training preprocessing without a cache (``train_transforms``: the above plus the random
  translation/scaling), i.e. what a plain ``Dataset`` pays per image and epoch;
- training with ``make_dataset(..., cache=True)``: the one-off cache fill, then the
  per-epoch cost (augmentation of cached tensors).

Then writes the figures into the "## Preprocessing throughput" section of BENCHMARKS.md
(replacing that section only). Example:

    python -m benchmarks.preprocessing --zhanglab_dir ../shared/data/zhanglab224 \\
        --dicom_dir ../shared/data/dicom --n_images 200
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import shlex
import sys
import time
from pathlib import Path

import torch

from benchmarks.report import BENCHMARKS, cpu_name, load_average, write_section

SECTION = "## Preprocessing throughput"


def _rate(fn, items, repeats: int = 1) -> tuple[float, float]:
    """Images per second of ``fn`` over ``items`` (after one warm-up call), as
    (per CPU-second of this process, per wall-clock second)."""
    fn(items[0])
    cpu, wall = time.process_time(), time.perf_counter()
    for _ in range(repeats):
        for item in items:
            fn(item)
    n = repeats * len(items)
    return n / (time.process_time() - cpu), n / (time.perf_counter() - wall)


def measure(
    zhanglab_dir: Path, dicom_dir: Path | None, n_images: int, image_size: int
) -> list[tuple[str, tuple]]:
    import monai

    from squid_monai.data import make_dataset
    from squid_monai.transforms import inference_transforms, train_transforms

    monai.utils.set_determinism(seed=0)
    jpegs = sorted((zhanglab_dir / "train" / "NORMAL").glob("*.jpeg"))[:n_images]
    if not jpegs:
        raise SystemExit(f"no JPEGs under {zhanglab_dir}/train/NORMAL")
    items = [{"image": str(p), "label": 0} for p in jpegs]
    infer, train = inference_transforms(image_size), train_transforms(image_size)
    results = [
        (f"inference, ZhangLab JPEG 224 px ({len(items)} images)", _rate(infer, items)),
        (f"training, no cache, ZhangLab JPEG ({len(items)} images)", _rate(train, items)),
    ]
    cpu, wall = time.process_time(), time.perf_counter()
    cached = make_dataset(items, image_size=image_size, train=True, cache=True, num_workers=1)
    fill = (len(items) / (time.process_time() - cpu), len(items) / (time.perf_counter() - wall))
    results.append((f"training, cache fill (once), ZhangLab JPEG ({len(items)} images)", fill))
    per_epoch = _rate(cached.__getitem__, list(range(len(cached))), repeats=3)
    results.append(("training, per epoch from the cache (augmentation only)", per_epoch))
    for path in sorted(dicom_dir.glob("*.dcm")) if dicom_dir else []:
        import pydicom

        ds = pydicom.dcmread(path, stop_before_pixels=True)
        syntax = getattr(ds.file_meta.TransferSyntaxUID, "name", "?")
        label = (
            f"inference, DICOM {ds.Columns}x{ds.Rows} {ds.BitsStored}-bit, {syntax} ({path.name})"
        )
        results.append((label, _rate(infer, [{"image": str(path)}], repeats=5)))
    return results


def _section(results: list[tuple[str, tuple]], command: str, image_size: int) -> str:
    """The body of the BENCHMARKS.md section (without its heading)."""
    import monai
    import PIL
    import pydicom

    lines = [
        f"Measured {datetime.date.today().isoformat()} on one core (`torch.set_num_threads(1)`, no DataLoader "
        f"workers) of {cpu_name()}; Python {platform.python_version()}, torch {torch.__version__}, "
        f"MONAI {monai.__version__}, Pillow {PIL.__version__}, pydicom {pydicom.__version__}. Output "
        f"{image_size} x {image_size}. Command (from the repository root):",
        "",
        f"    {command}",
        "",
        "| preprocessing | images / CPU-second (one core) | images / wall-second |",
        "|---|---:|---:|",
        *[f"| {name} | {cpu:,.0f} | {wall:,.0f} |" for name, (cpu, wall) in results],
        "",
        "The first column divides by the CPU time of the benchmark process (one thread), which is what "
        "one dedicated core delivers; the wall-clock column also counts time lost to other processes on "
        f"this shared machine (load average {load_average()} on {os.cpu_count() or 1} cores during the run).",
        "",
        "Reading: with the default `make_dataset(..., cache=True)` each file is decoded once, when the cache "
        "fills; an epoch then costs only the copy and augmentation of cached tensors (last ZhangLab row), "
        "which DataLoader workers multiply further. Compare it with the training step rate: a batch of 16 "
        "needs 16 of these per step. Large DICOMs are decode-bound (JPEG 2000 in particular; "
        "the percentile computation dominates for uncompressed 1024 px images); they matter for "
        "inference and the one-off cache fill only.",
    ]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--zhanglab_dir", type=Path, required=True, help="ZhangLab root (train/NORMAL/*.jpeg)"
    )
    parser.add_argument(
        "--dicom_dir", type=Path, default=None, help="folder of .dcm files to time as well"
    )
    parser.add_argument("--n_images", type=int, default=200)
    parser.add_argument("--image_size", type=int, default=128)
    parser.add_argument("--output", type=Path, default=BENCHMARKS)
    parser.add_argument("--no_write", action="store_true", help="print only")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    results = measure(args.zhanglab_dir, args.dicom_dir, args.n_images, args.image_size)
    for name, (cpu, wall) in results:
        print(f"{cpu:8.1f} img/CPU-s {wall:8.1f} img/wall-s  {name}")
    if not args.no_write:
        command = "python -m benchmarks.preprocessing " + " ".join(
            shlex.quote(a) for a in (argv or sys.argv[1:])
        )
        write_section(SECTION, _section(results, command, args.image_size), args.output)
        print(f"updated {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
