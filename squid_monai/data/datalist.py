"""MONAI datalists (``training`` / ``validation`` / ``report`` / ``test``) from real chest X-ray collections.

Layouts:

- ``zhanglab``: ``ROOT/train|test/NORMAL|PNEUMONIA/*.jpeg`` (Kermany et al. 2018). Patient
  ids come from the file names (``IM-0115-0001.jpeg`` -> ``IM-0115``,
  ``NORMAL2-IM-1427-0001.jpeg`` -> ``NORMAL2-IM-1427``, ``person123_bacteria_45.jpeg`` ->
  ``person123``).
- ``folders``: ``ROOT/normal/`` and ``ROOT/abnormal/`` (searched recursively), or
  ``ROOT/train|test/normal|abnormal/``. No patient ids.
- ``chexpert``: a CheXpert-style CSV (``Path``, ``Frontal/Lateral``, ``AP/PA``, ``No Finding``
  and finding columns). Normal = ``No Finding`` is 1; abnormal = ``No Finding`` not 1 and at
  least one finding (other than ``Support Devices``) positive (1); uncertain-only rows are
  left out. ``--view pa`` (default, the paper's CheXpert setting) keeps frontal PA images,
  ``--view frontal`` all frontal ones. Patient ids from ``patientNNNNN`` in the path. The
  test split is the paper's (section 4.2), carved out of the training CSV before anything
  else: 250 normal images (whole patients) and 250 abnormal ones of which at least 10 are
  positive for each finding column (rarest finding first, then the rest at random), with
  the seed's own random stream; every other image of a test patient is dropped, so the
  test is patient-disjoint from the rest. ``--test_csv`` (e.g. CheXpert's ``valid.csv``)
  gives an official test split instead, and nothing is carved.

Paper protocol (default): training = normal images only; validation = 100 normal + 100
abnormal images carved from the training split with a fixed seed, never trained on;
test = the official test split when present (CheXpert: carved, see above). Validation is patient-disjoint from
training where patient ids are known: whole patients are drawn until the counts are met
exactly. ``--abnormal_fraction f`` adds abnormal images (from patients not in validation
or report) so that they make up the fraction ``f`` of the training set (the paper's
robustness study).

Report split (``report``, not in the paper): a second labelled set of ``--report_per_class``
normal + abnormal images (default 100 each) carved out of the training split the same way,
drawn with the same seed *after* the validation images (so the validation split is exactly
the one of the protocol without it), patient-disjoint from training and validation and
removed from training. The code never chooses a checkpoint or threshold on it, and by the
project's rule (docs/EVIDENCE.md) it chooses no setting either: it confirms, once, what
validation chose, while the official test split is kept for the final word.
``--report_per_class 0`` gives the protocol without it.

Items: ``{"image", "label" (0 normal, 1 abnormal), "source", "class_name", "patient"}``
(``patient`` is "" when unknown: every item has every key, so batches collate). Image
paths are written relative to the datalist file's folder (the base directory
``monai.data.load_decathlon_datalist`` uses by default), or absolute with ``--absolute``.

``--check`` (or the ``check`` command on an existing datalist) runs every image through
the real inference preprocessing and lists every bad one with its file and reason; the
exit code is 1 when any is bad.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import sys
from collections import defaultdict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from monai.data import load_decathlon_datalist

from squid_monai.transforms import SUPPORTED_EXTENSIONS, RadiographError, preprocess

SPLITS = ("training", "validation", "report", "test")
#: The paper's validation set: 100 normal + 100 abnormal images from the training split.
PAPER_VALIDATION_NORMAL = 100
PAPER_VALIDATION_ABNORMAL = 100
#: The report split: this many normal and abnormal images, also from the training split.
REPORT_PER_CLASS = 100
DEFAULT_SEED = 0
#: Size used by ``check``: a problem that shows at any size shows at this one.
CHECK_IMAGE_SIZE = 128

_ZHANGLAB_CLASSES = {"NORMAL": 0, "PNEUMONIA": 1}
_FOLDER_CLASSES = {"normal": 0, "abnormal": 1}
_ZHANGLAB_PATIENT = re.compile(r"^((?:NORMAL2-)?IM-\d+|person\d+)", re.IGNORECASE)
_CHEXPERT_PATIENT = re.compile(r"(patient\d+)")
#: The paper's CheXpert test set (section 4.2), carved out of the training CSV.
CHEXPERT_TEST_NORMAL = 250
CHEXPERT_TEST_ABNORMAL = 250
CHEXPERT_TEST_PER_FINDING = 10
_CHEXPERT_NOT_FINDINGS = {
    "Path",
    "Sex",
    "Age",
    "Frontal/Lateral",
    "AP/PA",
    "No Finding",
    "Support Devices",
}


# ----------------------------------------------------------------------------- builders
def build_zhanglab(root: str | os.PathLike, **protocol) -> dict:
    """Datalist for the ZhangLab layout; ``protocol`` as in :func:`apply_protocol`."""
    root = Path(root)
    if not (root / "train").is_dir():
        raise FileNotFoundError(f"{root}: no train/ folder (expected train|test/NORMAL|PNEUMONIA)")

    def scan(split: str) -> list[dict]:
        items = []
        for class_name, label in _ZHANGLAB_CLASSES.items():
            for path in _image_files(root / split / class_name):
                match = _ZHANGLAB_PATIENT.match(path.name)
                items.append(
                    _item(path, label, "zhanglab", class_name, match.group(1) if match else "")
                )
        return items

    test = scan("test") if (root / "test").is_dir() else []
    return apply_protocol(scan("train"), test, **protocol)


def build_folders(root: str | os.PathLike, **protocol) -> dict:
    """Datalist for ``ROOT/normal|abnormal`` or ``ROOT/train|test/normal|abnormal``."""
    root = Path(root)

    def scan(base: Path) -> list[dict]:
        return [
            _item(path, label, "folders", class_name, "")
            for class_name, label in _FOLDER_CLASSES.items()
            for path in _image_files(base / class_name, recursive=True)
        ]

    if (root / "train").is_dir():
        train, test = scan(root / "train"), scan(root / "test") if (root / "test").is_dir() else []
    elif (root / "normal").is_dir():
        train, test = scan(root), []
    else:
        raise FileNotFoundError(
            f"{root}: expected normal/ and abnormal/ folders (or train/ and test/ containing them)"
        )
    return apply_protocol(train, test, **protocol)


def build_from_folder(root: str | os.PathLike, **protocol) -> dict:
    """Datalist of a ``--dataset_dir``: the ZhangLab layout if ``train/NORMAL`` is there, else
    :func:`build_folders`."""
    build = build_zhanglab if (Path(root) / "train" / "NORMAL").is_dir() else build_folders
    return build(root, **protocol)


def build_chexpert(
    csv_path: str | os.PathLike,
    image_root: str | os.PathLike | None = None,
    view: str = "pa",
    test_csv: str | os.PathLike | None = None,
    n_test_normal: int = CHEXPERT_TEST_NORMAL,
    n_test_abnormal: int = CHEXPERT_TEST_ABNORMAL,
    test_per_finding: int = CHEXPERT_TEST_PER_FINDING,
    **protocol,
) -> dict:
    """Datalist from a CheXpert-style CSV; ``image_root`` is the folder the CSV paths start from
    (default: the CSV's folder if the first path exists there, else its parent, as in the
    official release where paths start with ``CheXpert-v1.0-small/``). The test split is
    carved out of the CSV by the paper's rule (module docstring) unless ``test_csv`` is given."""
    train, findings = _read_chexpert(Path(csv_path), image_root, view)
    if test_csv:
        test, carved = _read_chexpert(Path(test_csv), image_root, view)[0], None
    else:
        rng = np.random.default_rng(
            [protocol.get("seed", DEFAULT_SEED), 1]
        )  # its own stream of the seed
        test, train = _carve_chexpert_test(
            train, findings, n_test_normal, n_test_abnormal, test_per_finding, rng
        )
        carved = {f: sum(f in it["class_name"].split("|") for it in test) for f in findings}
    datalist = apply_protocol(train, test, **protocol)
    if carved is not None:
        datalist["description"] = datalist["description"].replace(
            "test = official test split", "test = carved from the training CSV (paper section 4.2)"
        )
        datalist["test_positives_per_finding"] = carved
    return datalist


