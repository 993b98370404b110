"""The lung field and the AnatPaste / CutPaste augmentation (squid_monai/transforms/anatomy.py):
the field on a synthetic radiograph whose lungs are known, and on real ZhangLab radiographs
(anatomical properties: two sides, not the mediastinum, not the border); the paste changes
only pixels inside the field, by the blend of its definition, with a patch of the same image."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from squid_monai.transforms import preprocess
from squid_monai.transforms.anatomy import (
    AnatPaste,
    LungField,
    lung_field,
    paste_batch,
    paste_transform,
)

SIZE = 64


def synthetic_radiograph(size: int = SIZE, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(image, lungs): a bright body on dark air touching the border, two dark elliptical
    lungs inside it, and noise; ``lungs`` is the true lung field."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size] / size
    body = ((x - 0.5) / 0.42) ** 2 + ((y - 0.55) / 0.48) ** 2 <= 1
    lungs = np.zeros_like(body)
    for centre in (0.3, 0.7):
        lungs |= ((x - centre) / 0.13) ** 2 + ((y - 0.5) / 0.28) ** 2 <= 1
    image = np.where(body, 0.75, 0.05)
    image = np.where(lungs, 0.25, image) + 0.02 * rng.standard_normal((size, size))
    return np.clip(image, 0, 1)[None].astype(np.float32), lungs


def test_lung_field_finds_the_lungs_of_a_synthetic_radiograph():
    image, lungs = synthetic_radiograph()
    field = lung_field(image)
    assert field.dtype == bool and field.shape == lungs.shape
    # the dark air outside the body touches the border: removed; the lungs are found whole
    assert (field & lungs).sum() / lungs.sum() > 0.9
    assert not (field & ~ndimage.binary_dilation(lungs, iterations=2)).any()
    # the MONAI transform: (1, H, W) 0 / 1 of the input's type
    out = LungField()(torch.as_tensor(image))
    assert isinstance(out, torch.Tensor) and out.shape == (1, SIZE, SIZE)
    assert torch.equal(out[0].bool(), torch.as_tensor(field))
    assert not lung_field(np.full((SIZE, SIZE), 0.5)).any()  # a flat image has no field


def test_lung_field_on_real_radiographs(shared_data):
    files = sorted((shared_data / "zhanglab224" / "train" / "NORMAL").glob("*.jpeg"))[:8]
    assert files, "no ZhangLab normals"
    for path in files:
        field = lung_field(preprocess(path, SIZE))
        half = SIZE // 2
        assert 0.05 < field.mean() < 0.4, path  # a lung-sized share of the image
        assert field[:, :half].mean() > 0.03 and field[:, half:].mean() > 0.03, path  # two sides
        assert field[:, half - 2 : half + 2].mean() < 0.2, path  # not the mediastinum
        ring = np.concatenate([field[0], field[-1], field[:, 0], field[:, -1]])
        assert ring.mean() < 0.05, path  # not the air at the border (dilation may touch it)


def _paste(image, seed, **kwargs):
    transform = AnatPaste(**kwargs)
    transform.set_random_state(seed)
    return transform(image)


def test_anatpaste_changes_only_the_lung_field_by_its_blend():
    image, _ = synthetic_radiograph()
    field = lung_field(image)
    changed_some = 0
    for seed in range(20):
        pasted, weight = _paste(image, seed)
        assert pasted.shape == weight.shape == image.shape and pasted.dtype == np.float32
        assert (weight >= 0).all() and (weight <= 1).all()
        assert not weight[0][~field].any()  # the blend is zero outside the lung field
        assert np.array_equal(pasted[0][~field], image[0][~field])  # untouched there, exactly
        assert weight.max() <= 254 / 255 + 1e-6  # the opacity range U{150..254}/255
        changed_some += bool(np.abs(pasted - image).max() > 0.01)
    assert changed_some >= 15  # (a blur of 0 px on a narrow patch may leave it almost unchanged)


def test_anatpaste_without_a_lung_field_pastes_anywhere():
    # a ramp: its dark side touches the border, so no field survives
    image = np.tile(np.linspace(0.1, 0.9, SIZE, dtype=np.float32), (1, SIZE, 1))
    assert not lung_field(image).any()
    pasted, weight = _paste(image, 3)
    assert weight.max() > 0 and not np.array_equal(pasted, image)


def test_cutpaste_pastes_a_patch_of_the_same_image_anywhere():
    rng = np.random.default_rng(1)
    image = rng.uniform(0, 1, (1, SIZE, SIZE)).astype(np.float32)  # every patch is unique
    for seed in range(5):
        pasted, weight = _paste(image, seed, in_lung=False, jitter=0.0)
        rows, cols = np.nonzero(weight[0])
        top, left, h, w = rows.min(), cols.min(), np.ptp(rows) + 1, np.ptp(cols) + 1
        assert set(np.unique(weight)) == {0.0, 1.0} and weight[0].sum() == h * w  # a box
        assert 0.02 * SIZE**2 - 2 * SIZE <= h * w <= 0.15 * SIZE**2 + 2 * SIZE  # area range
        assert 0.3 - 0.1 <= w / h <= 1 / 0.3 + 1  # the aspect range (after rounding)
        box = pasted[0, top : top + h, left : left + w]
        sources = [
            (i, j)
            for i in range(SIZE - h + 1)
            for j in range(SIZE - w + 1)
            if np.array_equal(image[0, i : i + h, j : j + w], box)
        ]
        assert sources, "the pasted box is a patch of the image itself"
        outside = weight[0] == 0
        assert np.array_equal(pasted[0][outside], image[0][outside])


def test_paste_is_repeatable_and_keeps_tensors_on_their_device():
    image, _ = synthetic_radiograph()
    tensor = torch.as_tensor(image)
    a, wa = _paste(tensor, 7)
    b, wb = _paste(tensor, 7)
    assert isinstance(a, torch.Tensor) and torch.equal(a, b) and torch.equal(wa, wb)
    with pytest.raises(ValueError, match="one channel"):
        AnatPaste()(torch.rand(3, SIZE, SIZE))
    with pytest.raises(ValueError, match="area_ratio"):
        AnatPaste(area_ratio=(0.2, 0.1))


def test_a_batch_is_pasted_from_numpys_global_generator():
    batch = torch.stack([torch.as_tensor(synthetic_radiograph(seed=s)[0]) for s in range(3)])
    transform = paste_transform("anatpaste")
    np.random.seed(5)
    first, weight = paste_batch(transform, batch)
    np.random.seed(5)
    again, _ = paste_batch(transform, batch)  # the global state decides: a resume redraws it
    assert torch.equal(first, again) and first.shape == weight.shape == batch.shape
    assert not torch.equal(paste_batch(transform, batch)[0], first)  # the next batch differs
