"""The domain guard (squid_monai.scoring.domain): it fires when a DigitAnatomy model scores a
radiograph and when a chest model scores a DigitAnatomy image, stays quiet on the calibration
normals, travels with the model, and says "domain not recorded" for a model folder older than
it. Untrained tiny scorers are enough: the guard compares thumbnails, not network outputs
(the saturation rule, which reads the score, has its own test)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from squid_monai.artifact import ModelCard, Recipe
from squid_monai.loading import build_scorer, image_size, load_scorer
from squid_monai.scoring import calibrate, score_images
from squid_monai.scoring import domain as guard
from squid_monai.scoring.writer import ScoreWriter
from squid_monai.transforms import preprocess
from squid_monai.workflow import DigitAnatomySource, choose_data
from tests.fixtures.model_folders.make_expected import HERE as OLD_FOLDERS

SIZE = 32  # the tiny preset


def synthetic_radiographs(n: int, size: int = SIZE, seed: int = 0) -> torch.Tensor:
    """(n, 1, size, size) radiograph-like images: a bright body, two dark lung fields, a bright
    mediastinum, each a little different in place, size and exposure, plus noise."""
    g = torch.Generator().manual_seed(seed)
    axis = torch.linspace(-1, 1, size)
    y, x = torch.meshgrid(axis, axis, indexing="ij")
    images = []
    for _ in range(n):
        dx, dy, scale, gain = (torch.rand(4, generator=g) - 0.5) * torch.tensor(
            [0.1, 0.1, 0.2, 0.2]
        )
        body = ((x / (0.9 + scale)) ** 2 + (y / 1.05) ** 2 < 1).float() * 0.6
        lungs = sum(
            (((x - cx - dx) / (0.28 + scale / 2)) ** 2 + ((y - dy) / 0.6) ** 2 < 1).float()
            for cx in (-0.42, 0.42)
        )
        image = body - 0.4 * lungs + 0.3 * ((x - dx).abs() < 0.1).float() * (y > -0.6).float()
        noise = 0.03 * torch.randn(size, size, generator=g)
        images.append((image * (1 + gain) + noise).clamp(0, 1))
    return torch.stack(images)[:, None]


def digit_images(n: int, split: str = "training") -> torch.Tensor:
    source = DigitAnatomySource(0)
    data = (
        source.calibration(SIZE, max_images=n, cache=False)
        if split == "training"
        else source.validation(SIZE, n_normal=n // 2, n_abnormal=n - n // 2, cache=False)
    )
    return torch.stack([torch.as_tensor(data[i]["image"]).float() for i in range(len(data))])


def calibrated(normals: torch.Tensor):
    scorer = build_scorer("tiny")
    calibrate(scorer, [normals])
    return scorer


def verdicts(scorer, images: torch.Tensor) -> list[str]:
    return [r.domain for r in score_images(scorer, images, per_image=False, pixels=False)]


@pytest.fixture(scope="module")
def digit_model():
    return calibrated(digit_images(32))


@pytest.fixture(scope="module")
def chest_model():
    return calibrated(synthetic_radiographs(32))


def test_quiet_on_the_calibration_normals_and_on_unseen_images_of_the_domain(
    digit_model, chest_model
):
    assert set(verdicts(digit_model, digit_images(32))) == {guard.IN_DOMAIN}
    # unseen handwriting, half of it with anomalies: still the model's domain
    assert set(verdicts(digit_model, digit_images(20, "validation"))) == {guard.IN_DOMAIN}
    assert set(verdicts(chest_model, synthetic_radiographs(32))) == {guard.IN_DOMAIN}
    assert set(verdicts(chest_model, synthetic_radiographs(8, seed=1))) == {guard.IN_DOMAIN}


def test_fires_when_a_digitanatomy_model_scores_a_radiograph(digit_model):
    records = score_images(digit_model, synthetic_radiographs(4), per_image=False, pixels=False)
    assert all(r.out_of_domain for r in records), [r.domain for r in records]
    assert all(r.domain_distance > float(digit_model.domain_limit) for r in records)
    assert all("from the nearest calibration normal" in r.domain for r in records)


def test_fires_when_a_chest_model_scores_a_digitanatomy_image(chest_model):
    records = score_images(chest_model, digit_images(8), per_image=False, pixels=False)
    assert all(r.out_of_domain for r in records), [r.domain for r in records]


def test_the_verdict_follows_the_calibration_not_the_image(digit_model, chest_model):
    """The test that shows the guard can fail: the very radiographs it flags for a DigitAnatomy
    model are in domain for a model calibrated on radiographs, and an image built to sit beside
    a calibration normal in thumbnail space passes whatever it holds at full resolution (fine
    detail averages out in 16 x 16 thumbnails: the guard's blind spot, documented)."""
    radiographs = synthetic_radiographs(4, seed=2)
    assert all(v.startswith(guard.OUT_OF_DOMAIN) for v in verdicts(digit_model, radiographs))
    assert set(verdicts(chest_model, radiographs)) == {guard.IN_DOMAIN}
    normal = digit_images(1)
    checkerboard = (torch.arange(SIZE)[:, None] + torch.arange(SIZE)[None]) % 2 * 0.4 - 0.2
    disguised = (normal + checkerboard).clamp(0, 1)  # foreign texture, same 16 x 16 average
    assert (disguised - normal).abs().mean() > 0.1
    assert verdicts(digit_model, disguised) == [guard.IN_DOMAIN]


def test_real_radiographs_on_a_digitanatomy_model_and_digits_on_a_zhanglab_model(
    digit_model, shared_data
):
    folder = shared_data / "zhanglab224"
    if not (folder / "train" / "NORMAL").is_dir():
        pytest.skip(f"{folder}: the ZhangLab subset is absent")
    files = [*sorted((folder / "train" / "NORMAL").iterdir())[:4]]
    files += sorted((shared_data / "dicom").glob("*.dcm"))
    radiographs = torch.stack([torch.as_tensor(preprocess(f, SIZE)).float() for f in files])
    assert all(v.startswith(guard.OUT_OF_DOMAIN) for v in verdicts(digit_model, radiographs))
    data = choose_data(str(folder), val_per_class=10, report_per_class=0)
    cal = data.calibration(SIZE, max_images=64, cache=False)
    chest = calibrated(torch.stack([torch.as_tensor(cal[i]["image"]).float() for i in range(64)]))
    assert set(verdicts(chest, radiographs[:4])) == {guard.IN_DOMAIN}
    assert all(v.startswith(guard.OUT_OF_DOMAIN) for v in verdicts(chest, digit_images(8)))
    assert data.domain(64)["name"] == "chest_xray" and data.domain(64)["dataset"] == "ZhangLab"


def test_a_saturated_score_is_out_of_domain_even_without_a_bank():
    scorer = build_scorer("tiny")
    images = synthetic_radiographs(2)
    assert verdicts(scorer, images) == [guard.NOT_RECORDED] * 2
    logit = scorer(images)["logit"]
    scorer.set_calibration(float(logit.max()) + 100.0, 1.0)  # every image 100 stds below normal
    assert all("score saturated" in v for v in verdicts(scorer, images))


def test_an_old_model_folder_is_domain_not_recorded_never_all_clear(tmp_path):
    folder = OLD_FOLDERS / "squid"
    scorer = load_scorer(folder / "model.pt")
    assert float(scorer.domain_limit) == 0.0
    (record,) = score_images(scorer, synthetic_radiographs(1), pixels=False)
    assert record.domain in (guard.NOT_RECORDED,) or record.out_of_domain
    assert not record.out_of_domain or "saturated" in record.domain
    recipe = Recipe.load(folder)
    card = ModelCard.from_scorer(scorer, SIZE, domain=recipe.domain, family=recipe.family)
    assert card.to_dict()["domain"] == {"name": guard.NOT_RECORDED, "limit": None}
    with ScoreWriter(tmp_path, images=False) as writer:
        writer.write_all([record])
    assert writer.counts["domain_not_recorded"] + writer.counts["out_of_domain"] == 1
    assert "domain" in (tmp_path / "scores.csv").read_text().splitlines()[0]


def test_an_old_model_folder_gets_its_guard_without_training_and_scores_as_before(tmp_path):
    import shutil

    from squid_monai.workflow import add_domain_guard
    from tests.fixtures.model_folders.make_expected import EXPECTED, KEYS, scores

    folder = shutil.copytree(OLD_FOLDERS / "squid", tmp_path / "squid")
    record = add_domain_guard(folder, DigitAnatomySource(0), max_images=32)
    assert record["name"] == "digitanatomy" and Recipe.load(folder).domain == record
    expected = json.loads(EXPECTED.read_text())["squid"]
    got = scores(folder)
    for key in KEYS:
        assert got[key] == pytest.approx(expected[key], rel=1e-5, abs=1e-9)
    scorer = load_scorer(folder / "model.pt")
    assert float(scorer.domain_limit) > 0
    assert set(verdicts(scorer, digit_images(8))) == {guard.IN_DOMAIN}
    assert all(
        v.startswith(guard.OUT_OF_DOMAIN) for v in verdicts(scorer, synthetic_radiographs(4))
    )


def test_the_guard_is_saved_exported_and_small(digit_model, tmp_path):
    torch.save(digit_model.state_dict(), tmp_path / "model.pt")
    Recipe("tiny", domain=DigitAnatomySource().domain(SIZE)).save(tmp_path)
    loaded = load_scorer(tmp_path / "model.pt")
    assert float(loaded.domain_limit) == float(digit_model.domain_limit)
    assert json.loads((tmp_path / "network.json").read_text())["domain"]["name"] == "digitanatomy"
    bank_bytes = loaded.domain_bank.numel() * loaded.domain_bank.element_size()
    assert bank_bytes <= 256 * 1024
    traced = torch.jit.trace(loaded, synthetic_radiographs(1), strict=False)
    images = torch.cat([synthetic_radiographs(2), digit_images(2)])
    torch.testing.assert_close(traced(images)["domain_distance"], loaded(images)["domain_distance"])
    assert [r.domain for r in score_images(traced, images, pixels=False)] == verdicts(
        loaded, images
    )


def test_fit_bank_keeps_at_most_bank_size_rows_and_leaves_each_kept_image_out():
    thumbs = torch.rand(300, guard.THUMBNAIL**2, generator=torch.Generator().manual_seed(0))
    bank, limit, own = guard.fit_bank(thumbs)
    assert bank.shape == (guard.BANK_SIZE, guard.THUMBNAIL**2) and bool((own > 0).all())
    assert float(limit) == pytest.approx(guard.MARGIN * float(torch.quantile(own, guard.QUANTILE)))
    assert float(guard.fit_bank(thumbs[:1])[1]) == 0.0


REFERENCE = Path(__file__).resolve().parents[2] / "bundles" / "squid" / "reference" / "chest_xray"
ZHANGLAB_NORMALS = (
    Path(__file__).resolve().parents[3] / "shared" / "data" / "zhanglab224" / "train" / "NORMAL"
)


@pytest.mark.skipif(
    not (REFERENCE / "model.pt").is_file(), reason="no reference model in this checkout"
)
def test_the_reference_chest_model_knows_its_domain():
    """The shipped chest model records its domain, fires on DigitAnatomy images and, when the
    real data is beside the project, stays quiet on ZhangLab normals."""
    scorer = load_scorer(REFERENCE / "model.pt")
    recipe = Recipe.load(REFERENCE)
    assert recipe.domain["name"] == "chest_xray" and recipe.domain["dataset"] == "ZhangLab"
    size = image_size(recipe)
    digits = DigitAnatomySource(0).calibration(size, max_images=8, cache=False)
    images = torch.stack([torch.as_tensor(digits[i]["image"]).float() for i in range(8)])
    records = score_images(scorer, images, per_image=False, pixels=False)
    assert all(r.out_of_domain for r in records), [r.domain for r in records]
    if not ZHANGLAB_NORMALS.is_dir():
        pytest.skip(f"{ZHANGLAB_NORMALS} absent: the in-domain half needs the real data")
    files = sorted(ZHANGLAB_NORMALS.glob("*.jpeg"))[:16]
    normals = torch.stack([preprocess(str(f), image_size=size) for f in files])
    records = score_images(scorer, normals, per_image=False, pixels=False)
    assert sum(r.out_of_domain for r in records) == 0, [r.domain for r in records]
