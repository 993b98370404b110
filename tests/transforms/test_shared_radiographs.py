"""The real radiographs in ../shared/data (skipped when absent): every one preprocesses cleanly."""

import numpy as np
import torch

from squid_monai.transforms import SUPPORTED_EXTENSIONS, preprocess

SIZE = 128


def _images(folder):
    return sorted(
        p
        for p in folder.rglob("*")
        if p.is_file() and p.name.lower().endswith(tuple(SUPPORTED_EXTENSIONS))
    )


def test_every_shared_dicom_and_format_file_preprocesses(shared_data):
    files = _images(shared_data / "dicom") + _images(shared_data / "formats")
    assert len(files) >= 12, files
    for path in files:
        image = preprocess(path, SIZE)
        assert image.shape == (1, SIZE, SIZE) and image.dtype == torch.float32, path
        assert float(image.min()) >= 0.0 and float(image.max()) <= 1.0, path
        assert float(image.std()) > 0.1, path  # a picture, not a flat field


def test_monochrome1_pair_follows_the_photometric_interpretation(shared_data):
    """The 'FAKE_mono1' file differs from the MONOCHROME2 one in a single header byte
    (MONOCHROME2 -> MONOCHROME1); its pixel data are identical. Inverting MONOCHROME1, as
    the standard requires, therefore gives the exact negative of the MONOCHROME2 image
    (the percentile scaling is symmetric). The data README's claim that the two give the
    same tensor cannot hold for a reader that inverts MONOCHROME1."""
    folder = shared_data / "dicom"
    mono1 = folder / "siim_cr_chest_pa_FAKE_mono1_jpeg8.dcm"
    mono2 = folder / "siim_cr_chest_pa_mono2_jpeg8.dcm"
    bytes1, bytes2 = (np.frombuffer(p.read_bytes(), np.uint8) for p in (mono1, mono2))
    differing = np.flatnonzero(bytes1 != bytes2)
    assert len(differing) == 1  # the premise: only the photometric tag differs
    assert torch.allclose(preprocess(mono1, SIZE), 1.0 - preprocess(mono2, SIZE), atol=1e-5)


def test_real_monochrome1_radiographs_show_bright_bone(shared_data):
    """Genuine MONOCHROME1 chests: after inversion the lung fields (upper middle of each
    half) are darker than the spine/mediastinum band in the centre, as in MONOCHROME2."""
    names = (
        "gdcm_CR-MONO1-10-chest.dcm",
        "nema_RG1_cr_chest_pa_mono1_15bit_j2k.dcm",
        "siim_cr_chest_pa_mono2_jpeg8.dcm",
    )
    for name in names:
        image = preprocess(shared_data / "dicom" / name, SIZE)[0]
        lungs = torch.cat([image[40:80, 25:45].flatten(), image[40:80, 83:103].flatten()]).mean()
        mediastinum = image[40:80, 58:70].mean()
        assert mediastinum > lungs + 0.1, name
