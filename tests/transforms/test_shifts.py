"""Each acquisition shift of the shift test against its definition (docs/SHIFT_TEST.md), the
raw-units wrapper, the per-image seeding, its place in the preprocessing, and the training-time
``global_augment`` switch."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import ndimage

from squid_monai.transforms import train_transforms
from squid_monai.transforms.augment import global_augment_transforms
from squid_monai.transforms.shifts import (
    SHIFTS,
    AcquisitionShiftd,
    apply_shift,
    image_seed,
    shifted_transforms,
)


def _image(size: int = 64, seed: int = 0) -> torch.Tensor:
    """A (1, size, size) image in (0.1, 0.9): a smooth ramp with texture."""
    g = torch.Generator().manual_seed(seed)
    ramp = torch.linspace(0.2, 0.8, size)[None, :].expand(size, size)
    return (ramp + 0.1 * torch.rand(size, size, generator=g) - 0.05).clamp(0.1, 0.9)[None]


def test_every_documented_shift_is_defined_and_keeps_the_shape():
    assert list(SHIFTS) == [
        "contrast_down",
        "contrast_up",
        "gamma_0.67",
        "gamma_1.5",
        "blur",
        "sharpen",
        "gauss_noise",
        "poisson_noise",
        "down_up",
        "jpeg",
        "crop",
        "zoom_out",
    ]
    x = _image()
    for name, shift in SHIFTS.items():
        out = torch.as_tensor(shift(x, seed=1))
        assert out.shape == x.shape and not torch.allclose(out, x, atol=1e-4), name


@pytest.mark.parametrize("name, factor", [("contrast_down", 0.7), ("contrast_up", 1.3)])
def test_contrast_scales_about_the_mean(name, factor):
    x = _image()
    torch.testing.assert_close(
        torch.as_tensor(SHIFTS[name](x)), x.mean() + factor * (x - x.mean()), rtol=1e-5, atol=1e-6
    )


@pytest.mark.parametrize("name, g", [("gamma_0.67", 0.67), ("gamma_1.5", 1.5)])
def test_gamma_is_a_power_of_the_normalised_image(name, g):
    x = _image()
    low, span = x.min(), x.max() - x.min()
    torch.testing.assert_close(
        torch.as_tensor(SHIFTS[name](x)), ((x - low) / span) ** g * span + low, rtol=1e-4, atol=1e-5
    )


def _erf_gaussian(image: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian filter with MONAI's kernel (the Gaussian integrated over each pixel, ``approx="erf"``,
    cut at 4 sigma, normalised), borders mirrored, written out by hand."""
    from scipy.special import erf

    k = np.arange(-int(4 * sigma + 0.5), int(4 * sigma + 0.5) + 1)
    w = 0.5 * (erf((k + 0.5) / (sigma * np.sqrt(2))) - erf((k - 0.5) / (sigma * np.sqrt(2))))
    w = w / w.sum()
    out = ndimage.correlate1d(image, w, axis=0, mode="mirror")
    return ndimage.correlate1d(out, w, axis=1, mode="mirror")


def test_blur_is_a_gaussian_of_one_percent_of_the_side_with_reflected_borders():
    x = _image(100)
    expected = ndimage.gaussian_filter(
        x[0].double().numpy(), sigma=1.0, mode="mirror", truncate=4.0
    )
    np.testing.assert_allclose(torch.as_tensor(SHIFTS["blur"](x))[0].numpy(), expected, atol=2e-3)
    flat = torch.full((1, 50, 50), 0.5)
    torch.testing.assert_close(torch.as_tensor(SHIFTS["blur"](flat)), flat)  # no darkened border