def apply_protocol(
    train_pool: Sequence[dict],
    test: Sequence[dict] = (),
    n_val_normal: int = PAPER_VALIDATION_NORMAL,
    n_val_abnormal: int = PAPER_VALIDATION_ABNORMAL,
    seed: int = DEFAULT_SEED,
    abnormal_fraction: float = 0.0,
    n_report_normal: int = REPORT_PER_CLASS,
    n_report_abnormal: int = REPORT_PER_CLASS,
) -> dict:
    """Split a labelled training pool by the paper's protocol plus the report split (see the
    module docstring)."""
    if not 0.0 <= abnormal_fraction < 1.0:
        raise ValueError(f"abnormal_fraction must be in [0, 1), got {abnormal_fraction}")
    rng = np.random.default_rng(seed)
    normals = [it for it in train_pool if it["label"] == 0]
    abnormals = [it for it in train_pool if it["label"] == 1]
    val_normal, rest_normal = _draw_patients(normals, n_val_normal, rng, "normal")
    val_abnormal, rest_abnormal = _draw_patients(abnormals, n_val_abnormal, rng, "abnormal")
    val_patients = {it["patient"] for it in val_normal + val_abnormal if it["patient"]}
    rest_normal = _without_patients(rest_normal, val_patients)
    # the report split: drawn after validation, so validation is that of the protocol without
    # it; with no report images the random stream is untouched (the protocol without it exactly)
    report_normal, report_abnormal = [], []
    if n_report_normal or n_report_abnormal:
        report_normal, rest_normal = _draw_patients(
            rest_normal, n_report_normal, rng, "normal", "report"
        )
        report_abnormal, rest_abnormal = _draw_patients(
            _without_patients(rest_abnormal, val_patients),
            n_report_abnormal,
            rng,
            "abnormal",
            "report",
        )
    held_out = val_patients | {
        it["patient"] for it in report_normal + report_abnormal if it["patient"]
    }
    rest_normal = _without_patients(rest_normal, held_out)
    training = list(rest_normal)
    if abnormal_fraction > 0:
        n_extra = int(round(abnormal_fraction / (1.0 - abnormal_fraction) * len(rest_normal)))
        pool = _without_patients(rest_abnormal, held_out)
        if n_extra > len(pool):
            raise ValueError(
                f"abnormal_fraction {abnormal_fraction} needs {n_extra} abnormal training images, only {len(pool)} left"
            )
        training += [pool[i] for i in sorted(rng.choice(len(pool), size=n_extra, replace=False))]
    return {
        "description": "SQUID paper protocol: training = normals (plus abnormal_fraction abnormals), "
        "validation and report carved from the training split, test = official test split",
        "seed": seed,
        "abnormal_fraction": abnormal_fraction,
        "training": _sorted(training),
        "validation": _sorted(val_normal + val_abnormal),
        "report": _sorted(report_normal + report_abnormal),
        "test": _sorted(test),
    }


