"""File contents in memory (EncodedImage) read exactly as the file on disk, and the pixel
limit checked before any decoder runs."""

import numpy as np
import pytest
import torch
from PIL import Image

from squid_monai.transforms import (
    EncodedImage,
    LoadRadiograph,
    RadiographError,
    preprocess,
    read_radiograph,
)


@pytest.fixture
def files(tmp_path, make_png, make_dicom, ramp_image):
    jpeg = tmp_path / "a.jpg"
    Image.fromarray(ramp_image(40, 32, high=255, dtype=np.uint8)).save(jpeg, quality=90)
    return [
        make_png(tmp_path / "a16.png", ramp_image(high=65535, dtype=np.uint16)),
        jpeg,
        make_dicom(tmp_path / "a.dcm", ramp_image(), window=(2000, 3000), orientation=["R", "H"]),
        make_dicom(tmp_path / "noext", ramp_image(), photometric="MONOCHROME1"),
    ]


def test_contents_load_as_the_file_does_named_by_the_caller(files):
    load = LoadRadiograph()
    for path in files:
        from_file, from_bytes = load(path), load(EncodedImage(path.read_bytes(), "row 7"))
        assert torch.equal(from_file.as_tensor(), from_bytes.as_tensor()), path
        np.testing.assert_array_equal(from_file.meta["value_range"], from_bytes.meta["value_range"])
        assert from_bytes.meta["filename_or_obj"] == "row 7"
        assert torch.equal(preprocess(path, 16), preprocess(EncodedImage(path.read_bytes()), 16))


@pytest.mark.parametrize(
    "data, problem",
    [
        (b"", "empty file"),
        (b"GIF89a....", "not a PNG, JPEG or DICOM file"),
        (b"\x89PNG\r\n\x1a\n broken", "cannot decode image"),
        (b"\0" * 128 + b"DICM" + b"\0" * 8, "DICOM"),
    ],
    ids=["empty", "other-format", "broken-png", "broken-dicom"],
)
def test_bad_contents_raise_a_radiograph_error_naming_the_source(data, problem):
    with pytest.raises(RadiographError, match=problem) as caught:
        read_radiograph(EncodedImage(data, "row 3"))
    assert caught.value.path == "row 3" and "BytesIO" not in caught.value.reason


def test_pixel_limit_refuses_png_jpeg_and_dicom_before_decoding(files):
    for path in files:
        with pytest.raises(RadiographError, match="refused before decoding"):
            read_radiograph(EncodedImage(path.read_bytes()), max_pixels=100)
        with pytest.raises(RadiographError, match="refused before decoding"):
            read_radiograph(path, max_pixels=100)
    assert read_radiograph(files[0], max_pixels=None).shape == (24, 20)


def test_deflated_dicom_is_read_from_disk_but_refused_from_memory(tmp_path, make_dicom, ramp_image):
    import pydicom
    from pydicom.uid import DeflatedExplicitVRLittleEndian

    ds = pydicom.dcmread(make_dicom(tmp_path / "plain.dcm", ramp_image()))
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    ds.save_as(tmp_path / "deflated.dcm")
    assert read_radiograph(tmp_path / "deflated.dcm").shape == (24, 20)  # a local file: trusted
    with pytest.raises(RadiographError, match="deflated DICOM .* not accepted from memory"):
        read_radiograph(EncodedImage((tmp_path / "deflated.dcm").read_bytes()))
