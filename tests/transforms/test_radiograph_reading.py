"""Reading PNG, JPEG, NIfTI and in-memory images; every bad input gets a RadiographError."""

import gzip

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from PIL import Image

from squid_monai.transforms import LoadRadiograph, LoadRadiographd, RadiographError, read_radiograph


def test_grey_png_loads_channel_first_with_row_zero_at_top(tmp_path, make_png, ramp_image):
    image = ramp_image(high=255, dtype=np.uint8)
    out = LoadRadiograph()(make_png(tmp_path / "a.png", image))
    assert isinstance(out, MetaTensor) and out.dtype == torch.float32
    assert out.shape == (1, *image.shape)
    np.testing.assert_array_equal(out[0].numpy(), image.astype(np.float32))
    assert out.meta["filename_or_obj"].endswith("a.png")


def test_16_bit_png_keeps_full_precision(tmp_path, make_png, ramp_image):
    image = ramp_image(high=65535, dtype=np.uint16)
    out = read_radiograph(make_png(tmp_path / "a16.png", image))
    assert out.max() > 255  # not squeezed through 8 bits
    np.testing.assert_array_equal(out, image.astype(np.float32))


def test_rgb_with_equal_channels_equals_grey(tmp_path, make_png, ramp_image):
    grey = ramp_image(high=255, dtype=np.uint8)
    rgb = np.repeat(grey[..., None], 3, axis=2)
    np.testing.assert_allclose(
        read_radiograph(make_png(tmp_path / "rgb.png", rgb)), grey.astype(np.float32), atol=1e-3
    )
    rgba = np.concatenate([rgb, np.full_like(grey, 255)[..., None]], axis=2)
    np.testing.assert_allclose(
        read_radiograph(make_png(tmp_path / "rgba.png", rgba)), grey, atol=1e-3
    )


def test_colour_png_becomes_luma(tmp_path, make_png):
    rgb = np.zeros((8, 8, 3), dtype=np.uint8)
    rgb[:4, :, 1] = 200  # green top half
    out = read_radiograph(make_png(tmp_path / "green.png", rgb))
    assert out.shape == (8, 8)
    np.testing.assert_allclose(out[:4], 0.587 * 200, atol=1e-3)
    np.testing.assert_allclose(out[4:], 0.0)


def test_jpeg_loads_close_to_source(tmp_path, ramp_image):
    image = ramp_image(64, 48, high=255, dtype=np.uint8)
    path = tmp_path / "a.jpg"
    Image.fromarray(image).save(path, quality=95)
    out = read_radiograph(path)
    assert out.shape == image.shape
    assert np.abs(out - image).mean() < 3


def test_jpeg_exif_orientation_is_applied(tmp_path, ramp_image):
    image = ramp_image(32, 24, high=255, dtype=np.uint8)
    exif = Image.Exif()
    exif[0x0112] = 3  # rotated 180 degrees
    Image.fromarray(image).save(tmp_path / "rot.jpg", quality=95, exif=exif)
    out = read_radiograph(tmp_path / "rot.jpg")
    assert np.abs(out - image[::-1, ::-1]).mean() < 3


def test_nifti_2d_follows_monai_axis_convention(tmp_path, make_nifti, ramp_image):
    image = ramp_image().astype(np.float32)  # (rows, cols)
    path = make_nifti(tmp_path / "a.nii.gz", image.T)  # axis 0 = x (columns), axis 1 = y (rows)
    np.testing.assert_array_equal(read_radiograph(path), image)
    single = make_nifti(tmp_path / "b.nii", image.T[:, :, None])  # 3D with a singleton axis
    np.testing.assert_array_equal(read_radiograph(single), image)


