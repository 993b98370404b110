"""Deploy soak: the MONAI Deploy app on a folder of many studies with corrupt and duplicated
files, as a hospital export may hand it over; every file must be accounted for.

Writes ``--studies`` synthetic chest radiograph studies (one CR instance each, ``--size``
pixels a side, 12 bits, uncompressed or RLE), damages ``--corrupt`` of them (cut inside the
pixel data, uncompressed and RLE; cut inside the header; garbage behind a DICOM marker; an
empty file) and adds ``--duplicates`` extra files that share a SOP Instance UID with a study
(identical copies, and truncated copies named to sort first). Then runs
``python -m pipelines.squid_app`` once, as a program, on ``--threads`` OpenMP threads, and
reports its wall time and CPU time, its peak memory (maximum resident set of the process), its
exit status, the machine's load average before and after, and whether ``run_summary.json``
accounts for every file: each one is a case of its own (by file name) or the SOP instance a
study case was scored from. The model is an untrained
``paper``-preset SQUID as TorchScript (speed and accounting do not depend on the weights), or
``--model``.

    python -m benchmarks.deploy_soak --out /tmp/soak    # 100 studies, 10 corrupt, 5 duplicates
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
CR_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.1"
#: how the corrupt studies are damaged, in turn
DAMAGE = (
    "cut_pixels",
    "cut_pixels_rle",
    "cut_header",
    "cut_pixels",
    "garbage",
    "cut_pixels_rle",
    "cut_pixels",
    "empty",
    "cut_header",
    "cut_pixels",
)


def radiograph(size: int, seed: int) -> np.ndarray:
    """A chest-like 12-bit picture: two dark lung fields in a bright body, noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size] / size
    lungs = sum(np.exp(-(((x - cx) / 0.15) ** 2 + ((y - 0.5) / 0.3) ** 2)) for cx in (0.3, 0.7))
    picture = 0.8 - 0.6 * lungs + 0.05 * rng.standard_normal((size, size))
    return np.clip(picture * 4095, 0, 4095).astype(np.uint16)


def study(path: Path, size: int, seed: int, rle: bool = False) -> str:
    """One CR study of one instance at ``path``; returns its SOP Instance UID."""
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, RLELossless, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = CR_SOP_CLASS, generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = CR_SOP_CLASS, meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.Modality, ds.BodyPartExamined, ds.ViewPosition = "CR", "CHEST", "PA"
    ds.PatientID, ds.StudyDate, ds.InstanceNumber, ds.SeriesNumber = (
        f"SOAK{seed:04d}",
        "20260101",
        1,
        1,
    )
    ds.Rows = ds.Columns = size
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    pixels = radiograph(size, seed)
    ds.PixelData = pixels.tobytes()
    if rle:
        ds.compress(RLELossless, pixels)
    ds.save_as(path, enforce_file_format=True)
    return str(ds.SOPInstanceUID)


