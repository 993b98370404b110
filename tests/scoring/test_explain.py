"""The explanation (``heatmap`` everywhere): the saliency of the reported score, and Grad-CAM
of a discriminator."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from squid_monai.loading import build_scorer
from squid_monai.scoring import (
    CalibratedScorer,
    DiscriminatorGradCAM,
    ScoreSaliency,
    calibrate,
    explainer_for,
    gradcam_heatmap,
    last_conv_layer,
)
from squid_monai.visualize import overlay_heatmap


def _png_size(path) -> tuple[int, int]:
    with Image.open(path) as im:
        return im.size


class _StandInDiscriminator(nn.Module):
    """Small stand-in for SQUID's discriminator: conv-BN-LeakyReLU blocks, flatten, linear."""

    def __init__(self, size: int = 32) -> None:
        super().__init__()
        layers, ch = [], 1
        for out in (8, 16, 16):
            layers += [
                nn.Conv2d(ch, out, 3, stride=2, padding=1),
                nn.BatchNorm2d(out),
                nn.LeakyReLU(0.2, inplace=True),
            ]
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
    disc = nn.Sequential(
        nn.Conv2d(1, 2, 3, padding=1, bias=False), nn.Flatten(), nn.Linear(2 * 24 * 24, 1)
    )
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


def test_explainer_for_a_scorer_and_none_for_torchscript():
    scorer = build_scorer("tiny")
    assert isinstance(explainer_for(scorer), ScoreSaliency)  # the default: the reported score
    assert isinstance(explainer_for(scorer, "discriminator"), DiscriminatorGradCAM)
    assert explainer_for(torch.jit.script(nn.Linear(2, 2))) is None
    assert explainer_for(torch.jit.script(nn.Linear(2, 2)), "discriminator") is None
    with pytest.raises(ValueError, match="explain must be one of"):
        explainer_for(scorer, "logit")


class _RegionScorer(CalibratedScorer):
    """Normality = -(sum of the pixels in rows 2-5, columns 8-11) squared: the score depends on
    that region alone, so its gradient, the saliency, is zero everywhere else."""

    def raw(self, image):
        return {
            "reconstruction": torch.zeros_like(image),
            "region": image[..., 2:6, 8:12].sum((1, 2, 3)),
        }

    def normality(self, out):
        return -(out["region"] ** 2)


def test_score_saliency_is_the_gradient_of_the_score_and_nothing_else():
    image = torch.rand(2, 1, 16, 16)
    image[1, :, 3, 9] = 4.0  # the second image's brightest pixel is in the region
    heat = ScoreSaliency(_RegionScorer(), smoothing=0)(image)
    # d(region sum)^2 / dx = 2 * region sum on every region pixel, 0 elsewhere; min-max scaled
    expected = np.zeros((2, 16, 16), dtype=np.float32)
    expected[:, 2:6, 8:12] = 1.0
    np.testing.assert_array_equal(heat, expected)
    # smoothed (the default): a Gaussian of the same map, peaking in the region, its edges replicated
    smooth = ScoreSaliency(_RegionScorer(), smoothing=1 / 16)(image)  # sigma 1 px
    assert smooth[0].max() == 1.0 and 2 <= np.argwhere(smooth[0] == 1.0)[0][0] < 6
    assert 0 < smooth[0, 1, 9] < 1 and smooth[0, 12:, :4].max() == 0.0  # spreads a little, not far
    with pytest.raises(ValueError, match="smoothing"):
        ScoreSaliency(_RegionScorer(), smoothing=-0.1)

    class Constant(_RegionScorer):
        def normality(self, out):
            return torch.zeros(len(out["region"]))

    with pytest.raises(ValueError, match="does not depend on the input"):
        ScoreSaliency(Constant())(image)


def test_score_saliency_of_squid_follows_its_score_source_and_leaves_the_model_untouched():
    torch.manual_seed(0)
    scorer = build_scorer("tiny")
    size = scorer.generator.image_size
    image = torch.rand(3, 1, size, size)
    modes = [m.training for m in scorer.modules()]
    for source in ("logit", "tile_residual"):
        scorer.set_score_source(source)
        calibrate(scorer, [torch.rand(4, 1, size, size)])
        state = {k: v.clone() for k, v in scorer.state_dict().items()}
        heat = ScoreSaliency(scorer, smoothing=0)(image)
        # independently: autograd of the negated normality, the quantity the score rises with,
        # in eval mode (the scoring path) on a copy
        reference, x = copy.deepcopy(scorer).eval(), image.clone().requires_grad_(True)
        (-reference.normality(reference.raw(x))).sum().backward()
        grad = x.grad.abs()[:, 0].numpy()
        span = grad.max((1, 2), keepdims=True) - grad.min((1, 2), keepdims=True)
        np.testing.assert_allclose(heat, (grad - grad.min((1, 2), keepdims=True)) / span, atol=1e-5)
        for k, v in scorer.state_dict().items():
            assert torch.equal(v, state[k]), k
        assert all(p.grad is None for p in scorer.parameters())
        assert [m.training for m in scorer.modules()] == modes
        # a map does not depend on the rest of the batch (one backward for all: float rounding)
        np.testing.assert_allclose(
            ScoreSaliency(scorer, smoothing=0)(image[1:2])[0], heat[1], atol=1e-5
        )
    # the worst tile's residual is a function of that tile's pixels first: most heat lies there
    tile = size // scorer.generator.grid
    grid = scorer.generator.grid
    z = (scorer._tile_values(scorer(image)["tile_residual"]) - scorer.tile_mean) / scorer.tile_std
    for i, k in enumerate(z.argmax(1).tolist()):
        cells = heat[i].reshape(grid, tile, grid, tile).sum((1, 3)).reshape(-1)
        assert cells.argmax() == k, (cells, k)


def test_export_saliency_of_the_traced_scorer_is_the_eager_heatmap():
    """The deploy app's heat map (the TorchScript export, :class:`ExportSaliency`) means what
    the eager one means: the score's gradient, equal after the per-image scaling."""
    import warnings

    from squid_monai.scoring.explain import ExportSaliency

    torch.manual_seed(0)
    scorer = build_scorer("tiny")
    calibrate(scorer, [torch.rand(8, 1, 32, 32)])
    images = torch.rand(3, 1, 32, 32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(scorer, images[:1], strict=False, check_trace=False)
    exported = ExportSaliency(traced).explain(images)
    np.testing.assert_allclose(exported, ScoreSaliency(scorer)(images), atol=1e-4)
    assert exported.shape == (3, 32, 32) and exported.max() == pytest.approx(1.0)
    constant = torch.jit.script(_Constant())
    with pytest.raises(ValueError, match="through autograd"):
        ExportSaliency(constant)(images)


class _Constant(nn.Module):
    """A model whose score ignores its input: nothing to differentiate."""

    def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"score": torch.zeros(image.shape[0])}
