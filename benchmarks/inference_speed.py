"""Inference back-ends side by side: a scorer at batch 1 and 64 on eager PyTorch (the
reference), PyTorch with BatchNorm folded and ``channels_last`` (:mod:`squid_monai.scoring.
folding`), TorchScript (traced, as ``ckpt_export`` writes it), ``torch.compile``, ONNX Runtime,
OpenVINO and OpenVINO INT8 (NNCF, calibrated on other images of the same kind)
(:mod:`squid_monai.scoring.runtimes`), on one or more thread counts, preprocessing excluded.

The scorers are trained model folders (``--model_dir``; a SQUID model once per
``--score_sources``, since the shipped scores cost more than the logit) or SQUID presets with
random weights (``--presets``). Paired and interleaved: every repetition runs each back-end
once on the same batch, in a rotating order, and the ratio to eager PyTorch is taken within the
repetition; the table gives medians. Wall-clock and process CPU time (all threads) are both
reported. Back-ends whose runtime is not installed are skipped. Then writes the "## Inference
speed" section of BENCHMARKS.md (that section only).

    python -m benchmarks.inference_speed --model_dir runs/chest/models --score_sources combined,logit \
        --backends pytorch onnx openvino --threads 1 2 --images_dir /data/zhanglab/test/NORMAL
    python -m benchmarks.inference_speed --presets paper small --threads 1

Inputs: ``--images_dir`` (real files) or 8-bit greyscale JPEGs of 224 x 224 (the ZhangLab
format) generated into a temporary folder, preprocessed as each model was trained.
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
from dataclasses import dataclass
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


#: Back-ends by their ``--backends`` key and table name, in table order.
BACKENDS = {
    "pytorch": "PyTorch",
    "folded": "PyTorch, BN folded + channels_last",
    "torchscript": "TorchScript",
    "compile": "torch.compile",
    "onnx": "ONNX Runtime",
    "openvino": "OpenVINO",
    "openvino_int8": "OpenVINO INT8 (NNCF)",
}


@dataclass
class Subject:
    """One scorer to time: its label in the table, its score source, whether its weights are
    trained, and how to build it (fresh for every thread count)."""

    label: str
    source: str
    trained: bool
    size: int
    intensity: str
    build: Callable[[], torch.nn.Module]


def preset_subject(preset: str) -> Subject:
    """SQUID's scorer of ``preset`` with random weights and the logit (the paper's score)."""
    from squid_monai.loading import build_scorer
    from squid_monai.methods.squid.presets import get_config

    def build():
        torch.manual_seed(0)
        return build_scorer(preset).eval()

    size = get_config(preset)["image_size"]
    return Subject(f"SQUID {preset}", "logit", False, size, "percentile", build)


def model_subjects(model_dir: Path, sources: list[str], name: str | None = None) -> list[Subject]:
    """A trained model folder, once per score source (``sources``: empty = the model's own;
    a SQUID model's other sources are switched on the loaded scorer, calibration untouched,
    which costs nothing in time)."""
    from squid_monai.artifact import Recipe, trained_intensity
    from squid_monai.loading import image_size, load_scorer

    recipe = Recipe.load(model_dir)
    own = getattr(load_scorer(model_dir / "model.pt"), "score_source", "model")
    label = name or f"{model_dir.name} ({recipe.family})"
    subjects = []
    for source in sources or [own]:

        def build(source=source):
            scorer = load_scorer(model_dir / "model.pt").eval()
            if source != own:
                scorer.set_score_source(source)
            return scorer

        subjects.append(
            Subject(label, source, True, image_size(recipe), trained_intensity(model_dir), build)
        )
    return subjects


def _backends(
    scorer: torch.nn.Module,
    size: int,
    calibration: torch.Tensor,
    tmp: Path,
    keys: list[str],
    threads: int,
) -> tuple[dict[str, Callable], dict[str, float]]:
    """Each back-end of ``keys`` as ``images -> scores`` for one scorer on ``threads`` threads,
    and its set-up time (export, conversion, quantisation; compilation of the first call
    excluded)."""
    from squid_monai.scoring import runtimes
    from squid_monai.scoring.folding import fast_eager

    setup: dict[str, float] = {}
    fns: dict[str, Callable] = {BACKENDS["pytorch"]: lambda x: scorer(x)["score"]}

    def add(key: str, build: Callable[[], Callable]) -> None:
        if key not in keys:
            return
        start = time.perf_counter()
        fns[BACKENDS[key]] = build()
        setup[BACKENDS[key]] = time.perf_counter() - start

    add("folded", lambda: (lambda m: lambda x: m(x)["score"])(fast_eager(scorer)))
    with warnings.catch_warnings():  # tracer notes on shape-only branches (tests/test_export.py)
        warnings.simplefilter("ignore")
        add(
            "torchscript",
            lambda: (lambda m: lambda x: m(x)["score"])(
                torch.jit.trace(scorer, torch.rand(1, 1, size, size), strict=False)
            ),
        )
    add("compile", lambda: (lambda m: lambda x: m(x)["score"])(torch.compile(scorer)))
    exported = [k for k in ("onnx", "openvino", "openvino_int8") if k in keys]
    if any(runtimes.available(k) for k in exported):
        onnx_path = runtimes.export_onnx(
            scorer, tmp / f"scorer{len(list(tmp.iterdir()))}.onnx", size
        )
        for key in exported:
            if not runtimes.available(key):
                continue

            def build(fmt=key):
                model = onnx_path if fmt == "onnx" else runtimes.to_openvino(onnx_path)
                if fmt == "openvino_int8":
                    model = runtimes.quantize_openvino(model, [calibration])
                runtime = runtimes.ExportedScorer(model, scorer, fmt, threads=threads)
                return lambda x: runtime(x)["score"]

            add(key, build)
    return fns, setup


def measure(
    subjects: list[Subject],
    batch_sizes: list[int],
    images: dict[tuple[int, str], torch.Tensor],
    calibration: dict[tuple[int, str], torch.Tensor],
    repeats: dict[int, int],
    warmup: int,
    keys: list[str],
    threads: list[int],
) -> list[dict]:
    rows = []
    with tempfile.TemporaryDirectory() as tmp, torch.no_grad():
        for n_threads in threads:
            torch.set_num_threads(n_threads)
            for subject in subjects:
                scorer = subject.build()
                key = (subject.size, subject.intensity)
                fns, setup = _backends(
                    scorer, subject.size, calibration[key], Path(tmp), keys, n_threads
                )
                names = list(fns)
                for batch in batch_sizes:
                    x = images[key][:batch]
                    reference = fns[BACKENDS["pytorch"]](x)
                    diff = {
                        name: float((torch.as_tensor(fns[name](x)) - reference).abs().max())
                        for name in names
                    }
                    for _ in range(warmup - 1):
                        for name in names:
                            fns[name](x)
                    times: dict[str, list[tuple[float, float]]] = {name: [] for name in names}
                    for rep in range(repeats[batch]):
                        for name in names[rep % len(names) :] + names[: rep % len(names)]:
                            times[name].append(_timed(lambda f=fns[name], x=x: f(x)))
                        print(
                            f"{subject.label} {subject.source} {n_threads} thread(s) batch {batch} "
                            f"rep {rep}: "
                            + ", ".join(f"{n} {t[-1][0]:.3f} s" for n, t in times.items()),
                            flush=True,
                        )
                    eager = times[BACKENDS["pytorch"]]
                    for name in names:
                        t = times[name]
                        rows.append(
                            {
                                "model": subject.label,
                                "source": subject.source,
                                "trained": subject.trained,
                                "size": subject.size,
                                "threads": n_threads,
                                "backend": name,
                                "batch": batch,
                                "latency_s": statistics.median(w for w, _ in t),
                                "images_per_s": batch / statistics.median(w for w, _ in t),
                                "cpu_s_per_image": statistics.median(c for _, c in t) / batch,
                                "ratio_wall": statistics.median(
                                    a[0] / b[0] for a, b in zip(t, eager)
                                ),
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
        "| model (input) | score | threads | back-end | batch | latency, s (wall) | images / s (wall) "
        "| CPU-s / image | x eager (wall) | x eager (CPU) | max \\|score - eager\\| | set-up, s |",
        "|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        weights = "" if r["trained"] else ", random weights"
        table.append(
            f"| {r['model']} ({r['size']} px{weights}) | `{r['source']}` | {r['threads']} | {r['backend']} | "
            f"{r['batch']} | {r['latency_s']:.3f} | {r['images_per_s']:.2f} | {r['cpu_s_per_image']:.4f} | "
            f"{r['ratio_wall']:.2f} | {r['ratio_cpu']:.2f} | {r['max_abs_score_diff']:.1e} | {r['setup_s']:.0f} |"
        )
    versions = []
    for module in ("onnxruntime", "openvino", "nncf"):
        try:
            versions.append(f"{module} {__import__(module).__version__}")
        except ImportError:
            versions.append(f"{module} not installed")
    lines = [
        f"Measured {datetime.date.today().isoformat()} on {cpu_name()} ({os.cpu_count()} cores), torch "
        f"{torch.__version__} with the table's thread count for every back-end, MONAI {monai.__version__}, "
        f"{', '.join(versions)}, Python {platform.python_version()}; no GPU. Load average before: "
        f"`{load[0]}`; after: `{load[1]}`. Images: {images}, preprocessed as each model was trained; "
        "preprocessing excluded. One run of the command (from the repository root):",
        "",
        f"    {command}",
        "",
        *table,
        "",
        'Reading: latency is one call on the batch; "x eager" is the median over repetitions of the ratio to '
        "eager PyTorch in the same repetition (back-ends interleaved in a rotating order, so load changes hit "
        "all of them alike); below 1 is faster. The score differences are on these images (a model's parity "
        'on its validation split is on its card and in the "Reliability" section). Set-up is export, '
        "conversion or quantisation, done once per model.",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--presets",
        nargs="*",
        default=None,
        help="SQUID presets, random weights (default: paper small)",
    )
    parser.add_argument(
        "--model_dir",
        nargs="*",
        type=Path,
        default=[],
        help="trained model folders (model.pt + network.json)",
    )
    parser.add_argument("--model_names", nargs="*", default=[], help="their labels in the table")
    parser.add_argument(
        "--score_sources",
        nargs="*",
        default=[],
        help="per --model_dir, in order: its score sources, comma-separated (e.g. combined,logit); "
        "'own' or missing: the model's own score; other sources need a SQUID model",
    )
    parser.add_argument("--backends", nargs="+", choices=list(BACKENDS), default=list(BACKENDS))
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
        "--threads",
        nargs="+",
        type=int,
        default=[torch.get_num_threads()],
        help="thread counts, each a table block",
    )
    parser.add_argument(
        "--images_dir",
        type=lambda text: Path(os.path.expandvars(text)),
        default=None,
        help="real image files (default: synthetic JPEGs); '$VARIABLE' parts are expanded here, so "
        "that the recorded command names no machine's folder",
    )
    parser.add_argument("--output", type=Path, default=BENCHMARKS)
    parser.add_argument("--no_write", action="store_true", help="print only")
    args = parser.parse_args(argv)
    before = load_average()
    from squid_monai.transforms import preprocess

    presets = (
        args.presets if args.presets is not None else ([] if args.model_dir else ["paper", "small"])
    )
    names = args.model_names + [None] * (len(args.model_dir) - len(args.model_names))
    subjects = [preset_subject(p) for p in presets]
    sources = args.score_sources + ["own"] * (len(args.model_dir) - len(args.score_sources))
    for model_dir, name, listed in zip(args.model_dir, names, sources):
        wanted = [] if listed in ("own", "") else listed.split(",")
        subjects += model_subjects(model_dir, wanted, name)
    if "pytorch" not in args.backends:
        parser.error("--backends must include pytorch (the reference of every ratio)")
    inputs = {(s.size, s.intensity) for s in subjects}
    with tempfile.TemporaryDirectory() as tmp:
        n = max(args.batch_sizes)
        if args.images_dir:
            from squid_monai.inference import collect_inputs

            found = [Path(it["image"]) for it in collect_inputs(args.images_dir)]
            files, calibration_files = found[:n], found[n : 2 * n] or found[:n]
            images = f"{len(files)} files from {args.images_dir.name}/"
        else:
            files = _synthetic_images(Path(tmp), n)
            (Path(tmp) / "calibration").mkdir()
            calibration_files = _synthetic_images(Path(tmp) / "calibration", n, seed=1)
            images = f"{len(files)} synthetic 8-bit greyscale JPEGs of {_SYNTHETIC_SIZE} x {_SYNTHETIC_SIZE}"

        def stack(paths, size, intensity):
            return torch.stack(
                [torch.as_tensor(preprocess(f, size, intensity=intensity)) for f in paths]
            )

        batches = {k: stack(files, *k) for k in inputs}
        calibration = {k: stack(calibration_files, *k) for k in inputs}
    repeats = {b: args.repeats_batch1 if b == 1 else args.repeats for b in args.batch_sizes}
    rows = measure(
        subjects,
        args.batch_sizes,
        batches,
        calibration,
        repeats,
        args.warmup,
        args.backends,
        args.threads,
    )
    after = load_average()
    for r in rows:
        print(
            f"{r['model']} {r['source']} {r['threads']}t {r['backend']:36s} batch {r['batch']:3d}: "
            f"{r['latency_s']:.3f} s, x{r['ratio_wall']:.2f} wall, x{r['ratio_cpu']:.2f} CPU, "
            f"max diff {r['max_abs_score_diff']:.1e}"
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
