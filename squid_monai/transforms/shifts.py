"""Acquisition shifts: what a different scanner, protocol or archive does to a radiograph,
applied to the *raw* image before the model's own preprocessing (the shift test,
``docs/SHIFT_TEST.md``).

Strengths are relative to the raw image (its value range, a share of its side), so that a
shift means the same on a 224 px JPEG and a 2,000 px DICOM, and they are strong enough to
survive the model's own downsampling (to 64 px for GANomaly's chest recipe): a blur of 1.5
raw pixels, say, would vanish in it.

Why: validation and report images are carved from the training split, so they share its
acquisition, and a score that lives on global sharpness or contrast looks good on them. A
hospital's new studies differ in exposure, detector, processing and archiving; each shift
below stands for one such difference, at a strength an image reader would still accept.

Every shift works on the image in [0, 1] (the stored value range ``meta["value_range"]`` of
:class:`~squid_monai.transforms.loading.LoadRadiograph`, else the image's own min and max,
mapped linearly), then the result is clipped to [0, 1], mapped back to the stored units and,
for integer-valued images, rounded to integers (what an acquisition stores). The random ones
(noise, crop position) draw from a generator seeded by the run's seed, the shift's name and
the image's file name (:func:`image_seed`), so a shifted image is the same on every run, in
every batch and order. Implemented with MONAI transforms where MONAI has one.

=================  ================================================================
``contrast_down``  linear contrast x 0.7 about the image mean (``ScaleIntensityFixedMean``)
``contrast_up``    linear contrast x 1.3 about the image mean, clipped
``gamma_0.67``     ``AdjustContrast(gamma=0.67)``: ``((x - min) / range) ** g * range + min``
``gamma_1.5``      the same with gamma 1.5
``blur``           ``GaussianSmooth``, sigma 1 % of the image side (borders reflected)
``sharpen``        ``GaussianSharpen``, sigma1 0.25 % and sigma2 1 % of the side, alpha 1.5:
                   ``b + alpha * (b - G_sigma2(b))``, ``b = G_sigma1(x)``: edge enhancement
``gauss_noise``    additive Gaussian noise, std 0.05 (``RandGaussianNoise``, fixed std)
``poisson_noise``  quantum noise: ``Poisson(100 x) / 100`` (no MONAI transform has it)
``down_up``        resolution: ``Zoom(0.3, mode="area")`` then ``Resize`` back (bilinear)
``jpeg``           re-encoded as 8-bit JPEG at quality 30 (Pillow; no MONAI transform)
``crop``           a random 80 % x 80 % window (``RandSpatialCrop``) resized back (bilinear)
``zoom_out``       ``Zoom(0.85)``, keeping the size: the field of view 18 % wider, black border
=================  ================================================================
"""

from __future__ import annotations

import io
import math
import zlib
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import (
    AdjustContrast,
    Compose,
    GaussianSharpen,
    GaussianSmooth,
    MapTransform,
    RandGaussianNoise,
    RandSpatialCrop,
    Resize,
    ScaleIntensityFixedMean,
    Zoom,
)
from PIL import Image

__all__ = [
    "SHIFTS",
    "AcquisitionShiftd",
    "Shift",
    "apply_shift",
    "image_seed",
    "shifted_transforms",
]


def _reflected(transform: Callable, x: torch.Tensor, pad: int) -> torch.Tensor:
    """``transform`` of a (1, H, W) image with its borders reflected by ``pad`` pixels first
    (MONAI's Gaussian filters pad with zeros, which would darken the border), cropped back."""
    pad = min(pad, x.shape[-1] - 1, x.shape[-2] - 1)
    out = torch.as_tensor(transform(F.pad(x[None], (pad,) * 4, mode="reflect")[0]))
    return out[..., pad : pad + x.shape[-2], pad : pad + x.shape[-1]]


def _gaussian_pad(*sigmas: float) -> int:
    return math.ceil(4.0 * sum(sigmas)) + 1  # MONAI truncates its kernels at 4 sigma


def contrast(x: torch.Tensor, factor: float, seed: int = 0) -> torch.Tensor:
    """``x * (1 + factor)``, shifted back to the image's mean."""
    return ScaleIntensityFixedMean(factor=factor)(x)


