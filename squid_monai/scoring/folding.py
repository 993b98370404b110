"""The eager PyTorch fast path of a trained scorer: BatchNorm folded into the convolutions
and ``channels_last`` weights.

In eval mode a BatchNorm after a convolution is a fixed affine map (running statistics),
so it folds into the convolution's weights and bias (``torch.nn.utils.fusion``), one pass
over the activations fewer per layer. The discriminator's
:class:`~squid_monai.methods.squid.networks.PerImageBatchNorm2d` normalises each image by its own
statistics: not a fixed map, so it is never folded, and per-image normalisation (and with
it batch independence) survives. ``channels_last`` lets oneDNN run the convolutions without
reordering every activation in and out of its blocked layout.
"""

from __future__ import annotations

import copy

import torch
from monai.networks.blocks import Convolution
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

__all__ = ["fold_batchnorm", "fast_eager"]


def fold_batchnorm(scorer: nn.Module) -> nn.Module:
    """A copy of ``scorer`` in which every MONAI ``Convolution`` whose normalisation is a plain
    ``BatchNorm2d`` right after its convolution carries it in its weights (the norm becomes
    an identity). Scores equal the original's to float rounding."""
    folded = copy.deepcopy(scorer).eval()
    for module in folded.modules():
        if not isinstance(module, Convolution) or not hasattr(module, "adn"):
            continue
        order = list(module.adn._modules)
        norm = module.adn._modules.get("N")
        if (
            order[:1] == ["N"]
            and type(norm) is nn.BatchNorm2d
            and isinstance(module.conv, nn.Conv2d)
        ):
            module.conv = fuse_conv_bn_eval(module.conv, norm)
            module.adn.N = nn.Identity()
    return folded


def fast_eager(scorer: nn.Module, channels_last: bool = True) -> nn.Module:
    """:func:`fold_batchnorm`, then the weights in ``channels_last`` (inputs need no change:
    a one-channel image has the same layout in both formats)."""
    folded = fold_batchnorm(scorer)
    return folded.to(memory_format=torch.channels_last) if channels_last else folded
