"""``inference.json``: a folder mixing every supported format and a corrupt file, the
per-image PNGs, batch-size invariance, and the input forms."""

from __future__ import annotations

import csv
import json

import nibabel as nib
import numpy as np
import pytest
import torch
from PIL import Image

from squid_monai.inference import Inference, collect_inputs
from squid_monai.loading import load_scorer
from squid_monai.scoring import CSV_COLUMNS, DiscriminatorGradCAM, forward
from squid_monai.transforms import preprocess

from .pipelines.factories import chest_pixels, write_dicom
from .trained_bundle import CONFIGS, IMAGE_SIZE, trained_bundle

GOOD = ("a_chest.png", "b_chest.jpg", "c_chest.dcm", "d_chest.nii.gz", "e_rgb.png")
CORRUPT = "bad.png"
#: every input accounted for, each with the reason that names its problem (issue 39)
UNUSABLE = {
    "f_array.npy": "unsupported file type",
    "g_dot.png": "too small",
    "h_cut.dcm": "truncated pixel data",
}


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return trained_bundle(tmp_path_factory)


@pytest.fixture(scope="module")
def scorer(bundle):
    return load_scorer(bundle.model)


@pytest.fixture(scope="module")
def mixed_folder(tmp_path_factory):
    """Five readable images in four formats (one in a sub-folder), one corrupt PNG, and files
    the readers cannot use: a NumPy array, a 1-pixel PNG, a truncated DICOM."""
    folder = tmp_path_factory.mktemp("mixed")
    pixels = chest_pixels(rows=80, cols=64, bits=12)
    Image.fromarray((pixels >> 4).astype(np.uint8)).save(folder / GOOD[0])
    Image.fromarray((chest_pixels(60, 60, 8, seed=1)).astype(np.uint8)).save(
        folder / GOOD[1], quality=95
    )
    write_dicom(folder / GOOD[2], chest_pixels(72, 72, 12, seed=2))
    (folder / "sub").mkdir()
    nifti = nib.Nifti1Image(chest_pixels(64, 48, 12, seed=3).T.astype(np.float32), np.eye(4))
    nib.save(nifti, folder / "sub" / GOOD[3])
    rgb = np.stack([chest_pixels(50, 50, 8, seed=4).astype(np.uint8)] * 3, axis=-1)
    Image.fromarray(rgb).save(folder / GOOD[4])
    (folder / CORRUPT).write_bytes(b"\x89PNG\r\n\x1a\n but the rest is garbage")
    (folder / ".hidden.png").write_bytes(b"ignored")
    np.save(folder / "f_array.npy", pixels)
    Image.fromarray(np.zeros((1, 1), np.uint8)).save(folder / "g_dot.png")
    whole = write_dicom(folder / "h_cut.dcm", chest_pixels(72, 72, 12, seed=5)).read_bytes()
    (folder / "h_cut.dcm").write_bytes(whole[:-1000])
    return folder


@pytest.fixture(scope="module")
def inference(bundle, mixed_folder, tmp_path_factory):
    """``monai.bundle run`` on inference.json (in-process: same code path as the CLI)."""
    from monai.bundle import run

    out = tmp_path_factory.mktemp("inference_out")
    run(
        config_file=str(CONFIGS / "inference.json"),
        logging_file=False,
        output_dir=str(bundle.output_dir),
        input=str(mixed_folder),
        inference_dir=str(out),
        batch_size=4,
    )
    with open(out / "scores.csv", newline="") as f:
        return out, list(csv.DictReader(f))


def test_folder_of_mixed_formats_is_scored_and_the_corrupt_file_reported(inference, mixed_folder):
    _, rows = inference
    assert tuple(rows[0]) == CSV_COLUMNS
    names = [r["image"].replace(str(mixed_folder) + "/", "") for r in rows]
    assert names == sorted([CORRUPT, *GOOD[:3], GOOD[4], f"sub/{GOOD[3]}", *UNUSABLE])
    by_name = dict(zip(names, rows))
    bad = by_name[CORRUPT]
    assert "cannot decode" in bad["error"] and bad["score"] == "" and bad["decision"] == ""
    for name, reason in UNUSABLE.items():
        assert reason in by_name[name]["error"] and by_name[name]["score"] == "", by_name[name]
    assert "plugin" not in by_name["h_cut.dcm"]["error"]
    assert "constant" not in by_name["g_dot.png"]["error"]
    for row in rows:
        if row is bad or row["image"].endswith(tuple(UNUSABLE)):
            continue
        assert row["error"] == ""
        assert 0.0 < float(row["score"]) < 1.0
        # the bundle's model knows DigitAnatomy; these are chest pictures: the guard says so
        assert row["domain"].startswith("OUT OF DOMAIN"), row
        assert float(row["domain_distance"]) > 0
        assert int(row["decision"]) == int(float(row["score"]) > float(row["threshold"]))


