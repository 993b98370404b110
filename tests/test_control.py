"""The control ensemble (sharpness + pixel nearest neighbour, each standardised on the normal
calibration images, summed): its statistics come from the normals alone, and its AUC is the
one a hand computation gives."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from squid_monai.baselines import ControlEnsemble, nearest_other_normal
from squid_monai.metrics import roc_auc


def _images(values) -> torch.Tensor:
    """(N, 1, 3, 3) images: one number per image at the centre, 0 around it, so that the
    interior Laplacian is ``-4 * centre`` and the Laplacian energy ``16 * centre ** 2``."""
    x = torch.zeros(len(values), 1, 3, 3)
    x[:, 0, 1, 1] = torch.tensor(values, dtype=torch.float32)
    return x


def test_statistics_are_those_of_the_calibration_normals_alone():
    normals = torch.rand(6, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    tests = (
        torch.rand(5, 1, 8, 8, generator=torch.Generator().manual_seed(1)) * 3
    )  # far from the normals
    control = ControlEnsemble(normals)
    scores = control.parts(tests)
    # by hand, from the normals only (a normal's own copy left out of its nearest neighbour)
    flat = normals.flatten(1).double()
    lap = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]], dtype=torch.float64)[
        None, None
    ]
    sharp = -torch.nn.functional.conv2d(normals.double(), lap).pow(2).mean((1, 2, 3))
    knn = torch.stack(
        [min(((flat[i] - flat[j]) ** 2).mean() for j in range(6) if j != i) for i in range(6)]
    )
    np.testing.assert_allclose(
        control.mean.numpy(), [sharp.mean().item(), knn.mean().item()], rtol=1e-5
    )
    np.testing.assert_allclose(
        control.std.numpy(), [sharp.std().item(), knn.std().item()], rtol=1e-4
    )
    expected = (scores["sharpness"] - sharp.mean().float()) / sharp.std().float() + (
        scores["pixel_knn"] - knn.mean().float()
    ) / knn.std().float()
    torch.testing.assert_close(scores["control"], expected, rtol=1e-4, atol=1e-5)
    # a test image never moves the statistics, nor another test image's score: leak-free
    with_outlier = control.parts(torch.cat([tests, torch.full((1, 1, 8, 8), 50.0)]))["control"][:5]
    torch.testing.assert_close(with_outlier, scores["control"])
    pooled = ControlEnsemble(
        torch.cat([normals, tests])
    )  # what a leak of the test images would give
    assert not torch.allclose(pooled.parts(tests)["control"], scores["control"], rtol=1e-2)


def test_nearest_other_normal_leaves_the_image_itself_out():
    normals = _images([0.0, 0.1, 0.4])
    # centre-only images: mean squared difference = difference ** 2 / 9
    np.testing.assert_allclose(
        nearest_other_normal(normals).numpy(), [0.01 / 9, 0.01 / 9, 0.09 / 9], rtol=1e-5
    )
    with pytest.raises(ValueError, match="at least two"):
        nearest_other_normal(normals[:1])


def test_ensemble_auc_equals_a_hand_computation():
    normals = _images([0.2, 0.3, 0.6])  # calibration
    tests = _images([0.5, 0.2, 0.0, 0.35])  # two normal, two abnormal (flat; between the normals)
    labels = [0, 0, 1, 1]
    # by hand: sharpness = -16 c^2; pixel kNN = min_n (c - n)^2 / 9
    c, n = np.array([0.5, 0.2, 0.0, 0.35]), np.array([0.2, 0.3, 0.6])
    sharp, own_sharp = -16 * c**2, -16 * n**2
    knn = np.array([min((ci - n) ** 2) / 9 for ci in c])
    own_knn = np.array([min((n[i] - np.delete(n, i)) ** 2) / 9 for i in range(3)])
    z = (sharp - own_sharp.mean()) / own_sharp.std(ddof=1) + (knn - own_knn.mean()) / own_knn.std(
        ddof=1
    )
    pairs = [(p, q) for p in range(4) for q in range(4) if labels[p] == 1 and labels[q] == 0]
    hand_auc = sum(1.0 if z[p] > z[q] else 0.5 if z[p] == z[q] else 0.0 for p, q in pairs) / len(
        pairs
    )
    control = ControlEnsemble(normals).ensemble(tests)
    np.testing.assert_allclose(control.numpy(), z, rtol=1e-4)
    assert roc_auc(labels, control.numpy()) == pytest.approx(hand_auc)
    assert (
        hand_auc == 0.75
    )  # the flat image above both normals, 0.35 between them (z -1.08, -0.50, -0.08)
