"""Datalist builders on generated folder trees: paper protocol, counts, no overlap, --check."""

import csv
import json
import os

import pytest

from squid_monai.data import (
    apply_protocol,
    build_chexpert,
    build_folders,
    build_zhanglab,
    load_datalist,
    write_datalist,
)
from squid_monai.data.datalist import main

NO_REPORT = dict(n_report_normal=0, n_report_abnormal=0)  # the protocol without the report split
SMALL = dict(n_val_normal=4, n_val_abnormal=3, **NO_REPORT)


@pytest.fixture
def zhanglab(tmp_path, write_image):
    """train: 20 normal images of 16 patients (some with 2), 15 pneumonia of 10 patients; test: 3 + 4."""
    root = tmp_path / "zhanglab"
    names = [f"IM-{p:04d}-0001.jpeg" for p in range(10)]
    names += [f"IM-{p:04d}-0001-000{k}.jpeg" for p in range(10, 13) for k in (1, 2)]
    names += [f"NORMAL2-IM-{p}.jpeg" for p in ("0100-0001", "0100-0002", "0101-0001", "0102-0001")]
    for i, name in enumerate(names):
        write_image(root / "train" / "NORMAL" / name, seed=i)
    for i in range(15):
        kind = "bacteria" if i % 2 else "virus"
        write_image(root / "train" / "PNEUMONIA" / f"person{i % 10}_{kind}_{i}.jpeg", seed=100 + i)
    for i in range(3):
        write_image(root / "test" / "NORMAL" / f"IM-{900 + i:04d}-0001.jpeg", seed=200 + i)
    for i in range(4):
        write_image(root / "test" / "PNEUMONIA" / f"person{900 + i}_virus_{i}.jpeg", seed=300 + i)
    return root


def _images(items):
    return [it["image"] for it in items]


def test_zhanglab_paper_protocol(zhanglab):
    datalist = build_zhanglab(zhanglab, seed=0, **SMALL)
    train, val, test = datalist["training"], datalist["validation"], datalist["test"]
    assert len(train) == 20 - 4 and all(it["label"] == 0 for it in train)
    assert sum(it["label"] == 0 for it in val) == 4 and sum(it["label"] == 1 for it in val) == 3
    assert len(test) == 7 and sum(it["label"] for it in test) == 4
    assert not set(_images(train)) & set(_images(val))
    assert not {it["patient"] for it in train} & {it["patient"] for it in val}  # patient-disjoint
    first = train[0]
    assert set(first) == {"image", "label", "source", "class_name", "patient"}
    assert first["source"] == "zhanglab" and first["class_name"] == "NORMAL"
    assert first["patient"].startswith(("IM-", "NORMAL2"))
    assert {it["patient"] for it in val if it["label"] == 1} <= {f"person{i}" for i in range(10)}


def test_protocol_is_seeded(zhanglab):
    a, b = build_zhanglab(zhanglab, seed=0, **SMALL), build_zhanglab(zhanglab, seed=0, **SMALL)
    assert a == b
    c = build_zhanglab(zhanglab, seed=1, **SMALL)
    assert _images(c["validation"]) != _images(a["validation"])


def test_abnormal_fraction_mixes_abnormal_images_into_training(zhanglab):
    datalist = build_zhanglab(zhanglab, seed=0, abnormal_fraction=0.2, **SMALL)
    train = datalist["training"]
    abnormal = [it for it in train if it["label"] == 1]
    assert len(abnormal) == round(0.2 / 0.8 * 16) and len(train) == 16 + len(abnormal)
    val = datalist["validation"]
    assert not set(_images(train)) & set(_images(val))
    assert not {it["patient"] for it in abnormal} & {it["patient"] for it in val}
    with pytest.raises(ValueError, match="abnormal_fraction"):
        build_zhanglab(zhanglab, abnormal_fraction=1.0, **SMALL)


def test_too_few_images_for_validation_is_an_error(zhanglab):
    with pytest.raises(ValueError, match="validation needs 100 normal images"):
        build_zhanglab(zhanglab)


def test_folders_layout_flat_and_split(tmp_path, write_image):
    flat = tmp_path / "flat"
    for i in range(8):
        write_image(flat / "normal" / f"sub{i % 2}" / f"n{i}.png", seed=i)
    for i in range(5):
        write_image(flat / "abnormal" / f"a{i}.png", seed=50 + i)
    (flat / "normal" / "notes.txt").write_text("not an image")
    datalist = build_folders(flat, n_val_normal=2, n_val_abnormal=2, seed=0, **NO_REPORT)
    assert (
        len(datalist["training"]) == 6
        and len(datalist["validation"]) == 4
        and datalist["test"] == []
    )
    assert all(it["source"] == "folders" and it["patient"] == "" for it in datalist["training"])

    split = tmp_path / "split"
    for i in range(6):
        write_image(split / "train" / "normal" / f"n{i}.png", seed=i)
    for i in range(3):
        write_image(split / "train" / "abnormal" / f"a{i}.png", seed=10 + i)
        write_image(split / "test" / ("normal" if i else "abnormal") / f"t{i}.png", seed=20 + i)
    datalist = build_folders(split, n_val_normal=1, n_val_abnormal=1, **NO_REPORT)
    assert (len(datalist["training"]), len(datalist["validation"]), len(datalist["test"])) == (
        5,
        2,
        3,
    )
    with pytest.raises(FileNotFoundError, match="normal/ and abnormal/"):
        build_folders(tmp_path / "nothing")


