"""Resizing to the model size and the paper's training augmentation.

Resizing squashes the image to a square (no padding, no cropping), as the SQUID paper
does: chest radiographs are framed consistently, and the model's spatial memory relies
on each anatomical region landing on the same tiles. Downsampling uses bilinear
interpolation with antialiasing (a triangle filter as wide as the scale factor), so a
2000-pixel detector image does not alias into noise at 128 pixels.

Augmentation (SQUID.md section 4): a random translation within +-5 % of the image size
on each axis and one random isotropic scaling factor in [0.95, 1.05], around the image
centre, with zeros outside the image (as torchvision's ``RandomAffine``, which the
authors' code uses). Two resamplings (SQUID.md section 7, U1):

- ``"bilinear"`` (default): bilinear ``grid_sample`` with sub-pixel shifts. A sub-pixel
  bilinear shift is a low-pass filter, so training images come out slightly blurrier
  than un-augmented ones.
- ``"nearest"``: what the authors' torchvision ``RandomAffine`` on a PIL image does:
  nearest-neighbour resampling and translations rounded to whole pixels (the same random
  draws, rounded), so every output value is an input value or the zero fill, and a
  whole-pixel shift at scale 1 is an exact shift with zero fill.

Sampling goes through MONAI's ``Randomizable`` state, so
``set_random_state(seed)`` (or ``Compose.set_random_state``, or ``monai.utils.set_determinism``)
makes it reproducible.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform, RandomizableTransform, Transform

#: The paper's augmentation ranges: translation as a fraction of the image size,
#: and the half-width of the scaling interval around 1.
PAPER_TRANSLATE_FRACTION = 0.05
PAPER_SCALE_DELTA = 0.05
#: Resamplings of the augmentation (see the module docstring).
AUGMENT_RESAMPLINGS = ("bilinear", "nearest")


class ResizeRadiograph(Transform):
    """Resize a (C, H, W) image to ``image_size`` (int: square) with antialiased bilinear.

    Not MONAI's ``Resize(anti_aliasing=True)``: that one smooths with a Gaussian before
    bilinear sampling, where this is torch's antialiased bilinear (a triangle filter as wide
    as the scale factor). From 224 to 128 pixels on ZhangLab the two differ by up to 0.09
    (median image; 0.17 at worst, mean 0.003) on the [0, 1] scale: another, blurrier input
    than every trained model saw (``tests/transforms/test_monai_equivalents.py`` measures it).
    """

    def __init__(self, image_size: int | Sequence[int]) -> None:
        self.spatial_size = _as_size(image_size)

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        if tuple(img.shape[1:]) == self.spatial_size:
            return img.float()
        tensor = img.as_tensor() if isinstance(img, MetaTensor) else torch.as_tensor(img)
        tensor = tensor.float()
        out = F.interpolate(
            tensor[None],
            size=self.spatial_size,
            mode="bilinear",
            antialias=True,
            align_corners=False,
        )[0]
        # interpolation is convex: clamp away float round-off outside the input's range
        out = out.clamp_(tensor.min(), tensor.max())
        if isinstance(img, MetaTensor):
            return MetaTensor(out, meta=dict(img.meta))
        return out


class ResizeRadiographd(MapTransform):
    """Dictionary version of :class:`ResizeRadiograph`."""

    def __init__(
        self,
        keys: KeysCollection,
        image_size: int | Sequence[int],
        allow_missing_keys: bool = False,
    ):
        super().__init__(keys, allow_missing_keys)
        self.resizer = ResizeRadiograph(image_size)

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.resizer(d[key])
        return d


class RandScaleTranslate(RandomizableTransform):
    """Random translation and isotropic scaling of a (C, H, W) image about its centre.

    Not MONAI's ``RandAffine``: its geometry is the same (``Affine(scale_params=1 / s,
    translate_params=-t / s)`` gives this output to 4e-6; ``tests/transforms/
    test_monai_equivalents.py``), but it draws one scaling factor per axis (anisotropic, where
    the paper scales isotropically), draws in another order (other augmentations from the same
    seed), has no whole-pixel translations for the ``"nearest"`` (authors') resampling, and
    costs about twice as much per image.

    Args:
        translate: maximum shift on each axis, as a fraction of that axis' size.
        scale: the scaling factor is drawn uniformly from [1 - scale, 1 + scale].
        prob: probability of augmenting at all.
        padding_mode: ``"zeros"``, ``"border"`` or ``"reflection"`` outside the image.
        mode: ``"bilinear"`` (sub-pixel shifts) or ``"nearest"`` (whole-pixel shifts,
            nearest-neighbour resampling: the authors' torchvision augmentation).
    """

    def __init__(
        self,
        translate: float = PAPER_TRANSLATE_FRACTION,
        scale: float = PAPER_SCALE_DELTA,
        prob: float = 1.0,
        padding_mode: str = "zeros",
        mode: str = "bilinear",
    ) -> None:
        RandomizableTransform.__init__(self, prob)
        if translate < 0 or not 0 <= scale < 1:
            raise ValueError(f"need translate >= 0 and 0 <= scale < 1, got {translate}, {scale}")
        self.mode = check_resampling(mode)
        self.translate = float(translate)
        self.scale = float(scale)
        self.padding_mode = padding_mode
        self.translation = np.zeros(2)  # pixels (rows, cols), from the last randomize()
        self.scale_factor = 1.0

    def randomize(self, spatial_size: Sequence[int]) -> None:
        super().randomize(None)
        if not self._do_transform:
            self.translation, self.scale_factor = np.zeros(2), 1.0
            return
        limits = self.translate * np.asarray(spatial_size, dtype=float)
        self.translation = self.R.uniform(-limits, limits)
        if self.mode == "nearest":  # torchvision: round(uniform(-max_dx, max_dx)) pixels
            self.translation = np.round(self.translation)
        self.scale_factor = float(self.R.uniform(1.0 - self.scale, 1.0 + self.scale))

    def __call__(self, img: torch.Tensor, randomize: bool = True) -> torch.Tensor:
        if randomize:
            self.randomize(img.shape[1:])
        if not self._do_transform:
            return img.float()
        return _scale_translate(
            img, self.scale_factor, self.translation, self.padding_mode, self.mode
        )


class RandScaleTranslated(RandomizableTransform, MapTransform):
    """Dictionary version of :class:`RandScaleTranslate`: one draw per item, shared by all keys."""

    def __init__(
        self,
        keys: KeysCollection,
        translate: float = PAPER_TRANSLATE_FRACTION,
        scale: float = PAPER_SCALE_DELTA,
        prob: float = 1.0,
        padding_mode: str = "zeros",
        mode: str = "bilinear",
        allow_missing_keys: bool = False,
    ) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        RandomizableTransform.__init__(self, prob)
        self.augment = RandScaleTranslate(
            translate=translate, scale=scale, prob=1.0, padding_mode=padding_mode, mode=mode
        )

    def set_random_state(self, seed: int | None = None, state: np.random.RandomState | None = None):
        super().set_random_state(seed, state)
        self.augment.set_random_state(seed, state)
        return self

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict:
        d = dict(data)
        self.randomize(None)
        first = self.first_key(d)
        if first == ():
            return d
        if self._do_transform:
            self.augment.randomize(d[first].shape[1:])
        for key in self.key_iterator(d):
            d[key] = self.augment(d[key], randomize=False) if self._do_transform else d[key].float()
        return d


def check_resampling(mode: str) -> str:
    """``mode`` if it is one of :data:`AUGMENT_RESAMPLINGS`, else a ``ValueError``."""
    if mode not in AUGMENT_RESAMPLINGS:
        raise ValueError(
            f"augmentation resampling must be one of {AUGMENT_RESAMPLINGS}, got {mode!r}"
        )
    return mode


def _scale_translate(
    img: torch.Tensor,
    scale: float,
    translation: np.ndarray,
    padding_mode: str,
    mode: str = "bilinear",
) -> torch.Tensor:
    """Scale (C, H, W) content by ``scale`` about the image centre, then shift it by
    ``translation`` pixels (rows, cols); ``mode`` bilinear or nearest. A direct ``affine_grid`` / ``grid_sample``
    call: MONAI's generic ``Affine`` costs several times more per 128 px image."""
    tensor = img.as_tensor() if isinstance(img, MetaTensor) else torch.as_tensor(img)
    tensor = tensor.float()
    height, width = tensor.shape[-2:]
    # output pixel p (normalised, x then y) samples the input at (p - t) / s
    shift = torch.tensor([2.0 * translation[1] / width, 2.0 * translation[0] / height]) / scale
    theta = torch.cat([torch.eye(2) / scale, -shift[:, None]], dim=1)[None].float()
    grid = F.affine_grid(theta, [1, *tensor.shape], align_corners=False)
    out = F.grid_sample(
        tensor[None], grid, mode=mode, padding_mode=padding_mode, align_corners=False
    )[0]
    return MetaTensor(out, meta=dict(img.meta)) if isinstance(img, MetaTensor) else out


def _as_size(image_size: int | Sequence[int]) -> tuple[int, int]:
    size = (int(image_size),) * 2 if np.isscalar(image_size) else tuple(int(s) for s in image_size)
    if len(size) != 2 or min(size) < 1:
        raise ValueError(
            f"image_size must be a positive int or (height, width), got {image_size!r}"
        )
    return size
