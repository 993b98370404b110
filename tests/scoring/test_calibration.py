"""Calibration refuses normals whose outputs are not finite, saying how many and which output,
and leaves the scorer as it was: a NaN mean would make every later score NaN."""

from __future__ import annotations

import pytest
import torch

from squid_monai.loading import build_scorer
from squid_monai.scoring import calibrate


def test_a_non_finite_normal_is_refused_and_nothing_is_calibrated():
    torch.manual_seed(0)
    scorer = build_scorer("tiny").eval()
    size = scorer.generator.image_size
    images = torch.rand(4, 1, size, size)
    before = {k: v.clone() for k, v in scorer.state_dict().items()}
    images[2, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match=r"calibration: 1 of 4 normal images give a non-finite"):
        calibrate(scorer, [images])
    after = scorer.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before if before[k].dtype != torch.bool)


def test_finite_normals_calibrate():
    torch.manual_seed(0)
    scorer = build_scorer("tiny").eval()
    size = scorer.generator.image_size
    mean, std = calibrate(scorer, [torch.rand(4, 1, size, size)])
    assert torch.isfinite(torch.tensor([mean, std])).all() and std > 0