# ----------------------------------------------------------------------------- writing, reading, checking
def write_datalist(datalist: dict, path: str | os.PathLike, absolute: bool = False) -> Path:
    """Write ``datalist`` as JSON, image paths relative to the file's folder unless ``absolute``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    base = path.parent.resolve()
    out = dict(datalist)

    def where(image: str) -> str:
        full = Path(image).resolve()
        return str(full) if absolute else os.path.relpath(full, base)

    for split in SPLITS:
        out[split] = [{**it, "image": where(it["image"])} for it in datalist.get(split, [])]
    out["counts"] = {split: _counts(out[split]) for split in SPLITS}
    path.write_text(json.dumps(out, indent=1))
    return path


def load_datalist(path: str | os.PathLike, split: str = "training") -> list[dict]:
    """The items of one split, image paths resolved against the datalist's folder (MONAI's rule)."""
    with open(path, encoding="utf-8") as f:
        if json.load(f).get(split) == []:
            return []  # MONAI's loader fails on an empty list
    return load_decathlon_datalist(os.fspath(path), is_segmentation=False, data_list_key=split)


def check_items(
    items: Sequence[dict], image_size: int = CHECK_IMAGE_SIZE, workers: int | None = None
) -> list[tuple[str, str]]:
    """Run every item's image through the inference preprocessing; return ``(file, reason)`` of the bad ones."""

    def check(item: dict) -> tuple[str, str] | None:
        try:
            preprocess(item["image"], image_size)
        except RadiographError as err:
            return (err.path, err.reason)
        return None

    with ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 1) as pool:
        return [bad for bad in pool.map(check, items) if bad is not None]