def test_csv_scores_are_the_scorer_on_the_shared_preprocessing(inference, scorer):
    _, rows = inference
    assert float(rows[0]["threshold"]) == pytest.approx(scorer.threshold.item())
    for row in rows:
        if row["error"]:
            continue
        out = scorer(preprocess(row["image"], IMAGE_SIZE)[None])
        assert float(row["score"]) == out["score"].item()  # bitwise: one image per forward
        assert float(row["logit"]) == out["logit"].item()


def test_per_image_pngs_have_the_model_input_shape(inference):
    _, rows = inference
    scored = [r for r in rows if not r["error"]]
    for row in scored:
        reconstruction = np.asarray(Image.open(row["reconstruction"]))
        difference = np.asarray(Image.open(row["difference"]))
        heatmap = np.asarray(Image.open(row["heatmap"]))
        assert reconstruction.shape == difference.shape == (IMAGE_SIZE, IMAGE_SIZE)
        assert heatmap.shape == (IMAGE_SIZE, IMAGE_SIZE, 3)
    assert any(np.asarray(Image.open(r["heatmap"])).std() > 0 for r in scored)
    assert len({r["heatmap"] for r in scored}) == len(scored)  # one file per image, no overwriting


def test_gradcam_heat_map_has_the_image_shape_and_is_not_constant(scorer):
    images = torch.stack(
        [
            preprocess(
                torch.from_numpy(chest_pixels(64, 64, seed=k).astype(np.float32)), IMAGE_SIZE
            )
            for k in range(3)
        ]
    )
    reconstruction = scorer(images)["reconstruction"]
    maps = DiscriminatorGradCAM(scorer.discriminator)(reconstruction)
    assert maps.shape == (3, IMAGE_SIZE, IMAGE_SIZE)
    assert np.isfinite(maps).all()
    # each map is min-max scaled to [0, 1], or all zero where nothing raises the score
    # (Grad-CAM's ReLU); a toy model still finds evidence somewhere
    spans = [(float(m.min()), float(m.max())) for m in maps]
    assert all(span in ((0.0, 1.0), (0.0, 0.0)) for span in spans), spans
    assert any(m.std() > 0 for m in maps)


def test_scores_are_identical_whatever_the_batch_size(scorer, mixed_folder, tmp_path):
    items = collect_inputs(mixed_folder)
    results = []
    for batch_size in (1, 4):
        out = Inference(
            scorer, tmp_path / f"b{batch_size}", IMAGE_SIZE, batch_size=batch_size, images=False
        )
        out.run(items)
        with open(tmp_path / f"b{batch_size}" / "scores.csv", newline="") as f:
            results.append(
                [(r["image"], r["score"], r["logit"], r["error"]) for r in csv.DictReader(f)]
            )
    assert results[0] == results[1]


def test_batched_forward_agrees_to_float_rounding(scorer):
    images = torch.rand(5, 1, IMAGE_SIZE, IMAGE_SIZE, generator=torch.Generator().manual_seed(0))
    one_by_one = forward(scorer, images, per_image=True)
    batched = forward(scorer, images, per_image=False)
    torch.testing.assert_close(batched["logit"], one_by_one["logit"], atol=1e-5, rtol=0)
    torch.testing.assert_close(
        batched["reconstruction"], one_by_one["reconstruction"], atol=1e-5, rtol=0
    )


def test_input_forms(mixed_folder, tmp_path):
    files = [str(mixed_folder / n) for n in (GOOD[0], GOOD[2])]
    assert collect_inputs(files) == [{"image": f} for f in files]
    listing = tmp_path / "images.txt"
    listing.write_text(f"# two images\n{files[0]}\n\n{GOOD[2]}\n")
    (tmp_path / GOOD[2]).write_bytes((mixed_folder / GOOD[2]).read_bytes())
    assert collect_inputs(listing) == [{"image": files[0]}, {"image": str(tmp_path / GOOD[2])}]
    datalist = tmp_path / "datalist.json"
    datalist.write_text(json.dumps({"test": [{"image": GOOD[2], "label": 1}], "training": []}))
    assert collect_inputs(datalist) == [{"image": str(tmp_path / GOOD[2]), "label": 1}]
    with pytest.raises(ValueError, match="no 'validation' list"):
        collect_inputs(datalist, datalist_key="validation")
    with pytest.raises(FileNotFoundError, match="input not found"):
        collect_inputs(tmp_path / "nope")
    with pytest.raises(ValueError, match="no input"):
        collect_inputs(None)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no files"):
        collect_inputs(tmp_path / "empty")
