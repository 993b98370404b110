"""The paper's CheXpert protocol (section 4.2) on a synthetic ``train.csv`` in CheXpert's exact
format: frontal PA images only; a test split of 250 normal + 250 abnormal images carved out of
the training CSV with at least 10 per finding; seeded; disjoint from every other split."""

import csv
import json

import numpy as np
import pytest

from squid_monai.data import build_chexpert
from squid_monai.data.datalist import SPLITS, main

HEADER = [
    "Path",
    "Sex",
    "Age",
    "Frontal/Lateral",
    "AP/PA",
    "No Finding",
    "Enlarged Cardiomediastinum",
    "Cardiomegaly",
    "Lung Opacity",
    "Lung Lesion",
    "Edema",
    "Consolidation",
    "Pneumonia",
    "Atelectasis",
    "Pneumothorax",
    "Pleural Effusion",
    "Pleural Other",
    "Fracture",
    "Support Devices",
]
FINDINGS = HEADER[6:-1]
RARE = "Fracture"  # exactly 10 frontal PA positives: the test must take all of them
SMALL_SPLITS = dict(n_val_normal=20, n_val_abnormal=20, n_report_normal=20, n_report_abnormal=20)


def _row(path, view, ap_pa, no_finding, positives=(), uncertain=(), devices=""):
    labels = ["1.0" if f in positives else "-1.0" if f in uncertain else "" for f in FINDINGS]
    return [path, "Female", "61", view, ap_pa, no_finding, *labels, devices]


@pytest.fixture(scope="module")
def chexpert(tmp_path_factory, write_image):
    """CheXpert-v1.0-small/train.csv: 600 normal and 700 abnormal frontal PA images of 900
    patients (some with several studies, some with both kinds), plus lateral, AP and
    uncertain-only rows that the protocol must leave out."""
    root = tmp_path_factory.mktemp("chexpert")
    rng = np.random.default_rng(0)
    rows, n = [], 0

    def image(patient, study, view="frontal"):
        nonlocal n
        n += 1
        path = f"CheXpert-v1.0-small/train/patient{patient:05d}/study{study}/view1_{view}.jpg"
        write_image(root / path, seed=n, size=8)
        return path

    for i in range(600):  # normals: patients 0..449, the first 150 with a second study
        patient = i % 450
        rows.append(
            _row(
                image(patient, 1 + i // 450), "Frontal", "PA", "1.0", devices="1.0" if i % 7 else ""
            )
        )
    common = [f for f in FINDINGS if f != RARE]
    for i in range(700):  # abnormals: patients 300..899 (300..449 also have normal studies)
        positives = list(rng.choice(common, size=rng.integers(1, 4), replace=False)) + (
            [RARE] if i < 10 else []
        )
        rows.append(
            _row(
                image(300 + i % 600, 3 + i // 600),
                "Frontal",
                "PA",
                "",
                positives,
                uncertain=["Edema"],
            )
        )
    for i in range(
        40
    ):  # left out: lateral views, AP views (a fracture among them), uncertain-only rows
        rows.append(_row(image(i, 1, "lateral"), "Lateral", "", "1.0"))
        rows.append(_row(image(900 + i, 1), "Frontal", "AP", "", [RARE]))
        rows.append(_row(image(950 + i, 1), "Frontal", "PA", "", uncertain=["Pneumonia"]))
    csv_path = root / "CheXpert-v1.0-small" / "train.csv"
    with open(csv_path, "w", newline="") as f:
        csv.writer(f).writerows([HEADER, *rows])
    return csv_path


def _csv_rows(csv_path):
    with open(csv_path, newline="") as f:
        return {row["Path"]: row for row in csv.DictReader(f)}


def _key(image):
    return image.split("CheXpert-v1.0-small/", 1)[1] if "CheXpert-v1.0-small/" in image else image


def test_test_split_is_250_plus_250_with_10_per_finding_and_frontal_pa(chexpert):
    datalist = build_chexpert(chexpert, seed=0, **SMALL_SPLITS)
    test = datalist["test"]
    assert (
        sum(it["label"] == 0 for it in test) == 250 and sum(it["label"] == 1 for it in test) == 250
    )
    rows = _csv_rows(chexpert)
    for it in test:
        row = rows["CheXpert-v1.0-small/" + _key(it["image"])]
        assert (row["Frontal/Lateral"], row["AP/PA"]) == ("Frontal", "PA")
        assert (row["No Finding"] == "1.0") == (it["label"] == 0)
    per_finding = {
        f: sum(f in it["class_name"].split("|") for it in test if it["label"]) for f in FINDINGS
    }
    assert min(per_finding.values()) >= 10 and per_finding[RARE] == 10  # all ten PA fractures
    assert datalist["test_positives_per_finding"] == per_finding
    assert "carved from the training CSV" in datalist["description"]


def test_splits_are_disjoint_and_the_other_normals_train(chexpert):
    datalist = build_chexpert(chexpert, seed=0, **SMALL_SPLITS)
    images = {split: {it["image"] for it in datalist[split]} for split in SPLITS}
    for i, a in enumerate(SPLITS):
        for b in SPLITS[i + 1 :]:
            assert not images[a] & images[b], (a, b)
    test_patients = {it["patient"] for it in datalist["test"]}
    for split in ("training", "validation", "report"):
        assert not test_patients & {it["patient"] for it in datalist[split]}, split
    assert all(it["label"] == 0 for it in datalist["training"])
    # every frontal PA normal trains unless a held-out split took it or its patient (their other images drop)
    rows = _csv_rows(chexpert)
    pa_normals = {p for p, r in rows.items() if r["No Finding"] == "1.0" and r["AP/PA"] == "PA"}
    held_out = {
        it["patient"] for split in ("validation", "report", "test") for it in datalist[split]
    }
    in_splits = {"CheXpert-v1.0-small/" + _key(i) for split in SPLITS for i in images[split]}
    dropped = {p for p in pa_normals if p.split("/")[2] in held_out} - in_splits
    assert pa_normals - dropped <= in_splits and len(dropped) < 100
    assert len(datalist["training"]) == len(pa_normals) - len(dropped) - 250 - 20 - 20


def test_protocol_is_seeded(chexpert):
    a, b = (
        build_chexpert(chexpert, seed=0, **SMALL_SPLITS),
        build_chexpert(chexpert, seed=0, **SMALL_SPLITS),
    )
    assert a == b
    c = build_chexpert(chexpert, seed=1, **SMALL_SPLITS)
    assert {it["image"] for it in c["test"]} != {it["image"] for it in a["test"]}


def test_too_few_positives_of_a_finding_is_an_error(chexpert):
    with pytest.raises(ValueError, match="11 images positive for 'Fracture'.*only 10"):
        build_chexpert(chexpert, test_per_finding=11, **SMALL_SPLITS)


def test_command_line_writes_the_carved_test_split(chexpert, tmp_path, capsys):
    out = tmp_path / "chexpert.json"
    assert (
        main(
            [
                "chexpert",
                str(chexpert),
                "-o",
                str(out),
                "--n_val_normal",
                "20",
                "--n_val_abnormal",
                "20",
                "--report_per_class",
                "20",
            ]
        )
        == 0
    )
    written = json.loads(out.read_text())
    assert written["counts"]["test"] == {"normal": 250, "abnormal": 250}
    assert written["test_positives_per_finding"][RARE] == 10
    assert '"test": {"normal": 250, "abnormal": 250}' in capsys.readouterr().out
