"""SQUID networks: plain ``nn.Module`` s with no I/O and no training logic."""

from .blocks import ResidualDoubleConv, UpBlock, position_code, tile, untile, zero_tiles
from .discriminator import PerImageBatchNorm2d, SQUIDDiscriminator
from .generator import DecoderMemory, SQUIDDecoder, SQUIDEncoder, SQUIDGenerator
from .inpainting import ConvContext, InpaintingBlock, MaskedShortcut, NeighbourAttention
from .memory import MemoryMatrix, MemoryQueue, gumbel_shrinkage
from .presets import PRESETS, build, get_config

__all__ = [
    "PRESETS", "build", "get_config",
    "SQUIDGenerator", "SQUIDDiscriminator", "SQUIDEncoder", "SQUIDDecoder", "DecoderMemory",
    "InpaintingBlock", "NeighbourAttention", "ConvContext", "MaskedShortcut",
    "MemoryQueue", "MemoryMatrix", "gumbel_shrinkage", "PerImageBatchNorm2d",
    "ResidualDoubleConv", "UpBlock", "tile", "untile", "zero_tiles", "position_code",
]