def damage(path: Path, how: str) -> None:
    data = path.read_bytes()
    if how.startswith("cut_pixels"):
        path.write_bytes(data[: len(data) - len(data) // 3])
    elif how == "cut_header":
        path.write_bytes(data[:300])
    elif how == "garbage":
        path.write_bytes(data[:132] + os.urandom(len(data) - 132))
    else:
        path.write_bytes(b"")


def make_inputs(
    folder: Path, studies: int, corrupt: int, duplicates: int, size: int
) -> dict[str, str]:
    """The input folder; returns file name -> SOP Instance UID ("" where none is readable)."""
    folder.mkdir(parents=True)
    files: dict[str, str] = {}
    for n in range(studies):
        how = DAMAGE[n % len(DAMAGE)] if n < corrupt else ""
        name = f"study{n:04d}.dcm"
        files[name] = study(folder / name, size, n, rle=how.endswith("_rle"))
        if how:
            damage(folder / name, how)
            files[name] = files[name] if how.startswith("cut_pixels") else ""
    for k in range(duplicates):
        original = f"study{corrupt + k:04d}.dcm"  # intact studies
        copy = f"aa_truncated_copy_of_{original}" if k % 2 else f"{Path(original).stem}_copy.dcm"
        shutil.copyfile(folder / original, folder / copy)
        if copy.startswith("aa_"):
            damage(folder / copy, "cut_pixels")
        files[copy] = files[original]
    return files


def untrained_model(folder: Path, preset: str = "paper") -> Path:
    """An untrained SQUID of ``preset`` as TorchScript with its card (what the app loads)."""
    import torch

    from squid_monai.loading import build_scorer
    from squid_monai.methods import get_family

    size = get_family("squid").get_config(preset)["image_size"]
    path = folder / f"squid_{preset}.ts"
    folder.mkdir(parents=True, exist_ok=True)
    traced = torch.jit.trace(build_scorer(preset), torch.rand(1, 1, size, size), strict=False)
    card = {
        "image_size": size,
        "mean": 0.0,
        "std": 1.0,
        "threshold": 0.5,
        "model_name": f"squid-{preset}-untrained",
        "model_version": "soak",
    }
    torch.jit.save(traced, str(path), _extra_files={"squid.json": json.dumps(card)})
    return path


def accounting(summary: dict, files: dict[str, str]) -> dict:
    """Which files ``run_summary.json`` accounts for: as a case of their own, or as the SOP
    instance a study case was made from."""
    cases = summary["cases"]
    by_file = {case["source"]["file"] for case in cases if "file" in case["source"]}
    studies = {case["source"].get("SOPInstanceUID") for case in cases if case["kind"] == "dicom"}
    missing = sorted(
        name for name, uid in files.items() if name not in by_file and uid not in studies
    )
    counts: dict[str, int] = {}
    for case in cases:
        counts[case["status"]] = counts.get(case["status"], 0) + 1
    return {"files": len(files), "cases": len(cases), "missing": missing, "by_status": counts}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--out", required=True, help="scratch folder (emptied): inputs, outputs, soak.json"
    )
    parser.add_argument("--studies", type=int, default=100)
    parser.add_argument("--corrupt", type=int, default=10)
    parser.add_argument("--duplicates", type=int, default=5)
    parser.add_argument("--size", type=int, default=512, help="pixels a side of each radiograph")
    parser.add_argument("--threads", type=int, default=1, help="OpenMP threads of the app")
    parser.add_argument(
        "--model", default=None, help="an exported model (default: an untrained paper preset)"
    )
    args = parser.parse_args(argv)
    out = Path(args.out)
    shutil.rmtree(out, ignore_errors=True)
    files = make_inputs(out / "input", args.studies, args.corrupt, args.duplicates, args.size)
    model = Path(args.model) if args.model else untrained_model(out / "model")
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "PYTHONPATH": str(REPO)}
    command = [
        sys.executable,
        "-m",
        "pipelines.squid_app",
        "-i",
        str(out / "input"),
        "-o",
        str(out / "output"),
        "-m",
        str(model),
    ]
    load_before, start = os.getloadavg()[0], time.perf_counter()
    run = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - start
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)  # the app: the only child waited for
    summary = json.loads((out / "output" / "run_summary.json").read_text())
    result = {
        "studies": args.studies,
        "corrupt": args.corrupt,
        "duplicates": args.duplicates,
        "size": args.size,
        "threads": args.threads,
        "exit_status": run.returncode,
        "wall_s": round(wall, 1),
        "cpu_s": round(usage.ru_utime + usage.ru_stime, 1),
        "peak_rss_mib": round(usage.ru_maxrss / 1024),
        "load_average": [round(load_before, 1), round(os.getloadavg()[0], 1)],
        "timing": summary.get("timing"),
        **accounting(summary, files),
    }
    (out / "soak.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    if result["missing"]:
        print(f"NOT ACCOUNTED FOR: {result['missing']}", file=sys.stderr)
    return result


if __name__ == "__main__":
    main()
