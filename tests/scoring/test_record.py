"""The per-image record: the decision rule, the bad-file policy, the difference and the heat map."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from squid_monai.loading import build_scorer
from squid_monai.scoring import (
    DiscriminatorGradCAM,
    ScoreRecord,
    decide,
    difference_map,
    forward,
    read_image,
    score_images,
)

SIZE = 32  # the tiny preset


@pytest.fixture(scope="module")
def scorer():
    torch.manual_seed(0)
    scorer = build_scorer("tiny")
    scorer.set_calibration(0.0, 1.0, threshold=0.5)
    return scorer


def test_difference_map():
    x, r = torch.rand(2, 1, 4, 4), torch.rand(2, 1, 4, 4)
    d = difference_map(x, r)
    assert isinstance(d, torch.Tensor) and torch.equal(d, (x - r).abs())
    dn = difference_map(x.numpy(), r.numpy())
    assert isinstance(dn, np.ndarray) and np.allclose(dn, d.numpy())
    with pytest.raises(ValueError, match="shapes differ"):
        difference_map(x, r[:1])


def test_decide_is_score_above_threshold_in_float64():
    score = torch.tensor([0.2, 0.5, 0.7], dtype=torch.float32)
    assert decide(score, 0.5).tolist() == [0, 0, 1]
    assert decide(score, torch.tensor(0.1)).tolist() == [1, 1, 1]
    # a JSON threshold is not rounded to float32 before the comparison
    just_below = float(torch.tensor(0.9, dtype=torch.float32)) - 1e-12
    assert decide(torch.tensor([0.9]), just_below).tolist() == [1]


def test_records_carry_score_logit_decision_threshold_and_pixels(scorer):
    images = torch.rand(3, 1, SIZE, SIZE, generator=torch.Generator().manual_seed(1))
    out = scorer(images)
    records = score_images(
        scorer,
        images,
        names=["a", "b", "c"],
        labels=[0, 1, "1"],
        explainer=DiscriminatorGradCAM(scorer.discriminator),
    )
    assert [r.image for r in records] == ["a", "b", "c"] and [r.label for r in records] == [0, 1, 1]
    for i, r in enumerate(records):
        assert r.scored and r.error is None
        assert r.score == pytest.approx(out["score"][i].item(), abs=1e-6)
        assert r.logit == pytest.approx(out["logit"][i].item(), abs=1e-5)
        assert r.threshold == pytest.approx(0.5) and r.decision == int(r.score > 0.5)
        assert r.reconstruction.shape == r.difference.shape == r.heatmap.shape == (SIZE, SIZE)
        np.testing.assert_allclose(
            r.difference, np.abs(images[i, 0].numpy() - r.reconstruction), atol=1e-6
        )
        assert 0.0 <= r.heatmap.min() and r.heatmap.max() <= 1.0
    table = score_images(scorer, images, pixels=False, threshold=0.0)
    assert table[0].image == "#0" and table[0].reconstruction is None and table[0].heatmap is None
    assert all(r.decision == 1 for r in table)


def test_per_image_forward_matches_batched_to_rounding(scorer):
    images = torch.rand(4, 1, SIZE, SIZE, generator=torch.Generator().manual_seed(2))
    one, batched = forward(scorer, images, per_image=True), forward(scorer, images, per_image=False)
    torch.testing.assert_close(one["logit"], batched["logit"], atol=1e-5, rtol=0)


def test_bad_file_policy(tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    image, error = read_image(bad, SIZE)
    assert image is None and "cannot decode" in error and str(bad) not in error
    record = ScoreRecord.unreadable(bad, error, label="0", threshold=0.5)
    assert (
        not record.scored and record.score is None and record.decision is None and record.label == 0
    )
    good, none = read_image(torch.rand(40, 30), SIZE)
    assert none is None and good.shape == (1, SIZE, SIZE) and good.dtype == torch.float32