# ----------------------------------------------------------------------------- command line
def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "check":
        items = [it for split in SPLITS for it in _load_split_or_empty(args.datalist, split)]
        return _report_check(items, args.workers)
    protocol = dict(
        n_val_normal=args.n_val_normal,
        n_val_abnormal=args.n_val_abnormal,
        seed=args.seed,
        abnormal_fraction=args.abnormal_fraction,
        n_report_normal=args.report_per_class,
        n_report_abnormal=args.report_per_class,
    )
    if args.command == "zhanglab":
        datalist = build_zhanglab(args.root, **protocol)
    elif args.command == "folders":
        datalist = build_folders(args.root, **protocol)
    else:
        datalist = build_chexpert(
            args.csv,
            image_root=args.image_root,
            view=args.view,
            test_csv=args.test_csv,
            n_test_normal=args.test_normal,
            n_test_abnormal=args.test_abnormal,
            test_per_finding=args.test_per_finding,
            **protocol,
        )
    path = write_datalist(datalist, args.output, absolute=args.absolute)
    counts = {split: _counts(datalist[split]) for split in SPLITS}
    print(f"wrote {path}: {json.dumps(counts)}")
    if args.check:
        return _report_check([it for split in SPLITS for it in datalist[split]], args.workers)
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m squid_monai.data.datalist",
        description="Write a MONAI datalist JSON (training / validation / report / test) by the SQUID paper protocol, "
        "or check an existing one.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--output", "-o", required=True, help="datalist JSON to write")
    common.add_argument("--n_val_normal", type=int, default=PAPER_VALIDATION_NORMAL)
    common.add_argument("--n_val_abnormal", type=int, default=PAPER_VALIDATION_ABNORMAL)
    common.add_argument("--seed", type=int, default=DEFAULT_SEED)
    common.add_argument(
        "--report_per_class",
        type=int,
        default=REPORT_PER_CLASS,
        help="normal and abnormal images of the report split (default %(default)s; 0: none)",
    )
    common.add_argument(
        "--abnormal_fraction",
        type=float,
        default=0.0,
        help="fraction of the training set made of abnormal images (default 0: normals only)",
    )
    common.add_argument("--absolute", action="store_true", help="write absolute image paths")
    common.add_argument(
        "--check", action="store_true", help="also load every image and report bad ones"
    )
    common.add_argument("--workers", type=int, default=None, help="threads for --check")
    p = sub.add_parser("zhanglab", parents=[common], help="ROOT/train|test/NORMAL|PNEUMONIA")
    p.add_argument("root")
    p = sub.add_parser(
        "folders", parents=[common], help="ROOT/normal|abnormal or ROOT/train|test/normal|abnormal"
    )
    p.add_argument("root")
    p = sub.add_parser("chexpert", parents=[common], help="CheXpert-style CSV")
    p.add_argument("csv")
    p.add_argument("--image_root", default=None, help="folder the CSV's paths are relative to")
    p.add_argument("--view", choices=("pa", "frontal"), default="pa")
    p.add_argument(
        "--test_csv",
        default=None,
        help="official test CSV (e.g. CheXpert valid.csv) instead of the test carved from the CSV",
    )
    p.add_argument(
        "--test_normal", type=int, default=CHEXPERT_TEST_NORMAL, help="carved normal test images"
    )
    p.add_argument(
        "--test_abnormal",
        type=int,
        default=CHEXPERT_TEST_ABNORMAL,
        help="carved abnormal test images",
    )
    p.add_argument(
        "--test_per_finding",
        type=int,
        default=CHEXPERT_TEST_PER_FINDING,
        help="carved abnormal test images positive for each finding, at least",
    )
    p = sub.add_parser(
        "check", help="load every image of an existing datalist; exit 1 if any is bad"
    )
    p.add_argument("datalist")
    p.add_argument("--workers", type=int, default=None)
    return parser


def _report_check(items: Sequence[dict], workers: int | None) -> int:
    bad = check_items(items, workers=workers)
    for path, reason in bad:
        print(f"BAD {path}: {reason}", file=sys.stderr)
    print(f"checked {len(items)} images: {len(bad)} bad")
    return 1 if bad else 0


def _load_split_or_empty(path: str, split: str) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        if split not in json.load(f):
            return []
    return load_datalist(path, split)


# ----------------------------------------------------------------------------- helpers
def _item(path: Path, label: int, source: str, class_name: str, patient: str) -> dict:
    return {
        "image": str(path),
        "label": int(label),
        "source": source,
        "class_name": class_name,
        "patient": patient,
    }


def _image_files(folder: Path, recursive: bool = False) -> list[Path]:
    if not folder.is_dir():
        return []
    candidates = folder.rglob("*") if recursive else folder.iterdir()
    exts = tuple(SUPPORTED_EXTENSIONS)
    return sorted(
        p
        for p in candidates
        if p.is_file() and p.name.lower().endswith(exts) and not p.name.startswith(".")
    )


def _without_patients(items: list[dict], patients: set) -> list[dict]:
    return [it for it in items if not it["patient"] or it["patient"] not in patients]


