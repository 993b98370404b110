"""The project's transforms beside MONAI's nearest ones, none of which gives the trained
models' inputs bit for bit: what is the same and what changes is measured here, and each
project transform says why in its docstring (intensity: float32 percentiles on 16-bit images
and unscaled edge cases; resize: another anti-aliasing; augmentation: other draws).
Real images: ``../shared/data/zhanglab224`` (skipped when absent); synthetic ones always."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from monai.transforms import Affine, RandAffine, Resize, ScaleIntensityRangePercentiles

from squid_monai.data.digitanatomy import DigitAnatomyDataset
from squid_monai.transforms import (
    LoadRadiograph,
    RadiographError,
    RandScaleTranslate,
    ResizeRadiograph,
    RobustScaleIntensity,
)
from squid_monai.transforms.spatial import PAPER_SCALE_DELTA


def monai_percentiles():
    return ScaleIntensityRangePercentiles(
        lower=0.5, upper=99.5, b_min=0.0, b_max=1.0, clip=True, dtype=np.float32
    )


def synthetic_images() -> list[torch.Tensor]:
    """8-bit images and DigitAnatomy: where MONAI's percentile scaling is the same."""
    g = torch.Generator().manual_seed(0)
    digits = DigitAnatomyDataset(16, seed=0)
    return [(torch.rand(1, 200, 160, generator=g) * 255).round() for _ in range(8)] + [
        torch.as_tensor(digits[i]["image"]).float() for i in range(16)
    ]


def real_images(shared_data, every: int = 400) -> list[torch.Tensor]:
    files = sorted((shared_data / "zhanglab224").glob("*/*/*"))[::every]
    if not files:
        pytest.skip(f"no images under {shared_data / 'zhanglab224'}")
    load = LoadRadiograph()
    return [load(f) for f in files]


def assert_same_as_monai_percentiles(images):
    ours, theirs = RobustScaleIntensity(), monai_percentiles()
    for image in images:
        assert torch.equal(ours(image), torch.as_tensor(theirs(image)))


def test_intensity_is_monai_percentile_scaling_on_8_bit_and_digitanatomy_images():
    assert_same_as_monai_percentiles(synthetic_images())


def test_intensity_is_monai_percentile_scaling_on_8_bit_radiographs(shared_data):
    assert_same_as_monai_percentiles(real_images(shared_data))


def test_monai_percentiles_move_the_window_on_12_and_16_bit_images():
    """float32 ``torch.quantile`` against float64 interpolation: a float32 step of the window,
    not the trained models' inputs (RobustScaleIntensity's docstring)."""
    y, x = np.mgrid[0:48, 0:40]
    ramp = torch.as_tensor((y * 40 + x) / (48 * 40 - 1) * 48000.0, dtype=torch.float32)[None]
    ramp[0, :12, :10] = 60000.0
    ramp = ramp.round()
    ours, theirs = RobustScaleIntensity()(ramp), torch.as_tensor(monai_percentiles()(ramp))
    difference = (ours - theirs).abs()
    assert 0 < float(difference.max()) < 1e-6
    g = torch.Generator().manual_seed(0)
    twelve_bit = [(torch.rand(1, 200, 160, generator=g) * 4095).round() for _ in range(4)]
    assert (
        0
        < max(
            float((RobustScaleIntensity()(x) - monai_percentiles()(x)).abs().max())
            for x in twelve_bit
        )
        < 1e-6
    )
    noise = torch.rand(1, 96, 128, generator=g)
    assert float((RobustScaleIntensity()(noise) - monai_percentiles()(noise)).abs().max()) < 1e-6


def test_intensity_guards_what_monai_leaves_unscaled():
    """An empty percentile window: MONAI divides by zero (a warning) and returns the image
    shifted, not in [0, 1]; the project falls back to min-max. A constant image is an error
    naming the file, where MONAI returns zeros."""
    image = torch.zeros(1, 40, 40)
    image[0, 0, :3] = 200.0  # 3 of 1600 pixels: both percentiles are 0
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        theirs = torch.as_tensor(monai_percentiles()(image))
    assert float(theirs.max()) == 200.0  # not scaled
    ours = RobustScaleIntensity()(image)
    assert float(ours.max()) == 1.0 and float(ours.min()) == 0.0
    with pytest.raises(RadiographError, match="constant image"):
        RobustScaleIntensity()(torch.full((1, 8, 8), 7.0))


def resize_difference(images) -> float:
    ours, theirs = ResizeRadiograph(64), Resize((64, 64), mode="bilinear", anti_aliasing=True)
    return max(float((ours(x) - torch.as_tensor(theirs(x))).abs().max()) for x in images)


def test_monai_antialiased_resize_gives_another_image_synthetic():
    """MONAI's Gaussian anti-aliasing is not torch's antialiased bilinear: the inputs would
    change (ResizeRadiograph's docstring)."""
    g = torch.Generator().manual_seed(0)
    images = [RobustScaleIntensity()(x) for x in synthetic_images()]
    images += [torch.rand(1, 96, 128, generator=g) for _ in range(4)]
    assert resize_difference(images) > 0.05
    same_size = images[0][:, :64, :64]
    assert torch.equal(ResizeRadiograph(64)(same_size), same_size)  # nothing to resize


def test_monai_antialiased_resize_gives_another_image_on_radiographs(shared_data):
    images = [RobustScaleIntensity()(x) for x in real_images(shared_data)]
    assert resize_difference(images) > 0.05


@pytest.mark.parametrize("scale,shift", [(1.03, (2.4, -3.7)), (0.96, (-5.0, 1.2)), (1.0, (3, 0))])
def test_scale_translate_has_monai_affine_geometry(scale, shift):
    """Same geometry as MONAI's ``Affine`` (to float round-off): the differences are the draws
    (RandScaleTranslate's docstring)."""
    image = RobustScaleIntensity()(synthetic_images()[12])
    augment = RandScaleTranslate(prob=1.0)
    augment.scale_factor, augment.translation = scale, np.array(shift, dtype=float)
    augment._do_transform = True
    ours = augment(image, randomize=False)
    theirs = Affine(
        scale_params=(1 / scale, 1 / scale),
        translate_params=tuple(-s / scale for s in shift),
        padding_mode="zeros",
        mode="bilinear",
        image_only=True,
    )(image)
    assert float((ours - torch.as_tensor(theirs)).abs().max()) < 1e-5


def test_rand_affine_scales_each_axis_on_its_own():
    """RandAffine draws one factor per axis: anisotropic, where the paper scales isotropically."""
    augment = RandAffine(prob=1.0, scale_range=(PAPER_SCALE_DELTA, PAPER_SCALE_DELTA))
    augment.set_random_state(0)
    augment.randomize()
    rows, cols = augment.rand_affine_grid.scale_params
    assert rows != cols