def test_chexpert_csv(tmp_path, write_image):
    root = tmp_path / "chex"
    header = [
        "Path",
        "Sex",
        "Age",
        "Frontal/Lateral",
        "AP/PA",
        "No Finding",
        "Cardiomegaly",
        "Edema",
    ]
    header.append("Support Devices")
    rows = []
    for p in range(12):
        path = f"CheXpert-v1.0-small/train/patient{p:05d}/study1/view1_frontal.jpg"
        write_image(root / path, seed=p)
        if p < 6:
            labels = ["1.0", "", "", "1.0"]  # normal (devices allowed)
        elif p < 10:
            labels = ["", "1.0" if p % 2 else "", "" if p % 2 else "1.0", ""]  # abnormal
        else:
            labels = ["", "-1.0", "", "1.0"]  # uncertain finding, devices only: left out
        rows.append([path, "F", "50", "Frontal", "PA", *labels])
    base = "CheXpert-v1.0-small/train"
    rows.append(
        [
            f"{base}/patient00000/study1/view2_lateral.jpg",
            "F",
            "50",
            "Lateral",
            "",
            "1.0",
            "",
            "",
            "",
        ]
    )
    rows.append(
        [
            f"{base}/patient00001/study2/view1_frontal.jpg",
            "F",
            "50",
            "Frontal",
            "AP",
            "1.0",
            "",
            "",
            "",
        ]
    )
    csv_path = root / "CheXpert-v1.0-small" / "train.csv"
    with open(csv_path, "w", newline="") as f:
        csv.writer(f).writerows([header, *rows])
    no_test = dict(
        n_test_normal=0, n_test_abnormal=0
    )  # the carved test split: tests/data/test_chexpert_protocol.py
    datalist = build_chexpert(
        csv_path, n_val_normal=2, n_val_abnormal=2, seed=0, **NO_REPORT, **no_test
    )
    assert len(datalist["training"]) == 4 and len(datalist["validation"]) == 4
    assert all(os.path.isfile(it["image"]) for it in datalist["training"] + datalist["validation"])
    assert {it["class_name"] for it in datalist["validation"] if it["label"]} <= {
        "Cardiomegaly",
        "Edema",
    }
    assert datalist["training"][0]["patient"].startswith("patient")
    frontal = build_chexpert(
        csv_path, view="frontal", n_val_normal=2, n_val_abnormal=2, seed=0, **NO_REPORT, **no_test
    )
    assert len(frontal["training"]) == 5  # the AP image joins


def test_written_datalist_is_relative_and_loads_with_monai(zhanglab, tmp_path):
    datalist = build_zhanglab(zhanglab, **SMALL)
    path = write_datalist(datalist, tmp_path / "lists" / "zl.json")
    raw = json.loads(path.read_text())
    assert raw["training"][0]["image"].startswith("../zhanglab/")
    assert raw["counts"]["validation"] == {"normal": 4, "abnormal": 3}
    loaded = load_datalist(path, "validation")
    real = lambda items: [os.path.realpath(p) for p in _images(items)]  # noqa: E731
    assert real(loaded) == real(datalist["validation"])
    absolute = json.loads(
        write_datalist(datalist, tmp_path / "abs.json", absolute=True).read_text()
    )
    assert os.path.isabs(absolute["test"][0]["image"])
    no_test = write_datalist({**datalist, "test": []}, tmp_path / "no_test.json")
    assert load_datalist(no_test, "test") == []


def test_command_line_builds_and_checks(zhanglab, tmp_path, capsys):
    out = tmp_path / "dl.json"
    args = [
        "zhanglab",
        str(zhanglab),
        "-o",
        str(out),
        "--n_val_normal",
        "4",
        "--n_val_abnormal",
        "3",
        "--check",
        "--report_per_class",
        "0",
    ]
    assert main(args) == 0
    assert "checked 30 images: 0 bad" in capsys.readouterr().out
    bad = zhanglab / "train" / "NORMAL" / "IM-0003-0001.jpeg"
    bad.write_bytes(bad.read_bytes()[:40])
    empty = zhanglab / "test" / "PNEUMONIA" / "person900_virus_0.jpeg"
    empty.write_bytes(b"")
    assert main(["check", str(out)]) == 1
    captured = capsys.readouterr()
    assert "checked 30 images: 2 bad" in captured.out
    assert "IM-0003-0001.jpeg: cannot decode image" in captured.err
    assert "person900_virus_0.jpeg: empty file" in captured.err


def test_protocol_keeps_patients_whole(tmp_path):
    pool = [
        {"image": f"p{p}_{k}.png", "label": 0, "patient": f"p{p}"}
        for p in range(6)
        for k in range(3)
    ]
    pool += [{"image": f"a{i}.png", "label": 1, "patient": ""} for i in range(4)]
    datalist = apply_protocol(pool, n_val_normal=6, n_val_abnormal=2, seed=3, **NO_REPORT)
    val_patients = {it["patient"] for it in datalist["validation"] if it["label"] == 0}
    assert len(val_patients) == 2
    assert not val_patients & {it["patient"] for it in datalist["training"]}
    with pytest.raises(ValueError, match="whole patients"):
        apply_protocol(pool, n_val_normal=5, n_val_abnormal=2, **NO_REPORT)