def gamma(x: torch.Tensor, value: float, seed: int = 0) -> torch.Tensor:
    return AdjustContrast(gamma=value)(x)


def _side(x: torch.Tensor) -> float:
    return float(min(x.shape[1:]))


def blur(x: torch.Tensor, sigma: float, seed: int = 0) -> torch.Tensor:
    """Gaussian blur, ``sigma`` a share of the image's shorter side."""
    s = sigma * _side(x)
    return _reflected(GaussianSmooth(sigma=s), x, _gaussian_pad(s))


def sharpen(
    x: torch.Tensor, sigma1: float, sigma2: float, alpha: float, seed: int = 0
) -> torch.Tensor:
    """MONAI's edge enhancement, both sigmas a share of the image's shorter side."""
    s1, s2 = sigma1 * _side(x), sigma2 * _side(x)
    return _reflected(GaussianSharpen(sigma1=s1, sigma2=s2, alpha=alpha), x, _gaussian_pad(s1, s2))


def gaussian_noise(x: torch.Tensor, std: float, seed: int = 0) -> torch.Tensor:
    noise = RandGaussianNoise(prob=1.0, std=std, sample_std=False)
    noise.set_random_state(seed=seed)
    return noise(x)


def poisson_noise(x: torch.Tensor, photons: float, seed: int = 0) -> torch.Tensor:
    """Photon counting: ``photons * x`` expected counts per pixel, drawn and scaled back."""
    generator = torch.Generator().manual_seed(seed)
    return torch.poisson(x.double() * photons, generator=generator).float() / photons


def down_up(x: torch.Tensor, factor: float, seed: int = 0) -> torch.Tensor:
    small = Zoom(zoom=factor, mode="area", keep_size=False)(x)
    return Resize(spatial_size=tuple(x.shape[1:]), mode="bilinear")(small)


def jpeg(x: torch.Tensor, quality: int, seed: int = 0) -> torch.Tensor:
    """8-bit JPEG re-encoding at ``quality`` (Pillow's encoder, 4:2:0 irrelevant for grey)."""
    pixels = (x[0].double().clamp(0, 1) * 255).round().to(torch.uint8).numpy()
    buffer = io.BytesIO()
    Image.fromarray(pixels, mode="L").save(buffer, format="JPEG", quality=quality)
    decoded = np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("L"), dtype=np.float32)
    return torch.from_numpy(decoded / 255.0)[None]


def crop(x: torch.Tensor, fraction: float, seed: int = 0) -> torch.Tensor:
    size = tuple(max(1, round(fraction * s)) for s in x.shape[1:])
    window = RandSpatialCrop(roi_size=size, random_size=False)
    window.set_random_state(seed=seed)
    return Resize(spatial_size=tuple(x.shape[1:]), mode="bilinear")(window(x))


def zoom_out(x: torch.Tensor, factor: float, seed: int = 0) -> torch.Tensor:
    return Zoom(zoom=factor, mode="area", padding_mode="constant", keep_size=True)(x)


@dataclass(frozen=True)
class Shift:
    """One acquisition shift: ``function(x01, seed=...)`` on a (1, H, W) image in [0, 1]."""

    name: str
    function: Callable[..., torch.Tensor]
    description: str
    params: dict = field(default_factory=dict)

    def __call__(self, x: torch.Tensor, seed: int = 0) -> torch.Tensor:
        return self.function(x, seed=seed, **self.params)


def _shift(name: str, function: Callable, description: str, **params) -> Shift:
    return Shift(name, function, description, params)


