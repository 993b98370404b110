"""The preprocessing switches of SQUID.md section 7: augmentation resampling (U1) and the
intensity rule (U2)."""

import numpy as np
import pytest
import torch

from squid_monai.transforms import (
    LoadRadiograph,
    RadiographError,
    RandScaleTranslate,
    RandScaleTranslated,
    RobustScaleIntensity,
    inference_transforms,
    preprocess,
    train_transforms,
)


def _shift_with_zero_fill(image: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
    out = torch.zeros_like(image)
    h, w = image.shape[-2:]
    out[..., max(rows, 0) : h + min(rows, 0), max(cols, 0) : w + min(cols, 0)] = image[
        ..., max(-rows, 0) : h + min(-rows, 0), max(-cols, 0) : w + min(-cols, 0)
    ]
    return out


# ---- U1: augmentation resampling ------------------------------------------------------


@pytest.mark.parametrize("seed", range(6))
def test_nearest_keeps_the_set_of_pixel_values(seed):
    image = torch.randperm(40 * 36).float().reshape(1, 40, 36) + 1  # all distinct, none zero
    aug = RandScaleTranslate(mode="nearest").set_random_state(seed=seed)
    out = aug(image)
    assert set(out.unique().tolist()) <= set(image.unique().tolist()) | {0.0}
    assert np.array_equal(aug.translation, np.round(aug.translation))  # whole pixels
    bilinear = RandScaleTranslate().set_random_state(seed=seed)(image)
    assert not set(bilinear.unique().tolist()) <= set(image.unique().tolist()) | {0.0}


@pytest.mark.parametrize("seed", range(8))
def test_nearest_whole_pixel_shift_at_scale_one_is_an_exact_shift_with_zero_fill(seed):
    image = torch.rand(1, 64, 50) + 0.5
    aug = RandScaleTranslate(scale=0.0, mode="nearest").set_random_state(seed=seed)
    out = aug(image)
    assert aug.scale_factor == 1.0
    rows, cols = (int(t) for t in aug.translation)
    assert (rows, cols) != (0, 0) or seed > 0
    assert torch.equal(out, _shift_with_zero_fill(image, rows, cols))


def test_nearest_draws_the_bilinear_translations_rounded():
    nearest, bilinear = (
        RandScaleTranslate(mode=m).set_random_state(seed=4) for m in ("nearest", "bilinear")
    )
    for _ in range(20):
        nearest.randomize((128, 128))
        bilinear.randomize((128, 128))
        assert np.array_equal(nearest.translation, np.round(bilinear.translation))
        assert nearest.scale_factor == bilinear.scale_factor
    assert not np.array_equal(
        bilinear.translation, np.round(bilinear.translation)
    )  # default: sub-pixel


def test_resampling_switch_reaches_the_training_pipeline_and_refuses_unknown_modes():
    train = train_transforms(32, augment_resampling="nearest")
    assert (
        isinstance(train.transforms[-1], RandScaleTranslated)
        and train.transforms[-1].augment.mode == "nearest"
    )
    assert train_transforms(32).transforms[-1].augment.mode == "bilinear"
    with pytest.raises(ValueError, match="resampling"):
        RandScaleTranslate(mode="bicubic")


# ---- U2: intensity rule ----------------------------------------------------------------


def test_raw_on_an_8_bit_png_is_pixel_over_255(tmp_path, make_png):
    pixels = np.random.default_rng(0).integers(0, 256, (30, 26), dtype=np.uint8)
    grey = make_png(tmp_path / "grey.png", pixels)
    rgb = make_png(
        tmp_path / "rgb.png", np.repeat(pixels[..., None], 3, axis=2)
    )  # R = G = B, like ZhangLab
    expected = torch.from_numpy(pixels.astype(np.float32) / np.float32(255))[None]
    for path in (grey, rgb):
        assert torch.equal(preprocess(path, (30, 26), intensity="raw"), expected)
        item = inference_transforms((30, 26), intensity="raw")({"image": str(path)})
        assert torch.equal(item["image"].as_tensor(), expected)


def test_raw_on_a_16_bit_png_is_value_over_65535(tmp_path, make_png, ramp_image):
    pixels = ramp_image(24, 20, high=60000, dtype=np.uint16)
    path = make_png(tmp_path / "a16.png", pixels)
    expected = torch.from_numpy(pixels.astype(np.float32) / np.float32(65535))[None]
    assert torch.equal(preprocess(path, (24, 20), intensity="raw"), expected)


def test_raw_on_a_12_bit_dicom_is_value_over_4095(tmp_path, make_dicom, ramp_image):
    pixels = ramp_image(24, 20, high=3000, dtype=np.uint16)
    path = make_dicom(tmp_path / "a.dcm", pixels, bits_stored=12)
    out = preprocess(path, (24, 20), intensity="raw")
    np.testing.assert_array_equal(out[0].numpy(), pixels.astype(np.float32) / np.float32(4095))
    # the window stored in the file maps to the same range (pydicom's windowing output)
    windowed = make_dicom(tmp_path / "w.dcm", pixels, bits_stored=12, window=(1500, 3000))
    assert 0 <= float(preprocess(windowed, (24, 20), intensity="raw").min())
    assert float(preprocess(windowed, (24, 20), intensity="raw").max()) <= 1


def test_raw_dicom_rules_8_bit_rescale_and_monochrome1(tmp_path, make_dicom, ramp_image):
    eight = ramp_image(24, 20, high=250, dtype=np.uint8)
    path = make_dicom(tmp_path / "b8.dcm", eight, bits_stored=8)
    np.testing.assert_array_equal(
        preprocess(path, (24, 20), intensity="raw")[0].numpy(),
        eight.astype(np.float32) / np.float32(255),
    )
    # rescale slope / intercept: the stored range maps through them, so the result is unchanged
    twelve = ramp_image(24, 20, high=4000, dtype=np.uint16)
    plain = preprocess(make_dicom(tmp_path / "p.dcm", twelve), (24, 20), intensity="raw")
    rescaled = preprocess(
        make_dicom(tmp_path / "r.dcm", twelve, slope=2.0, intercept=-1000.0),
        (24, 20),
        intensity="raw",
    )
    torch.testing.assert_close(rescaled, plain, atol=1e-6, rtol=0)
    # MONOCHROME1: inverted as the reader does (max + min - value), then divided by the full range
    mono1 = preprocess(
        make_dicom(tmp_path / "m1.dcm", twelve, photometric="MONOCHROME1"),
        (24, 20),
        intensity="raw",
    )
    expected = (float(twelve.max()) + float(twelve.min()) - twelve.astype(np.float32)) / np.float32(
        4095
    )
    np.testing.assert_allclose(mono1[0].numpy(), expected, atol=1e-7)


def test_raw_leaves_images_already_in_unit_range_and_refuses_unknown_bit_depth(
    tmp_path, make_nifti
):
    digits = torch.rand(1, 24, 24)  # DigitAnatomy: float in [0, 1]
    assert torch.equal(preprocess(digits, 24, intensity="raw"), digits)
    assert torch.equal(
        preprocess(digits.numpy().astype(np.float64)[0], 24, intensity="raw"), digits
    )
    eight = np.arange(24 * 24, dtype=np.uint8).reshape(24, 24)
    assert torch.equal(
        preprocess(eight, 24, intensity="raw"), torch.from_numpy(eight / np.float32(255))[None]
    )
    floats = make_nifti(
        tmp_path / "f.nii.gz", np.random.default_rng(0).random((24, 24)).astype(np.float32) * 900
    )
    with pytest.raises(RadiographError, match="raw"):
        preprocess(floats, 24, intensity="raw")
    assert preprocess(floats, 24).shape == (1, 24, 24)  # percentile needs no bit depth
    with pytest.raises(ValueError, match="intensity rule"):
        preprocess(digits, 24, intensity="minmax")


def test_percentile_path_unchanged(tmp_path, make_png, ramp_image):
    pixels = ramp_image(48, 40, high=60000, dtype=np.uint16)
    path = str(make_png(tmp_path / "a.png", pixels))
    default = preprocess(path, 32)
    assert torch.equal(preprocess(path, 32, intensity="percentile"), default)
    low, high = np.percentile(pixels.astype(np.float32), [0.5, 99.5]).astype(np.float32)
    manual = np.clip((pixels.astype(np.float32) - low) / (high - low), 0, 1)
    np.testing.assert_array_equal(preprocess(path, (48, 40))[0].numpy(), manual)
    assert torch.equal(
        RobustScaleIntensity()(LoadRadiograph()(path)).as_tensor(), torch.from_numpy(manual)[None]
    )


@pytest.mark.parametrize("intensity", ["percentile", "raw"])
def test_one_rule_for_training_and_inference(tmp_path, make_png, ramp_image, intensity):
    path = str(make_png(tmp_path / "a.png", ramp_image(48, 40, high=200, dtype=np.uint8)))
    no_aug = train_transforms(32, augment_prob=0.0, intensity=intensity)({"image": path})["image"]
    infer = inference_transforms(32, intensity=intensity)({"image": path})["image"]
    assert torch.equal(no_aug.as_tensor(), preprocess(path, 32, intensity=intensity))
    assert torch.equal(infer.as_tensor(), preprocess(path, 32, intensity=intensity))
