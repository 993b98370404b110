"""DigitAnatomy: reproducible, every anomaly type present, anomalies confined to their cells."""

import json

import numpy as np
import pytest
import torch

from squid_monai.data import (
    ANOMALY_TYPES,
    DigitAnatomy,
    DigitAnatomyDataset,
    digitanatomy_split,
    load_digit_bank,
    make_dataset,
)
from squid_monai.data.digitanatomy import FLIPPABLE_DIGITS, main
from squid_monai.transforms import train_transforms

CELL = 32


def _cells(image):
    return [
        image[0, r * CELL : (r + 1) * CELL, c * CELL : (c + 1) * CELL]
        for r in range(3)
        for c in range(3)
    ]


def test_training_dataset_is_reproducible_and_normal_only():
    ds = DigitAnatomyDataset(length=5, seed=0)
    item = ds[3]
    assert item["image"].shape == (1, 96, 96) and item["image"].dtype == np.float32
    assert 0.0 <= item["image"].min() and item["image"].max() <= 1.0 and item["image"].max() > 0.9
    assert item["label"] == 0 and item["anomaly"] == "normal" and item["cells"] == ""
    np.testing.assert_array_equal(DigitAnatomyDataset(length=5, seed=0)[3]["image"], item["image"])
    assert not np.array_equal(ds[2]["image"], item["image"])
    assert not np.array_equal(DigitAnatomyDataset(length=5, seed=1)[3]["image"], item["image"])
    ds.set_epoch(1)
    assert not np.array_equal(ds[3]["image"], item["image"])  # a new epoch, new images
    assert all(c.max() > 0.5 for c in _cells(item["image"]))  # all nine digits drawn
    with pytest.raises(IndexError):
        ds[5]


def test_training_dataset_applies_the_transform():
    ds = DigitAnatomyDataset(length=2, seed=0, transform=train_transforms(96))
    image = ds[0]["image"]
    assert isinstance(image, torch.Tensor) and image.shape == (1, 96, 96)


@pytest.mark.parametrize("kind", ANOMALY_TYPES)
def test_each_anomaly_changes_exactly_its_cells(kind):
    generator = DigitAnatomy(load_digit_bank("validation"))
    for seed in range(5):
        normal = generator.sample(np.random.default_rng(seed), "normal")
        abnormal = generator.sample(np.random.default_rng(seed), kind)
        assert abnormal["label"] == 1 and abnormal["anomaly"] == kind
        affected = [int(c) for c in abnormal["cells"].split(",")]
        assert len(affected) >= (2 if kind == "misordered" else 1)
        for index, (a, b) in enumerate(zip(_cells(normal["image"]), _cells(abnormal["image"]))):
            changed = not np.array_equal(a, b)
            assert changed == (index in affected), (kind, seed, index, affected)
            if index in affected and kind == "missing":
                assert b.max() == 0
            if index in affected and kind == "flipped":
                assert index + 1 in FLIPPABLE_DIGITS
                np.testing.assert_array_equal(b, a[:, ::-1])


def test_validation_split_is_fixed_and_has_every_type():
    items = digitanatomy_split(n_normal=3, n_abnormal=8, seed=4, split="validation")
    assert [it["label"] for it in items] == [0] * 3 + [1] * 8
    assert {it["anomaly"] for it in items[3:]} == set(ANOMALY_TYPES)
    again = digitanatomy_split(n_normal=3, n_abnormal=8, seed=4, split="validation")
    assert all(
        np.array_equal(a["image"], b["image"]) and a["cells"] == b["cells"]
        for a, b in zip(items, again)
    )
    test = digitanatomy_split(n_normal=3, n_abnormal=8, seed=4, split="test")
    assert not np.array_equal(items[0]["image"], test[0]["image"])


def test_training_and_evaluation_handwriting_are_disjoint():
    banks = {split: load_digit_bank(split) for split in ("training", "validation", "test")}
    for digit in range(10):
        seen = {s.tobytes() for s in banks["training"].samples[digit]}
        for split in ("validation", "test"):
            assert len(banks[split].samples[digit]) > 20
            assert not seen & {s.tobytes() for s in banks[split].samples[digit]}


def test_split_items_flow_through_the_bundle_dataset():
    items = digitanatomy_split(n_normal=2, n_abnormal=4, seed=0, split="validation")
    ds = make_dataset(items, image_size=96, train=False)
    batch = torch.utils.data.default_collate([ds[i] for i in range(len(ds))])
    assert batch["image"].shape == (6, 1, 96, 96) and batch["label"].tolist() == [0, 0, 1, 1, 1, 1]
    assert torch.allclose(batch["image"][0], torch.from_numpy(items[0]["image"]), atol=0.02)


def test_mnist_files_can_replace_the_bundled_digits(tmp_path):
    import gzip

    rng = np.random.default_rng(0)
    for prefix, n in (("train", 40), ("t10k", 40)):
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labels = np.arange(n, dtype=np.uint8) % 10
        with gzip.open(tmp_path / f"{prefix}-images-idx3-ubyte.gz", "wb") as f:
            f.write(
                bytes([0, 0, 8, 3])
                + b"".join(int(d).to_bytes(4, "big") for d in images.shape)
                + images.tobytes()
            )
        with open(tmp_path / f"{prefix}-labels-idx1-ubyte", "wb") as f:
            f.write(bytes([0, 0, 8, 1]) + n.to_bytes(4, "big") + labels.tobytes())
    bank = load_digit_bank("test", mnist_dir=tmp_path)
    assert bank.source == "mnist" and sum(len(s) for s in bank.samples.values()) == 20
    item = DigitAnatomyDataset(length=1, mnist_dir=tmp_path)[0]
    assert item["image"].shape == (1, 96, 96)


def test_command_line_writes_pngs_datalist_and_preview(tmp_path):
    assert (
        main(
            [
                "--output_dir",
                str(tmp_path),
                "--n_train",
                "3",
                "--n_validation_normal",
                "2",
                "--n_validation_abnormal",
                "4",
                "--n_test_normal",
                "1",
                "--n_test_abnormal",
                "4",
                "--seed",
                "1",
            ]
        )
        == 0
    )
    datalist = json.loads((tmp_path / "datalist.json").read_text())
    assert [len(datalist[s]) for s in ("training", "validation", "test")] == [3, 6, 5]
    assert {it["anomaly"] for it in datalist["test"]} == {"normal", *ANOMALY_TYPES}
    assert all(
        (tmp_path / it["image"]).is_file()
        for s in ("training", "validation", "test")
        for it in datalist[s]
    )
    assert (tmp_path / "preview.png").is_file()
    ds = make_dataset(tmp_path / "datalist.json", image_size=96, train=False, split="validation")
    assert ds[5]["image"].shape == (1, 96, 96) and ds[5]["label"] == 1