def _draw_patients(
    items: list[dict], n: int, rng: np.random.Generator, what: str, split: str = "validation"
) -> tuple[list[dict], list[dict]]:
    """Draw exactly ``n`` items made of whole patients (an unknown patient is its own group)."""
    if n > len(items):
        raise ValueError(
            f"{split} needs {n} {what} images, the training split has only {len(items)} left"
        )
    groups: dict[str, list[int]] = defaultdict(list)
    for i, it in enumerate(items):
        groups[it["patient"] or f"#item{i}"].append(i)
    chosen: list[int] = []
    for key in (list(groups)[j] for j in rng.permutation(len(groups))):
        if len(chosen) == n:
            break
        if len(chosen) + len(groups[key]) <= n:
            chosen.extend(groups[key])
    if len(chosen) != n:
        raise ValueError(f"cannot draw exactly {n} {what} {split} images from whole patients")
    picked = set(chosen)
    return [items[i] for i in sorted(picked)], [it for i, it in enumerate(items) if i not in picked]


def _carve_chexpert_test(
    pool: list[dict],
    findings: Sequence[str],
    n_normal: int,
    n_abnormal: int,
    per_finding: int,
    rng: np.random.Generator,
) -> tuple[list[dict], list[dict]]:
    """``(test, rest)``: the paper's CheXpert test set out of ``pool`` (module docstring); the
    rest holds no image of a test patient."""
    normals = [it for it in pool if it["label"] == 0]
    abnormals = [it for it in pool if it["label"] == 1]
    test, _ = _draw_patients(normals, n_normal, rng, "normal", "test")
    has = [set(it["class_name"].split("|")) for it in abnormals]
    chosen: list[int] = []
    rarest_first = (
        sorted(findings, key=lambda f: (sum(f in h for h in has), f)) if n_abnormal else []
    )
    for finding in rarest_first:
        taken = set(chosen)
        left = [i for i, h in enumerate(has) if finding in h and i not in taken]
        need = per_finding - sum(finding in has[i] for i in chosen)
        if need > len(left):
            raise ValueError(
                f"test needs {per_finding} images positive for {finding!r}, "
                f"the training CSV has only {sum(finding in h for h in has)}"
            )
        chosen += [left[j] for j in rng.permutation(len(left))[: max(need, 0)]]
    taken = set(chosen)
    others = [i for i in range(len(abnormals)) if i not in taken]
    if not len(chosen) <= n_abnormal <= len(chosen) + len(others):
        raise ValueError(
            f"cannot carve {n_abnormal} abnormal test images with {per_finding} per finding "
            f"({len(chosen)} needed for the findings, {len(abnormals)} abnormal images)"
        )
    chosen += [others[j] for j in rng.permutation(len(others))[: n_abnormal - len(chosen)]]
    test += [abnormals[i] for i in sorted(chosen)]
    images, patients = {it["image"] for it in test}, {it["patient"] for it in test if it["patient"]}
    rest = [it for it in _without_patients(pool, patients) if it["image"] not in images]
    return test, rest


def _read_chexpert(csv_path: Path, image_root, view: str) -> tuple[list[dict], list[str]]:
    """The kept images of a CheXpert-style CSV, and its finding columns."""
    with open(csv_path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    if not rows or "Path" not in rows[0] or "No Finding" not in rows[0]:
        raise ValueError(
            f"{csv_path}: not a CheXpert-style CSV (needs 'Path' and 'No Finding' columns)"
        )
    root = Path(image_root) if image_root else _chexpert_root(csv_path, rows[0]["Path"])
    findings = [c for c in rows[0] if c not in _CHEXPERT_NOT_FINDINGS]
    items = []
    for row in rows:
        if row.get("Frontal/Lateral", "Frontal") != "Frontal":
            continue
        if view == "pa" and row.get("AP/PA", "") != "PA":
            continue
        if _is_positive(row["No Finding"]):
            label, class_name = 0, "No Finding"
        else:
            positive = [c for c in findings if _is_positive(row.get(c, ""))]
            if not positive:
                continue  # only uncertain or blank labels: neither clearly normal nor abnormal
            label, class_name = 1, "|".join(positive)
        match = _CHEXPERT_PATIENT.search(row["Path"])
        items.append(
            _item(
                root / row["Path"], label, "chexpert", class_name, match.group(1) if match else ""
            )
        )
    return items, findings


def _chexpert_root(csv_path: Path, first: str) -> Path:
    return csv_path.parent if (csv_path.parent / first).exists() else csv_path.parent.parent


def _is_positive(value: str) -> bool:
    try:
        return float(value) == 1.0
    except ValueError:
        return False


def _sorted(items: list[dict]) -> list[dict]:
    return sorted(items, key=lambda it: (it["label"], it["image"]))


def _counts(items: Sequence[dict]) -> dict:
    return {
        "normal": sum(it["label"] == 0 for it in items),
        "abnormal": sum(it["label"] == 1 for it in items),
    }


if __name__ == "__main__":
    raise SystemExit(main())