def test_sharpen_adds_alpha_times_the_detail_of_the_smoothed_image():
    x = _image(200)  # sigmas 0.5 and 2 pixels
    b = _erf_gaussian(x[0].double().numpy(), 0.5)
    expected = b + 1.5 * (b - _erf_gaussian(b, 2.0))
    np.testing.assert_allclose(
        torch.as_tensor(SHIFTS["sharpen"](x))[0].numpy(), expected, atol=2e-3
    )
    flat = torch.full((1, 50, 50), 0.5)
    torch.testing.assert_close(torch.as_tensor(SHIFTS["sharpen"](flat)), flat)


def test_gaussian_noise_has_the_stated_std_and_follows_the_seed():
    x = torch.full((1, 256, 256), 0.5)
    noise = torch.as_tensor(SHIFTS["gauss_noise"](x, seed=3)) - x
    assert abs(noise.mean().item()) < 2e-3 and noise.std().item() == pytest.approx(0.05, rel=0.03)
    torch.testing.assert_close(torch.as_tensor(SHIFTS["gauss_noise"](x, seed=3)), noise + x)
    assert not torch.equal(torch.as_tensor(SHIFTS["gauss_noise"](x, seed=4)), noise + x)


def test_poisson_noise_counts_100_photons_at_full_scale():
    x = torch.full((1, 256, 256), 0.5)
    out = SHIFTS["poisson_noise"](x, seed=0)
    assert out.mean().item() == pytest.approx(0.5, abs=3e-3)
    assert out.var().item() == pytest.approx(0.5 / 100, rel=0.05)  # Poisson: variance = mean count
    assert torch.allclose(out * 100, (out * 100).round(), atol=1e-4)  # whole photon counts


def test_down_up_removes_detail_finer_than_the_reduced_grid():
    checker = (torch.arange(60)[:, None] + torch.arange(60)[None, :]) % 2
    out = torch.as_tensor(SHIFTS["down_up"](checker[None].float()))
    assert (
        out.shape == (1, 60, 60)
        and out.std() < 0.05
        and out.mean().item() == pytest.approx(0.5, abs=0.05)
    )
    smooth = torch.linspace(0, 1, 60)[None, :].expand(60, 60)[None]
    assert (torch.as_tensor(SHIFTS["down_up"](smooth)) - smooth)[..., 5:-5].abs().max() < 0.03


def test_jpeg_is_pillows_quality_30_round_trip(tmp_path):
    x = _image()
    out = SHIFTS["jpeg"](x)
    pixels = (x[0] * 255).round().to(torch.uint8).numpy()
    Image.fromarray(pixels, mode="L").save(tmp_path / "q30.jpg", quality=30)
    expected = np.asarray(Image.open(tmp_path / "q30.jpg"), dtype=np.float32) / 255
    np.testing.assert_allclose(out[0].numpy(), expected, atol=1e-6)


def test_crop_is_an_80_percent_window_resized_back():
    ramp = torch.arange(100, dtype=torch.float32)[None, :].expand(100, 100)[None]  # value = column
    out = torch.as_tensor(SHIFTS["crop"](ramp, seed=5))
    row = out[0, 50]
    assert (
        row[-1] - row[0] == pytest.approx(79, abs=1.5) and 0 <= row[0] <= 20.5
    )  # 80 columns, somewhere inside
    assert not torch.equal(
        out, torch.as_tensor(SHIFTS["crop"](ramp, seed=6))
    )  # the window follows the seed


def test_zoom_out_shrinks_the_image_into_a_black_border():
    x = torch.ones(1, 100, 100)
    out = torch.as_tensor(SHIFTS["zoom_out"](x))
    assert out[0, 50, 50] == 1 and out[0, :6].abs().max() == 0 and out[0, :, :6].abs().max() == 0
    assert (out > 0.5).float().mean().item() == pytest.approx(0.85**2, abs=0.02)


