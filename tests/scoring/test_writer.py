"""The one writer: one CSV layout, one meaning of each image file."""

from __future__ import annotations

import csv

import numpy as np
from PIL import Image

from squid_monai.scoring import (
    CSV_COLUMNS,
    IMAGE_FILES,
    ScoreRecord,
    ScoreWriter,
    save_images,
    unique_stems,
)


def _record(name="a.png", score=0.75, heatmap=True):
    rng = np.random.default_rng(0)
    rec = rng.random((8, 8), dtype=np.float32)
    return ScoreRecord(
        image=name,
        label=1,
        score=score,
        logit=-1.25,
        decision=int(score > 0.5),
        threshold=0.5,
        reconstruction=rec,
        difference=np.abs(rec - 0.5),
        heatmap=rng.random((8, 8)) if heatmap else None,
    )


def test_csv_layout_rows_and_image_files(tmp_path):
    records = [
        _record(),
        ScoreRecord.unreadable("bad.png", "cannot decode", threshold=0.5),
        _record("b.png", 0.25),
    ]
    with ScoreWriter(tmp_path, extra_columns=("sharpness_score",)) as writer:
        records[0].extra["sharpness_score"] = -0.125
        writer.write_all(records, unique_stems([r.image for r in records]))
    assert writer.counts == {
        "images": 3,
        "scored": 2,
        "errors": 1,
        "abnormal": 1,
        "out_of_domain": 0,
        "domain_not_recorded": 0,
    }
    with open(tmp_path / "scores.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert tuple(rows[0]) == (*CSV_COLUMNS, "sharpness_score")
    first, bad, last = rows
    assert float(first["score"]) == 0.75 and first["decision"] == "1" and first["label"] == "1"
    assert first["sharpness_score"] == "-0.125" and last["sharpness_score"] == ""
    assert (
        bad["error"] == "cannot decode" and bad["score"] == bad["decision"] == bad["heatmap"] == ""
    )
    assert first["reconstruction"].endswith("0000_a_reconstruction.png")
    assert first["difference"].endswith("0000_a_difference.png") and first["heatmap"].endswith(
        "0000_a_heatmap.png"
    )
    assert np.asarray(Image.open(first["difference"])).shape == (8, 8)
    assert np.asarray(Image.open(first["heatmap"])).shape == (8, 8, 3)


def test_save_images_names_and_scales(tmp_path):
    record = _record(heatmap=False)
    image = np.full((1, 8, 8), 0.5, np.float32)
    written = save_images(record, tmp_path, image=image)
    assert {k: p.name for k, p in written.items()} == {
        k: IMAGE_FILES[k] for k in ("input", "reconstruction", "difference")
    }
    difference = np.asarray(Image.open(written["difference"]))
    np.testing.assert_array_equal(
        difference, np.round(record.difference * 255).astype(np.uint8)
    )  # no stretching
    assert np.asarray(Image.open(written["input"])).max() == 128


def test_unique_stems():
    assert unique_stems(["a/x.png", "b/x.png", "c/y.nii.gz"]) == ["0000_x", "0001_x", "0002_y"]
