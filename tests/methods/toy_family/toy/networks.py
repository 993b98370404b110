"""The toy network: a plain ``nn.Module`` returning its reconstruction."""

import torch
from torch import nn


class ToyAutoEncoder(nn.Module):
    def __init__(self, image_size: int, channels: int = 4):
        super().__init__()
        self.image_size = image_size
        self.encode = nn.Sequential(nn.Conv2d(1, channels, 4, stride=2, padding=1), nn.ReLU())
        self.decode = nn.Sequential(
            nn.ConvTranspose2d(channels, 1, 4, stride=2, padding=1), nn.Sigmoid()
        )

    def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"reconstruction": self.decode(self.encode(image))}