#: The documented shifts (module docstring), by name, in the order of the report.
SHIFTS: dict[str, Shift] = {
    s.name: s
    for s in (
        _shift("contrast_down", contrast, "linear contrast x 0.7 about the mean", factor=-0.3),
        _shift(
            "contrast_up", contrast, "linear contrast x 1.3 about the mean, clipped", factor=0.3
        ),
        _shift("gamma_0.67", gamma, "gamma 0.67 (brighter mid-tones)", value=0.67),
        _shift("gamma_1.5", gamma, "gamma 1.5 (darker mid-tones)", value=1.5),
        _shift("blur", blur, "Gaussian blur, sigma 1 % of the side", sigma=0.01),
        _shift(
            "sharpen",
            sharpen,
            "edge enhancement (GaussianSharpen, sigmas 0.25 % / 1 % of the side, alpha 1.5)",
            sigma1=0.0025,
            sigma2=0.01,
            alpha=1.5,
        ),
        _shift("gauss_noise", gaussian_noise, "additive Gaussian noise, std 0.05", std=0.05),
        _shift(
            "poisson_noise",
            poisson_noise,
            "Poisson (quantum) noise, 100 photons at full scale",
            photons=100.0,
        ),
        _shift("down_up", down_up, "resolution x 0.3 (area) and restored (bilinear)", factor=0.3),
        _shift("jpeg", jpeg, "8-bit JPEG re-encoding, quality 30", quality=30),
        _shift("crop", crop, "random 80 % window resized back (seeded per image)", fraction=0.8),
        _shift("zoom_out", zoom_out, "field of view 1/0.85 wider, black border", factor=0.85),
    )
}


def image_seed(seed: int, shift: str, name: str) -> int:
    """The seed of one shifted image: the same for the same run seed, shift and file name,
    whatever the batch or order (CRC-32, not Python's salted ``hash``)."""
    return zlib.crc32(f"{seed}|{shift}|{name}".encode())


def apply_shift(
    image: torch.Tensor,
    shift: str,
    seed: int = 0,
    name: str = "",
    value_range: tuple[float, float] | None = None,
) -> torch.Tensor:
    """The shifted (1, H, W) raw ``image`` (see the module docstring): in its stored units
    ``value_range`` (default: its own min and max), clipped to them, rounded when integer."""
    if shift not in SHIFTS:
        raise ValueError(f"unknown shift {shift!r}; known: {list(SHIFTS)}")
    x = torch.as_tensor(image.as_tensor() if isinstance(image, MetaTensor) else image).float()
    if x.ndim != 3 or x.shape[0] != 1:
        raise ValueError(
            f"{name or 'image'}: a shift needs a (1, H, W) image, got shape {tuple(x.shape)}"
        )
    low, high = (float(x.min()), float(x.max())) if value_range is None else map(float, value_range)
    span = high - low if high > low else 1.0
    x01 = ((x - low) / span).clamp(0, 1)
    out = (
        torch.as_tensor(SHIFTS[shift](x01, seed=image_seed(seed, shift, name))).float().clamp(0, 1)
        * span
        + low
    )
    integral = bool(torch.equal(x, x.round()))
    return out.round() if integral else out


class AcquisitionShiftd(MapTransform):
    """Dictionary transform: each ``keys`` entry, a loaded raw (1, H, W) ``MetaTensor``,
    replaced by its ``shift`` (:func:`apply_shift`, seeded by ``seed`` and the file name in
    ``meta["filename_or_obj"]``); the metadata is kept."""

    def __init__(
        self, keys: KeysCollection, shift: str, seed: int = 0, allow_missing_keys: bool = False
    ):
        if shift not in SHIFTS:
            raise ValueError(f"unknown shift {shift!r}; known: {list(SHIFTS)}")
        super().__init__(keys, allow_missing_keys)
        self.shift, self.seed = shift, seed

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            image = d[key]
            meta = dict(getattr(image, "meta", {}) or {})
            value_range = meta.get("value_range")
            out = apply_shift(
                image,
                self.shift,
                self.seed,
                str(meta.get("filename_or_obj", "")),
                None if value_range is None else tuple(np.asarray(value_range).reshape(2)),
            )
            d[key] = MetaTensor(out, meta=meta)
        return d


def shifted_transforms(
    image_size: int, shift: str | None, seed: int = 0, intensity: str = "percentile"
) -> Compose:
    """The model's inference preprocessing with ``shift`` applied right after loading (the
    raw image), before the intensity scaling and resize; ``None``: no shift."""
    from squid_monai.transforms.compose import check_switches, inference_transforms

    steps = list(inference_transforms(image_size, **check_switches(intensity=intensity)).transforms)
    if shift is not None:
        steps.insert(1, AcquisitionShiftd("image", shift, seed))
    return Compose(steps)
