"""DICOM display rules: Modality LUT, VOI window, MONOCHROME1, orientation, refusals."""

import numpy as np
import pytest
from pydicom.uid import JPEG2000Lossless, JPEGLSLossless, RLELossless

from squid_monai.transforms import RadiographError, preprocess, read_radiograph

SIZE = 16  # model input side for these tests


def test_monochrome2_12_bit_values_and_orientation(tmp_path, make_dicom, ramp_image):
    pixels = ramp_image(high=4095)
    out = read_radiograph(make_dicom(tmp_path / "m2.dcm", pixels, bits_stored=12))
    np.testing.assert_array_equal(out, pixels.astype(np.float32))


def test_monochrome1_is_inverted_so_bone_is_bright(tmp_path, make_dicom, ramp_image):
    pixels = ramp_image(high=4095)
    mono2 = make_dicom(tmp_path / "m2.dcm", pixels, photometric="MONOCHROME2")
    mono1 = make_dicom(tmp_path / "m1.dcm", pixels, photometric="MONOCHROME1")
    raw1 = read_radiograph(mono1)
    assert raw1[0, 0] == raw1.min()  # the bright corner of the stored data is dark in MONOCHROME1
    np.testing.assert_allclose(preprocess(mono1, SIZE), 1.0 - preprocess(mono2, SIZE), atol=1e-5)


def test_16_bit_with_slope_and_intercept(tmp_path, make_dicom, ramp_image):
    pixels = ramp_image(high=60000)
    path = make_dicom(tmp_path / "s.dcm", pixels, bits_stored=16, slope=2.0, intercept=-1024.0)
    np.testing.assert_allclose(read_radiograph(path), pixels * 2.0 - 1024.0)


def test_negative_slope_inverts_the_picture(tmp_path, make_dicom, ramp_image):
    pixels = ramp_image(high=4095)
    plain = make_dicom(tmp_path / "plain.dcm", pixels)
    negative = make_dicom(tmp_path / "neg.dcm", pixels, slope=-1.0, intercept=4095.0)
    np.testing.assert_allclose(preprocess(negative, SIZE), 1.0 - preprocess(plain, SIZE), atol=1e-5)


def test_signed_16_bit_pixels(tmp_path, make_dicom, ramp_image):
    pixels = (ramp_image(high=4000).astype(np.int32) - 2000).astype(np.int16)
    out = read_radiograph(make_dicom(tmp_path / "signed.dcm", pixels, bits_stored=16))
    np.testing.assert_array_equal(out, pixels.astype(np.float32))
    assert out.min() < 0


def test_voi_window_is_applied_and_can_be_turned_off(tmp_path, make_dicom, ramp_image):
    pixels = ramp_image(high=4095)
    path = make_dicom(tmp_path / "w.dcm", pixels, window=(2000, 1000))  # shows 1500..2500 only
    windowed = read_radiograph(path)
    below, above = pixels < 1400, pixels > 2600
    assert below.any() and above.any()
    assert np.unique(windowed[below]).size == 1 and np.unique(windowed[above]).size == 1
    assert windowed[below][0] < windowed[above][0]
    np.testing.assert_array_equal(read_radiograph(path, apply_voi=False), pixels.astype(np.float32))


@pytest.mark.parametrize("syntax", [RLELossless, JPEGLSLossless, JPEG2000Lossless])
def test_compressed_pixel_data_decodes_like_uncompressed(tmp_path, make_dicom, ramp_image, syntax):
    from pydicom.pixels import get_encoder

    if not get_encoder(
        syntax
    ).is_available:  # writing needs an encoder plugin; reading is what we test
        pytest.skip(f"no pydicom encoder plugin installed for {syntax.name}")
    pixels = ramp_image(32, 32, high=4095)
    path = make_dicom(tmp_path / "c.dcm", pixels, compress=syntax)
    np.testing.assert_array_equal(read_radiograph(path), pixels.astype(np.float32))


