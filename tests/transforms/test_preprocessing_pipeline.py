"""Intensity scaling, resizing, augmentation and the shared train / inference pipelines."""

import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser

from squid_monai.transforms import (
    RadiographError,
    RandScaleTranslate,
    RandScaleTranslated,
    ResizeRadiograph,
    RobustScaleIntensity,
    inference_transforms,
    preprocess,
    train_transforms,
)

SIZE = 32


def _png(tmp_path, make_png, ramp_image, name="a.png", rows=48, cols=40):
    return str(make_png(tmp_path / name, ramp_image(rows, cols, high=65535, dtype=np.uint16)))


def test_percentile_scaling_ignores_a_few_extreme_pixels():
    image = torch.linspace(100, 200, 100 * 100).reshape(1, 100, 100)
    image[0, 0, :5] = 1e6  # burned-in text / dead pixels
    robust = RobustScaleIntensity()(image)
    minmax = RobustScaleIntensity(lower=0, upper=100)(image)
    assert robust.min() == 0 and robust.max() == 1
    assert robust[0, 50].std() > 50 * minmax[0, 50].std()  # anatomy keeps its contrast
    assert float(minmax.max()) == 1.0 and float(minmax[0, 1:].max()) < 1e-3


def test_scaling_falls_back_to_min_max_and_refuses_constant():
    almost_flat = torch.zeros(1, 20, 20)
    almost_flat[0, 0, 0] = 5.0  # percentiles coincide, min-max does not
    out = RobustScaleIntensity()(almost_flat)
    assert float(out.max()) == 1.0 and float(out.min()) == 0.0
    with pytest.raises(RadiographError, match="constant image"):
        RobustScaleIntensity()(torch.ones(1, 4, 4))
    with pytest.raises(ValueError):
        RobustScaleIntensity(lower=60, upper=40)


def test_resize_is_antialiased_when_downsampling():
    checker = (torch.arange(256)[:, None] + torch.arange(256)[None, :]) % 2
    out = ResizeRadiograph(32)(checker[None].float())
    assert out.shape == (1, 32, 32)
    assert torch.allclose(out, torch.full_like(out, 0.5), atol=0.02)  # no aliasing moire
    assert ResizeRadiograph((20, 10))(torch.rand(1, 7, 9)).shape == (1, 20, 10)


def test_inference_pipeline_equals_preprocess(tmp_path, make_png, ramp_image):
    path = _png(tmp_path, make_png, ramp_image)
    item = inference_transforms(SIZE)({"image": path, "label": 0})
    direct = preprocess(path, SIZE)
    assert (
        type(direct) is torch.Tensor
        and direct.shape == (1, SIZE, SIZE)
        and direct.dtype == torch.float32
    )
    assert torch.equal(item["image"].as_tensor(), direct)
    assert item["label"] == 0 and item["image"].meta["filename_or_obj"] == path
    assert 0.0 <= float(direct.min()) and float(direct.max()) <= 1.0


def test_train_pipeline_is_inference_plus_augmentation(tmp_path, make_png, ramp_image):
    path = _png(tmp_path, make_png, ramp_image)
    train = train_transforms(SIZE)
    assert isinstance(train.transforms[-1], RandScaleTranslated)
    assert [type(t) for t in train.transforms[:-1]] == [
        type(t) for t in inference_transforms(SIZE).transforms
    ]
    no_aug = train_transforms(SIZE, augment_prob=0.0)({"image": path})["image"]
    assert torch.equal(no_aug.as_tensor(), preprocess(path, SIZE))


def test_augmentation_reproducible_under_a_seed(tmp_path, make_png, ramp_image):
    path = _png(tmp_path, make_png, ramp_image)

    def run(seed):
        train = train_transforms(SIZE)
        train.set_random_state(seed=seed)
        return [train({"image": path})["image"].as_tensor() for _ in range(3)]

    first, again, other = run(0), run(0), run(1)
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert not torch.equal(first[0], other[0])
    assert not torch.equal(first[0], first[1])  # a fresh draw per call
    assert all(0.0 <= float(x.min()) and float(x.max()) <= 1.0 for x in first)


def test_augmentation_parameters_stay_within_the_paper_ranges():
    aug = RandScaleTranslate().set_random_state(seed=3)
    translations, scales = [], []
    for _ in range(300):
        aug.randomize((100, 80))
        translations.append(aug.translation / np.array([100, 80]))
        scales.append(aug.scale_factor)
    translations, scales = np.array(translations), np.array(scales)
    assert np.abs(translations).max() <= 0.05 and np.abs(translations).max() > 0.045
    assert 0.95 <= scales.min() < 0.955 and 1.045 < scales.max() <= 1.05


@pytest.mark.parametrize("seed", [0, 7, 11])
def test_augmentation_moves_content_by_the_drawn_amount(seed):
    size = 65
    image = torch.zeros(1, size, size)
    image[0, 10:15, 44:49] = 1.0  # a blob away from the centre: scaling moves it too
    aug = RandScaleTranslate().set_random_state(seed=seed)
    out = aug(image)

    def centroid(x):
        weights = x[0].double()
        rows, cols = torch.meshgrid(
            torch.arange(size).double(), torch.arange(size).double(), indexing="ij"
        )
        return np.array(
            [(weights * rows).sum() / weights.sum(), (weights * cols).sum() / weights.sum()]
        )

    centre = (size - 1) / 2
    expected = centre + aug.scale_factor * (centroid(image) - centre) + aug.translation
    np.testing.assert_allclose(centroid(out), expected, atol=0.05)
    assert (
        abs(float(out.sum()) / float(image.sum()) - aug.scale_factor**2) < 0.02
    )  # area scales by s^2
    assert 0.0 <= float(out.min()) and float(out.max()) <= 1.0


def test_dict_augmentation_applies_one_draw_to_all_keys():
    image = torch.rand(1, 40, 40)
    out = RandScaleTranslated(keys=("a", "b")).set_random_state(seed=5)(
        {"a": image, "b": image.clone()}
    )
    assert torch.equal(out["a"], out["b"]) and not torch.equal(out["a"], image)


def test_pipelines_instantiate_from_bundle_config(tmp_path, make_png, ramp_image):
    path = _png(tmp_path, make_png, ramp_image)
    parser = ConfigParser(
        {
            "train": {"_target_": "squid_monai.transforms.train_transforms", "image_size": SIZE},
            "infer": {
                "_target_": "squid_monai.transforms.inference_transforms",
                "image_size": SIZE,
            },
        }
    )
    assert parser.get_parsed_content("train")({"image": path})["image"].shape == (1, SIZE, SIZE)
    assert torch.equal(
        parser.get_parsed_content("infer")({"image": path})["image"].as_tensor(),
        preprocess(path, SIZE),
    )


def test_every_format_gives_the_same_tensor_for_the_same_picture(
    tmp_path, make_png, make_nifti, make_dicom, ramp_image
):
    pixels = ramp_image(48, 40, high=4095)
    paths = [
        make_png(tmp_path / "a.png", pixels),
        make_nifti(tmp_path / "a.nii.gz", pixels.astype(np.float32).T),
        make_dicom(tmp_path / "a.dcm", pixels),
        make_dicom(
            tmp_path / "inv.dcm", (4095 - pixels).astype(np.uint16), photometric="MONOCHROME1"
        ),
    ]
    reference = preprocess(paths[0], SIZE)
    for path in paths[1:]:
        assert torch.allclose(preprocess(path, SIZE), reference, atol=1e-5), path
