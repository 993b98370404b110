"""Calibration refuses normals whose score is not finite, saying how many, and leaves the
scorer as it was: a NaN mean would make every later score NaN. Every family."""

from __future__ import annotations

import pytest
import torch

from squid_monai.methods import family_names, get_family
from squid_monai.scoring import calibrate


def _scorer(family: str):
    torch.manual_seed(0)
    scorer = get_family(family).build_scorer("tiny").eval()
    size = get_family(family).get_config("tiny")["image_size"]
    size = size[0] if isinstance(size, (list, tuple)) else size
    return scorer, torch.rand(4, 1, size, size)


@pytest.mark.parametrize("family", family_names())
def test_a_non_finite_normal_is_refused_and_nothing_is_calibrated(family):
    scorer, images = _scorer(family)
    before = {k: v.clone() for k, v in scorer.state_dict().items()}
    images[2] = float("nan")
    with pytest.raises(ValueError, match=r"calibration: 1 of 4 normal images give a non-finite"):
        calibrate(scorer, [images])
    after = scorer.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k].nan_to_num(), after[k].nan_to_num()) for k in before)


def test_finite_normals_calibrate():
    scorer, images = _scorer("squid")
    mean, std = calibrate(scorer, [images])
    assert torch.isfinite(torch.tensor([mean, std])).all() and std > 0


def test_a_diverged_model_is_refused_and_left_as_it_was():
    scorer, images = _scorer("squid")
    with torch.no_grad():
        next(scorer.parameters()).fill_(float("nan"))
    before = {k: v.clone() for k, v in scorer.state_dict().items()}
    with pytest.raises(ValueError, match=r"calibration: 4 of 4 normal images give a non-finite"):
        calibrate(scorer, [images])
    after = scorer.state_dict()
    assert all(torch.equal(before[k].nan_to_num(), after[k].nan_to_num()) for k in before)