def test_patient_orientation_brings_the_image_to_display_convention(
    tmp_path, make_dicom, ramp_image
):
    pixels = ramp_image(high=4095)
    standard = read_radiograph(make_dicom(tmp_path / "lf.dcm", pixels, orientation=["L", "F"]))
    flipped = read_radiograph(
        make_dicom(tmp_path / "rh.dcm", pixels[::-1, ::-1], orientation=["R", "H"])
    )
    np.testing.assert_array_equal(standard, pixels.astype(np.float32))
    np.testing.assert_array_equal(flipped, standard)


def test_secondary_capture_and_extensionless_files_are_accepted(tmp_path, make_dicom, ramp_image):
    pixels = ramp_image(high=255, dtype=np.uint8)
    secondary_capture = "1.2.840.10008.5.1.4.1.1.7"
    path = make_dicom(
        tmp_path / "IM0001", pixels, bits_stored=8, modality="OT", sop_class=secondary_capture
    )
    np.testing.assert_array_equal(read_radiograph(path), pixels.astype(np.float32))


def test_multi_frame_is_refused(tmp_path, make_dicom, ramp_image):
    frames = np.stack([ramp_image(high=4095)] * 2)
    path = make_dicom(tmp_path / "cine.dcm", frames, frames=2)
    with pytest.raises(RadiographError, match=r"cine\.dcm: multi-frame DICOM \(2 frames\)"):
        read_radiograph(path)


def test_non_radiograph_modality_is_refused(tmp_path, make_dicom, ramp_image):
    path = make_dicom(
        tmp_path / "ct.dcm",
        ramp_image(high=4095),
        modality="CT",
        sop_class="1.2.840.10008.5.1.4.1.1.2",
    )
    with pytest.raises(
        RadiographError, match=r"ct\.dcm: modality 'CT' is not a projection radiograph"
    ):
        read_radiograph(path)
    assert read_radiograph(path, dicom_modalities=None).shape == (24, 20)


def test_truncated_dicom_names_the_file(tmp_path, make_dicom, ramp_image):
    path = make_dicom(tmp_path / "cut.dcm", ramp_image(64, 64, high=4095))
    path.write_bytes(path.read_bytes()[:-3000])
    with pytest.raises(RadiographError, match=r"cut\.dcm: "):
        read_radiograph(path)


def test_dicom_without_pixel_data_is_refused(tmp_path, make_dicom, ramp_image):
    import pydicom

    path = make_dicom(tmp_path / "nopix.dcm", ramp_image(high=4095))
    ds = pydicom.dcmread(path)
    del ds.PixelData
    ds.save_as(path)
    with pytest.raises(RadiographError, match=r"nopix\.dcm: DICOM file has no pixel data"):
        read_radiograph(path)


def test_constant_dicom_is_refused(tmp_path, make_dicom):
    path = make_dicom(tmp_path / "flat.dcm", np.full((8, 8), 100, dtype=np.uint16))
    with pytest.raises(RadiographError, match=r"flat\.dcm: constant image"):
        preprocess(path, SIZE)


def test_in_memory_dataset_reads_like_its_file(tmp_path, make_dicom, ramp_image):
    """MONAI Deploy hands over a ``pydicom.Dataset``: the same display rules, no temporary file."""
    import pydicom

    from squid_monai.transforms import LoadRadiograph

    path = make_dicom(
        tmp_path / "m1.dcm", ramp_image(high=4095), photometric="MONOCHROME1", slope=2.0
    )
    ds = pydicom.dcmread(path)
    ds.filename = None  # as if it never came from a file
    np.testing.assert_array_equal(preprocess(ds, SIZE), preprocess(path, SIZE))
    assert LoadRadiograph()(ds).meta["filename_or_obj"] == "<DICOM dataset>"
    ds.Modality = "CT"
    with pytest.raises(RadiographError, match=r"<DICOM dataset>: modality 'CT'"):
        preprocess(ds, SIZE)