def test_nifti_3d_volume_is_refused(tmp_path, make_nifti):
    path = make_nifti(tmp_path / "vol.nii.gz", np.random.rand(8, 8, 4).astype(np.float32))
    with pytest.raises(RadiographError, match=r"vol\.nii\.gz.*not 2D"):
        read_radiograph(path)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_nifti_with_nan_or_inf_is_refused(tmp_path, make_nifti, bad):
    data = np.random.rand(8, 8).astype(np.float32)
    data[2, 3] = bad
    path = make_nifti(tmp_path / "bad.nii", data)
    with pytest.raises(RadiographError, match=r"bad\.nii: 1 pixel values are NaN or infinite"):
        read_radiograph(path)


def test_in_memory_arrays_pass_through(ramp_image):
    image = ramp_image().astype(np.float32)
    for source in (image, image[None], torch.from_numpy(image)):
        out = LoadRadiograph()(source)
        assert out.shape == (1, *image.shape)
        np.testing.assert_array_equal(out[0].numpy(), image)
        assert out.meta["filename_or_obj"] == "<array>"
    with pytest.raises(RadiographError, match="<array>: in-memory image must be"):
        LoadRadiograph()(np.zeros((3, 8, 8)))
    with pytest.raises(RadiographError, match="<array>: constant image"):
        LoadRadiograph()(np.ones((8, 8)))


def test_dict_loader_replaces_keys_and_keeps_the_rest(tmp_path, make_png, ramp_image):
    path = make_png(tmp_path / "a.png", ramp_image(high=255, dtype=np.uint8))
    out = LoadRadiographd(keys="image")({"image": str(path), "label": 1, "source": "x"})
    assert out["image"].shape[0] == 1 and out["label"] == 1 and out["source"] == "x"


# --------------------------------------------------------------------------- bad files
def _truncated(path, keep=0.5):
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return path


@pytest.mark.parametrize(
    "case, expected",
    [
        ("missing", "file not found"),
        ("empty", r"empty file \(0 bytes\)"),
        ("garbage_png", "cannot decode image"),
        ("truncated_png", "cannot decode image"),
        ("truncated_jpeg", "cannot decode image"),
        ("constant_png", "constant image"),
        ("unsupported", "unsupported file type"),
        ("multiframe_gif_as_png", "multi-frame image"),
        ("truncated_nifti", "cannot read NIfTI"),
    ],
)
def test_bad_files_raise_an_error_naming_file_and_problem(
    tmp_path, make_png, make_nifti, ramp_image, case, expected
):
    image = ramp_image(64, 64, high=255, dtype=np.uint8)
    if case == "missing":
        path = tmp_path / "missing.png"
    elif case == "empty":
        path = tmp_path / "empty.png"
        path.write_bytes(b"")
    elif case == "garbage_png":
        path = tmp_path / "garbage.png"
        path.write_bytes(b"this is not an image at all" * 10)
    elif case == "truncated_png":
        path = _truncated(make_png(tmp_path / "cut.png", image))
    elif case == "truncated_jpeg":
        path = tmp_path / "cut.jpg"
        Image.fromarray(image).save(path)
        path = _truncated(path)
    elif case == "constant_png":
        path = make_png(tmp_path / "flat.png", np.full((16, 16), 7, dtype=np.uint8))
    elif case == "unsupported":
        path = tmp_path / "notes.txt"
        path.write_text("hello")
    elif case == "multiframe_gif_as_png":
        path = tmp_path / "anim.png"
        frames = [Image.fromarray(image), Image.fromarray(255 - image)]
        frames[0].save(path, format="GIF", save_all=True, append_images=frames[1:])
    else:
        path = make_nifti(tmp_path / "cut.nii.gz", np.random.rand(64, 64).astype(np.float32))
        path = _truncated(path, keep=0.3)
    with pytest.raises(RadiographError, match=expected) as info:
        LoadRadiograph()(str(path))
    assert str(path) in str(info.value)
    assert info.value.path == str(path)


def test_gzip_without_nifti_content_is_refused(tmp_path):
    path = tmp_path / "fake.nii.gz"
    with gzip.open(path, "wb") as f:
        f.write(b"not a nifti header" * 30)
    with pytest.raises(RadiographError, match=r"fake\.nii\.gz: cannot read NIfTI"):
        read_radiograph(path)
