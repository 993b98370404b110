"""The report split: a second labelled set carved out of the training data, disjoint from
training and validation, that leaves the protocol's validation split unchanged."""

import json

import numpy as np
import pytest

from squid_monai.data import (
    build_folders,
    build_zhanglab,
    digitanatomy_split,
    load_datalist,
    write_datalist,
)
from squid_monai.workflow import DigitAnatomySource, choose_data


@pytest.fixture
def zhanglab(tmp_path):
    """train: 260 normal images of 230 patients, 250 pneumonia of 200 patients (names only:
    the builders do not decode)."""
    root = tmp_path / "zhanglab"
    for cls in ("NORMAL", "PNEUMONIA"):
        (root / "train" / cls).mkdir(parents=True)
    for p in range(230):
        for k in range(1 + (p < 30)):
            (root / "train" / "NORMAL" / f"IM-{p:04d}-000{k + 1}.jpeg").touch()
    for i in range(250):
        (root / "train" / "PNEUMONIA" / f"person{i % 200}_bacteria_{i}.jpeg").touch()
    return root


def _paths(items):
    return {it["image"] for it in items}


def _check_disjoint(datalist):
    train, val, report = datalist["training"], datalist["validation"], datalist["report"]
    for a, b in ((train, val), (train, report), (val, report)):
        assert not _paths(a) & _paths(b)
        assert not {it["patient"] for it in a if it["patient"]} & {
            it["patient"] for it in b if it["patient"]
        }


def test_zhanglab_report_split_default_100_per_class_disjoint_and_seeded(zhanglab):
    datalist = build_zhanglab(zhanglab, seed=0)
    report = datalist["report"]
    assert (
        sum(it["label"] == 0 for it in report) == 100
        and sum(it["label"] == 1 for it in report) == 100
    )
    assert len(datalist["training"]) == 260 - 200 and all(
        it["label"] == 0 for it in datalist["training"]
    )
    _check_disjoint(datalist)
    assert build_zhanglab(zhanglab, seed=0) == datalist  # reproducible
    other = build_zhanglab(zhanglab, seed=1)
    assert _paths(other["report"]) != _paths(report)
    _check_disjoint(other)


@pytest.mark.parametrize("seed", [0, 3])
def test_adding_the_report_split_leaves_validation_unchanged(zhanglab, seed):
    without = build_zhanglab(zhanglab, seed=seed, n_report_normal=0, n_report_abnormal=0)
    with_report = build_zhanglab(zhanglab, seed=seed, n_report_normal=20, n_report_abnormal=20)
    assert with_report["validation"] == without["validation"]
    assert without["report"] == []
    # training loses exactly the report's patients
    assert _paths(with_report["training"]) == _paths(without["training"]) - _paths(
        with_report["report"]
    ) - {
        it["image"]
        for it in without["training"]
        if it["patient"] in {r["patient"] for r in with_report["report"]}
    }
    _check_disjoint(with_report)


def test_folders_report_split_and_datalist_json(tmp_path):
    root = tmp_path / "folders"
    for cls, n in (("normal", 30), ("abnormal", 20)):
        (root / cls).mkdir(parents=True)
        for i in range(n):
            (root / cls / f"{cls}{i}.png").touch()
    datalist = build_folders(
        root, n_val_normal=5, n_val_abnormal=5, n_report_normal=4, n_report_abnormal=4, seed=2
    )
    assert (len(datalist["training"]), len(datalist["validation"]), len(datalist["report"])) == (
        21,
        10,
        8,
    )
    _check_disjoint(datalist)
    path = write_datalist(datalist, tmp_path / "dl.json")
    assert json.loads(path.read_text())["counts"]["report"] == {"normal": 4, "abnormal": 4}
    assert len(load_datalist(path, "report")) == 8
    # the workflow reads it from the datalist file and from the folder alike
    for splits in (
        choose_data(None, str(path)).splits,
        choose_data(str(root), None, seed=2, val_per_class=5, report_per_class=4).splits,
    ):
        assert len(splits["report"]) == 8
        assert not _paths(splits["report"]) & (
            _paths(splits["training"]) | _paths(splits["validation"])
        )
    with pytest.raises(ValueError, match="report needs 100"):
        build_folders(root, n_val_normal=5, n_val_abnormal=5)


def _keys(items):
    return [np.asarray(it["image"]).tobytes() for it in items]


def test_digitanatomy_report_split_is_fixed_and_disjoint_from_validation_and_test():
    report = digitanatomy_split(6, 6, seed=0, split="report")
    assert [it["label"] for it in report] == [0] * 6 + [1] * 6
    assert _keys(report) == _keys(digitanatomy_split(6, 6, seed=0, split="report"))  # fixed seed
    assert _keys(report) != _keys(digitanatomy_split(6, 6, seed=1, split="report"))
    held_out = set(_keys(digitanatomy_split(6, 6, seed=0, split="validation")))
    held_out |= set(_keys(digitanatomy_split(6, 6, seed=0, split="test")))
    assert not set(_keys(report)) & held_out
    assert len(set(_keys(report))) == 12


def test_validation_dataset_reads_the_report_split():
    report = DigitAnatomySource(seed=0).validation(
        96, split="report", n_normal=2, n_abnormal=2, cache=False
    )
    expected = digitanatomy_split(2, 2, seed=0, split="report")
    assert len(report) == 4
    assert np.allclose(np.asarray(report[3]["image"]), expected[3]["image"])
    validation = DigitAnatomySource(seed=0).validation(96, n_normal=2, n_abnormal=2, cache=False)
    assert np.allclose(
        np.asarray(validation[0]["image"]), digitanatomy_split(2, 2, seed=0)[0]["image"]
    )
