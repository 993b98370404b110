"""AnatPaste's one-class classifier (Sato et al.; the authors' code builds on the CutPaste
re-implementation's ``ProjectionNet``): a ResNet-18 trunk, a projection head and a two-way
classifier (normal vs pasted).

* trunk: MONAI's :class:`~monai.networks.nets.ResNet` with basic blocks (2, 2, 2, 2), 2-D, one
  input channel, the torchvision ResNet-18 stem (7 x 7 stride-2 convolution and max pooling),
  1 x 1 projection shortcuts without bias, global average pooling; its 512 features
  (``widen_factor`` x 512) are the *embedding* the Gaussian density is fitted on;
* head: ``head_layers`` x (Linear 512 + BatchNorm + ReLU), then Linear 128 + BatchNorm + ReLU
  (the authors' ``[512] * head_layer + [128]``, ``head_layer`` 1 in their training script);
* classifier: Linear 128 -> 2 (logits; cross-entropy in :mod:`.losses`).

Inputs are the bundle's [0, 1] images; the network maps them to [-1, 1] first (the authors'
``Normalize(0.5, 0.5)``). The authors feed the grey radiograph as three equal channels to a
3-channel ResNet; one channel is the same function with the three first-layer kernels summed.
Trained from scratch: the authors' README command uses ``--no-pretrained``.
"""

from __future__ import annotations

import torch
from monai.networks.nets import ResNet
from torch import nn

__all__ = ["AnatPasteNet"]


class AnatPasteNet(nn.Module):
    """Image (B, 1, H, W) in [0, 1] -> ``{"embedding": (B, D), "logits": (B, 2)}``, D the
    trunk's width (512 x ``widen_factor``)."""

    def __init__(
        self,
        image_size: int = 256,
        in_channels: int = 1,
        widen_factor: float = 1.0,
        head_layers: int = 1,
        head_width: int = 512,
        projection_size: int = 128,
        num_classes: int = 2,
    ):
        super().__init__()
        if image_size < 32:
            raise ValueError(
                f"image_size must be at least 32 (ResNet-18 halves it 5 times), got {image_size}"
            )
        self.image_size = image_size
        self.trunk = ResNet(
            "basic",
            [2, 2, 2, 2],
            [64, 128, 256, 512],
            spatial_dims=2,
            n_input_channels=in_channels,
            conv1_t_size=7,
            conv1_t_stride=2,
            widen_factor=widen_factor,
            feed_forward=False,
            bias_downsample=False,
        )
        self.embedding_size = int(512 * widen_factor)
        layers: list[nn.Module] = []
        width = self.embedding_size
        for size in [head_width] * head_layers + [projection_size]:
            layers += [nn.Linear(width, size), nn.BatchNorm1d(size), nn.ReLU(inplace=True)]
            width = size
        self.head = nn.Sequential(*layers)
        self.classifier = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        embedding = self.trunk(x * 2.0 - 1.0)
        return {"embedding": embedding, "logits": self.classifier(self.head(embedding))}
