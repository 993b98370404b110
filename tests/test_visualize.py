"""Plots write real PNGs; image grids; difference maps; Grad-CAM of a discriminator."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from squid_monai.visualize import (
    DiscriminatorGradCAM,
    difference_map,
    gradcam_heatmap,
    image_grid,
    last_conv_layer,
    overlay_heatmap,
    plot_confusion_matrix,
    plot_roc,
    plot_score_histogram,
    tile_images,
)


def _png_size(path) -> tuple[int, int]:
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(path) as im:
        im.load()
        return im.size


def _labels_scores():
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1], 20)
    return labels, rng.normal(labels, 1.0)


def test_plots_write_nonempty_pngs(tmp_path):
    labels, scores = _labels_scores()
    paths = [
        plot_roc(labels, scores, tmp_path / "roc.png", title="val"),
        plot_score_histogram(labels, scores, tmp_path / "sub" / "hist.png", {"val": 0.5, "normal-only": 1.2}),
        plot_confusion_matrix(labels, scores, 0.5, tmp_path / "cm.png"),
    ]
    for p in paths:
        w, h = _png_size(p)
        assert w > 100 and h > 100 and p.stat().st_size > 2000
    with pytest.raises(ValueError, match="only normal"):
        plot_roc(np.zeros(4), np.arange(4.0), tmp_path / "bad.png")


def test_no_pyplot_figures_leak(tmp_path):
    import matplotlib.pyplot as plt

    before = plt.get_fignums()
    labels, scores = _labels_scores()
    plot_roc(labels, scores, tmp_path / "roc.png")
    image_grid([torch.rand(2, 1, 8, 8)], ["x"], tmp_path / "g.png")
    assert plt.get_fignums() == before


def test_tile_images_shape_and_content():
    a = torch.rand(10, 1, 12, 16)
    b = np.random.rand(5, 1, 12, 16)
    grid = tile_images([a, b, a], max_images=8, pad=2)
    # columns limited by the smallest batch (5), 3 rows, 2-pixel gaps
    assert grid.shape == (3 * 12 + 2 * 2, 5 * 16 + 4 * 2)
    np.testing.assert_allclose(grid[14:26, 18:34], b[1, 0], rtol=1e-6)
    assert np.isnan(grid[12:14]).all()
    assert tile_images([a], max_images=3).shape == (12, 3 * 16 + 2 * 2)
    with pytest.raises(ValueError, match="image size"):
        tile_images([a, torch.rand(2, 1, 8, 8)])


def test_image_grid_png_grows_with_rows(tmp_path):
    x = torch.rand(6, 1, 16, 16)
    r = torch.rand(6, 1, 16, 16)
    one = image_grid([x], ["input"], tmp_path / "one.png", max_images=4)
    three = image_grid([x, r, difference_map(x, r)], ["input", "student", "|difference|"],
                       tmp_path / "three.png", max_images=4, value_ranges=[(0, 1), (0, 1), None])
    (_, h1), (w3, h3) = _png_size(one), _png_size(three)
    assert h3 > 2 * h1 and w3 > 100
    with pytest.raises(ValueError, match="row titles"):
        image_grid([x, r], ["input"], tmp_path / "bad.png")


def test_difference_map():
    x, r = torch.rand(2, 1, 4, 4), torch.rand(2, 1, 4, 4)
    d = difference_map(x, r)
    assert isinstance(d, torch.Tensor) and torch.equal(d, (x - r).abs())
    dn = difference_map(x.numpy(), r.numpy())
    assert isinstance(dn, np.ndarray) and np.allclose(dn, d.numpy())
    with pytest.raises(ValueError, match="shapes differ"):
        difference_map(x, r[:1])


class _StandInDiscriminator(nn.Module):
    """Small stand-in for SQUID's discriminator: conv-BN-LeakyReLU blocks, flatten, linear."""

    def __init__(self, size: int = 32) -> None:
        super().__init__()
        layers, ch = [], 1
        for out in (8, 16, 16):
            layers += [nn.Conv2d(ch, out, 3, stride=2, padding=1), nn.BatchNorm2d(out), nn.LeakyReLU(0.2, inplace=True)]
            ch = out
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(ch * (size // 8) ** 2, 1)

    def forward(self, x):
        return self.head(torch.flatten(self.features(x), 1))


def _trained_bn_discriminator():
    torch.manual_seed(0)
    disc = _StandInDiscriminator()
    disc.train()
    with torch.no_grad():
        disc(torch.rand(8, 1, 32, 32))  # non-trivial running statistics
    return disc


def test_gradcam_shape_range_and_model_untouched(tmp_path):
    disc = _trained_bn_discriminator()  # left in train mode on purpose
    state = {k: v.clone() for k, v in disc.state_dict().items()}  # weights, running stats, counters
    n_hooks = sum(len(m._forward_hooks) + len(m._backward_hooks) for m in disc.modules())
    image = torch.rand(3, 1, 32, 32)

    heat = gradcam_heatmap(disc, image)
    assert last_conv_layer(disc) == "features.6"
    assert isinstance(heat, np.ndarray) and heat.shape == (3, 32, 32)
    assert heat.min() >= 0.0 and heat.max() <= 1.0
    assert all(h.std() > 1e-3 for h in heat)  # not constant
    for k, v in disc.state_dict().items():
        assert torch.equal(v, state[k]), k
    assert disc.training and all(m.training for m in disc.modules())
    assert all(p.grad is None for p in disc.parameters())
    assert sum(len(m._forward_hooks) + len(m._backward_hooks) for m in disc.modules()) == n_hooks
    assert disc.features[2].inplace  # MONAI's hook set-up would switch this off on the original

    # eval-mode scoring path: each map depends on its own image only, and is reproducible
    single = gradcam_heatmap(disc.eval(), image[1:2], target_layer="features.3")
    batch = DiscriminatorGradCAM(disc, target_layer="features.3")(image)
    np.testing.assert_allclose(single[0], batch[1], atol=1e-5)

    png = overlay_heatmap(image[0], heat[0], tmp_path / "overlay.png")
    assert _png_size(png)[0] > 100
    with pytest.raises(ValueError, match="not found"):
        gradcam_heatmap(disc, image, target_layer="nope")


def test_gradcam_localises_what_lowers_the_logit():
    # a discriminator whose logit falls with brightness: a bright square makes the image look abnormal
    disc = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1, bias=False), nn.Flatten(), nn.Linear(2 * 24 * 24, 1))
    with torch.no_grad():
        disc[0].weight.fill_(1.0)
        disc[2].weight.fill_(-1.0)
        disc[2].bias.zero_()
    image = torch.zeros(1, 1, 24, 24)
    image[..., 4:10, 14:20] = 1.0
    heat = gradcam_heatmap(disc, image)[0]
    peak = np.unravel_index(heat.argmax(), heat.shape)
    assert 4 <= peak[0] < 10 and 14 <= peak[1] < 20
    assert heat[18:, :8].max() == 0.0
    # the "normal" direction has no positive evidence here: an all-zero map, not NaN
    normal = gradcam_heatmap(disc, image, target="normal")
    assert np.isfinite(normal).all() and normal.max() == 0.0