def test_apply_shift_works_in_stored_units_rounds_integers_and_clips():
    x = torch.round(_image() * 255)  # an 8-bit image
    out = apply_shift(x, "contrast_up", value_range=(0, 255))
    x01 = x / 255
    expected = ((x01.mean() + 1.3 * (x01 - x01.mean())).clamp(0, 1) * 255).round()
    torch.testing.assert_close(out, expected, atol=1.0, rtol=0)  # a rounding step at most
    assert torch.equal(out, out.round()) and out.min() >= 0 and out.max() <= 255
    float_image = _image()
    assert not torch.equal(
        apply_shift(float_image, "blur"), apply_shift(float_image, "blur").round()
    )
    with pytest.raises(ValueError, match="unknown shift"):
        apply_shift(x, "vignette")


def test_shifted_images_are_deterministic_per_file_name_not_per_order():
    x = _image()
    a = apply_shift(x, "gauss_noise", seed=0, name="a.png")
    assert torch.equal(a, apply_shift(x, "gauss_noise", seed=0, name="a.png"))
    assert not torch.equal(a, apply_shift(x, "gauss_noise", seed=0, name="b.png"))
    assert not torch.equal(a, apply_shift(x, "gauss_noise", seed=1, name="a.png"))
    assert image_seed(0, "gauss_noise", "a.png") == image_seed(0, "gauss_noise", "a.png")


def test_the_shift_acts_on_the_raw_image_before_the_model_preprocessing(tmp_path):
    pixels = (np.linspace(30, 220, 80)[None, :] * np.ones((80, 1))).astype(np.uint8)
    Image.fromarray(pixels).save(tmp_path / "x.png")
    pipeline = shifted_transforms(32, "gamma_1.5", seed=0)
    assert isinstance(
        pipeline.transforms[1], AcquisitionShiftd
    )  # after loading, before scaling and resize
    shifted = pipeline({"image": str(tmp_path / "x.png")})["image"]
    plain = shifted_transforms(32, None)({"image": str(tmp_path / "x.png")})["image"]
    assert (
        shifted.shape == plain.shape == (1, 32, 32) and shifted.mean() < plain.mean() - 0.05
    )  # darker mid-tones
    assert shifted.meta["filename_or_obj"].endswith("x.png")


def test_global_augment_is_off_by_default_and_adds_random_global_changes():
    assert global_augment_transforms("image", 32, "none") == []
    x = {"image": _image(32).numpy()}
    plain = train_transforms(32)
    augmented = train_transforms(32, global_augment="acquisition")
    assert len(augmented.transforms) == len(plain.transforms) + len(
        global_augment_transforms("image", 32)
    )
    augmented.set_random_state(seed=0)
    outs = [augmented(dict(x))["image"] for _ in range(8)]
    assert all(o.shape == (1, 32, 32) and o.min() >= 0 and o.max() <= 1 for o in outs)
    stds = [float(o.std()) for o in outs]
    assert max(stds) - min(stds) > 0.01  # the global contrast varies from draw to draw
    with pytest.raises(ValueError, match="global_augment"):
        train_transforms(32, global_augment="strong")


def test_field_of_view_augment_zooms_and_shifts_and_joins_acquisition():
    fov = global_augment_transforms("image", 32, "field_of_view")
    assert [type(t).__name__ for t in fov] == ["RandZoomd", "RandAffined"]
    both = global_augment_transforms("image", 32, "acquisition+field_of_view")
    acquisition = global_augment_transforms("image", 32, "acquisition")
    assert [type(t).__name__ for t in both] == [type(t).__name__ for t in fov + acquisition]
    x = {"image": (torch.rand(1, 32, 32) * 0.5 + 0.5).numpy()}  # no black pixel of its own
    augmented = train_transforms(32, global_augment="field_of_view", augment_prob=0.0)
    augmented.set_random_state(seed=0)
    outs = [augmented(dict(x))["image"] for _ in range(16)]
    assert all(o.shape == (1, 32, 32) for o in outs)
    black = [float((o == 0).float().mean()) for o in outs]
    assert min(black) == 0 and max(black) > 0.05  # a wider field of view or a shift: a black border
    assert len({round(float(o.mean()), 4) for o in outs}) > 4  # the framing varies by draw
