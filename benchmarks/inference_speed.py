"""Inference back-ends side by side: the scoring path (``SQUIDScorer``) at batch 1 and 64 on
eager PyTorch (the reference), PyTorch with BatchNorm folded and ``channels_last``
(:mod:`squid_monai.scoring.folding`), TorchScript (traced, as ``ckpt_export`` writes it),
``torch.compile``, ONNX Runtime, OpenVINO and OpenVINO INT8 (NNCF, calibrated on normal
images) (:mod:`squid_monai.scoring.runtimes`), preprocessing excluded, random weights
(speed does not depend on them).

Paired and interleaved: every repetition runs each back-end once on the same batch, in a
rotating order, and the ratio to eager PyTorch is taken within the repetition; the table
gives medians. Wall-clock and process CPU time (all threads) are both reported: on a shared
machine the CPU figure is the steadier one. Back-ends whose runtime is not installed are
skipped. Then writes the "## Inference speed" section of BENCHMARKS.md (that section only).

    python -m benchmarks.inference_speed --presets paper small --threads 1

Inputs: 8-bit greyscale JPEGs of 224 x 224 (the ZhangLab format) generated into a temporary
folder, or ``--images_dir`` with real files, preprocessed as inference does; the INT8
calibration uses other images of the same kind (the export calibrates on training normals).
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from benchmarks.report import (
    BENCHMARKS,
    command_line,
    cpu_name,
    load_average,
    write_section,
)

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
        picture = (
            0.8
            - 0.5 * np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / 0.05)
            + 0.03 * rng.standard_normal(x.shape)
        )
        path = folder / f"img{i:03d}.jpeg"
        Image.fromarray(np.clip(picture * 255, 0, 255).astype(np.uint8)).save(path, quality=90)
        paths.append(path)
    return paths


def _timed(fn: Callable[[], object]) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def _backends(
    preset: str, calibration: torch.Tensor, tmp: Path
) -> tuple[int, dict[str, Callable], dict[str, float]]:
    """Each back-end as ``images -> scores`` for one preset, and its set-up time (export,
    conversion, quantisation, compilation of the first call excluded)."""
    from squid_monai.loading import build_scorer
    from squid_monai.methods.squid.presets import get_config
    from squid_monai.scoring import runtimes
    from squid_monai.scoring.folding import fast_eager

    torch.manual_seed(0)
    size = get_config(preset)["image_size"]
    scorer = build_scorer(preset).eval()
    setup: dict[str, float] = {}
    fns: dict[str, Callable] = {"PyTorch": lambda x: scorer(x)["score"]}

    def add(name: str, build: Callable[[], Callable]) -> None:
        start = time.perf_counter()
        fns[name] = build()
        setup[name] = time.perf_counter() - start

    add(
        "PyTorch, BN folded + channels_last",
        lambda: (lambda m: lambda x: m(x)["score"])(fast_eager(scorer)),
    )
    with (
        warnings.catch_warnings()
    ):  # tracer notes on shape-only branches; parity is tested in tests/test_export.py
        warnings.simplefilter("ignore")
        add(
            "TorchScript",
            lambda: (lambda m: lambda x: m(x)["score"])(
                torch.jit.trace(scorer, torch.rand(1, 1, size, size), strict=False)
            ),
        )
    add("torch.compile", lambda: (lambda m: lambda x: m(x)["score"])(torch.compile(scorer)))
    if runtimes.available("onnx") or runtimes.available("openvino"):
        onnx_path = runtimes.export_onnx(scorer, tmp / f"{preset}.onnx", size)
        for name, fmt in (
            ("ONNX Runtime", "onnx"),
            ("OpenVINO", "openvino"),
            ("OpenVINO INT8 (NNCF)", "openvino_int8"),
        ):
            if not runtimes.available(fmt):
                continue

            def build(fmt=fmt):
                model = onnx_path if fmt == "onnx" else runtimes.to_openvino(onnx_path)
                if fmt == "openvino_int8":
                    model = runtimes.quantize_openvino(model, [calibration])
                exported = runtimes.ExportedScorer(model, scorer, fmt)
                return lambda x: exported(x)["score"]

            add(name, build)
    return size, fns, setup


def measure(
    presets: list[str],
    batch_sizes: list[int],
    images: dict[int, torch.Tensor],
    calibration: dict[int, torch.Tensor],
    repeats: dict[int, int],
    warmup: int,
) -> list[dict]:
    rows = []
    with tempfile.TemporaryDirectory() as tmp, torch.no_grad():
        for preset in presets:
            from squid_monai.methods.squid.presets import get_config

            size = get_config(preset)["image_size"]
            size, fns, setup = _backends(preset, calibration[size], Path(tmp))
            names = list(fns)
            for batch in batch_sizes:
                x = images[size][:batch]
                reference = fns["PyTorch"](x)
                diff = {
                    name: float((torch.as_tensor(fns[name](x)) - reference).abs().max())
                    for name in names
                }
                for _ in range(warmup - 1):
                    for name in names:
                        fns[name](x)
                times: dict[str, list[tuple[float, float]]] = {name: [] for name in names}
                for rep in range(repeats[batch]):
                    for name in (
                        names[rep % len(names) :] + names[: rep % len(names)]
                    ):  # rotating order
                        times[name].append(_timed(lambda f=fns[name], x=x: f(x)))
                    print(
                        f"{preset:8s} batch {batch:3d} rep {rep}: "
                        + ", ".join(f"{n} {t[-1][0]:.3f} s" for n, t in times.items()),
                        flush=True,
                    )
                eager = times["PyTorch"]
                for name in names:
                    t = times[name]
                    rows.append(
                        {
                            "preset": preset,
                            "size": size,
                            "backend": name,
                            "batch": batch,
                            "latency_s": statistics.median(w for w, _ in t),
                            "images_per_s": batch / statistics.median(w for w, _ in t),
                            "cpu_s_per_image": statistics.median(c for _, c in t) / batch,
                            "ratio_wall": statistics.median(a[0] / b[0] for a, b in zip(t, eager)),
                            "ratio_cpu": statistics.median(
                                a[1] / max(b[1], 1e-9) for a, b in zip(t, eager)
                            ),
                            "max_abs_score_diff": diff[name],
                            "setup_s": setup.get(name, 0.0),
                            "repeats": len(t),
                        }
                    )
    return rows


def _section(rows: list[dict], command: str, load: tuple[str, str], images: str) -> str:
    """The body of the BENCHMARKS.md section (without its heading)."""
    import monai

    table = [
        "| preset (input) | back-end | batch | latency, s (wall) | images / s (wall) | CPU-s / image "
        "| x eager (wall) | x eager (CPU) | max \\|score - eager\\| | set-up, s |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        table.append(
            f"| {r['preset']} ({r['size']} px) | {r['backend']} | {r['batch']} | {r['latency_s']:.3f} | "
            f"{r['images_per_s']:.2f} | {r['cpu_s_per_image']:.4f} | {r['ratio_wall']:.2f} | "
            f"{r['ratio_cpu']:.2f} | {r['max_abs_score_diff']:.1e} | {r['setup_s']:.0f} |"
        )
    versions = []
    for module in ("onnxruntime", "openvino", "nncf"):
        try:
            versions.append(f"{module} {__import__(module).__version__}")
        except ImportError:
            versions.append(f"{module} not installed")
    lines = [
        f"Measured {datetime.date.today().isoformat()} on {cpu_name()} ({os.cpu_count()} cores, AVX2 + FMA, no "
        f"AVX-512 or VNNI; shared with other jobs), torch {torch.__version__} with {torch.get_num_threads()} "
        f"thread(s) for every back-end, MONAI {monai.__version__}, {', '.join(versions)}, Python "
        f"{platform.python_version()}; no GPU was lent to this task. Load average before: `{load[0]}`; after: "
        f"`{load[1]}`. Random weights. Images: {images}, preprocessed; preprocessing excluded. Command (from the "
        "repository root):",
        "",
        f"    {command}",
        "",
        *table,
        "",
        'Reading: latency is one call on the batch; "x eager" is the median over repetitions of the ratio to '
        "eager PyTorch in the same repetition (back-ends interleaved in a rotating order, so load changes hit "
        "all of them alike); below 1 is faster. The score differences are on random weights (a trained model's "
        'parity, on its validation split, is on its card and in the "Reliability" section). Set-up is '
        "export, conversion, quantisation or `torch.compile` wrapping, done once per model; `torch.compile` "
        "compiles on its first call per shape, which the warm-up absorbs.",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--presets", nargs="+", default=["paper", "small"])
    parser.add_argument("--batch_sizes", nargs="+", type=int, default=[1, 64])
    parser.add_argument(
        "--repeats_batch1", type=int, default=9, help="timed repetitions at batch 1"
    )
    parser.add_argument(
        "--repeats", type=int, default=5, help="timed repetitions at larger batches"
    )
    parser.add_argument(
        "--warmup",
        type=int,
        default=2,
        help="untimed calls first, the parity one included (TorchScript and torch.compile need 2)",
    )
    parser.add_argument(
        "--threads", type=int, default=torch.get_num_threads(), help="threads of every back-end"
    )
    parser.add_argument(
        "--images_dir", type=Path, default=None, help="real image files (default: synthetic JPEGs)"
    )
    parser.add_argument("--output", type=Path, default=BENCHMARKS)
    parser.add_argument("--no_write", action="store_true", help="print only")
    args = parser.parse_args(argv)
    before = load_average()
    torch.set_num_threads(args.threads)
    from squid_monai.methods.squid.presets import get_config
    from squid_monai.transforms import preprocess

    sizes = {get_config(p)["image_size"] for p in args.presets}
    with tempfile.TemporaryDirectory() as tmp:
        n = max(args.batch_sizes)
        if args.images_dir:
            from squid_monai.inference import collect_inputs

            found = [Path(it["image"]) for it in collect_inputs(args.images_dir)]
            files, calibration_files = found[:n], found[n : 2 * n] or found[:n]
            images = f"{len(files)} files from {args.images_dir}"
        else:
            files = _synthetic_images(Path(tmp), n)
            (Path(tmp) / "calibration").mkdir()
            calibration_files = _synthetic_images(Path(tmp) / "calibration", n, seed=1)
            images = f"{len(files)} synthetic 8-bit greyscale JPEGs of {_SYNTHETIC_SIZE} x {_SYNTHETIC_SIZE}"
        batches = {
            s: torch.stack([torch.as_tensor(preprocess(f, s)) for f in files]) for s in sizes
        }
        calibration = {
            s: torch.stack([torch.as_tensor(preprocess(f, s)) for f in calibration_files])
            for s in sizes
        }
    repeats = {b: args.repeats_batch1 if b == 1 else args.repeats for b in args.batch_sizes}
    rows = measure(args.presets, args.batch_sizes, batches, calibration, repeats, args.warmup)
    after = load_average()
    for r in rows:
        print(
            f"{r['preset']:8s} {r['backend']:36s} batch {r['batch']:3d}: {r['latency_s']:.3f} s, "
            f"x{r['ratio_wall']:.2f} wall, x{r['ratio_cpu']:.2f} CPU, max diff {r['max_abs_score_diff']:.1e}"
        )
    if not args.no_write:
        write_section(
            SECTION,
            _section(rows, command_line(__file__, argv), (before, after), images),
            args.output,
        )
        print(f"updated {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
