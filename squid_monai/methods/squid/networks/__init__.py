"""SQUID's networks: plain ``nn.Module`` s with no I/O and no training logic (the presets that
build them: :mod:`..presets`; the generic blocks: :mod:`squid_monai.nn`)."""

from .discriminator import PerImageBatchNorm2d, SQUIDDiscriminator
from .generator import DecoderMemory, SQUIDDecoder, SQUIDEncoder, SQUIDGenerator
from .inpainting import ConvContext, InpaintingBlock, MaskedShortcut, NeighbourAttention
from .memory import MemoryMatrix, MemoryQueue, gumbel_shrinkage

__all__ = [
    "SQUIDGenerator",
    "SQUIDDiscriminator",
    "SQUIDEncoder",
    "SQUIDDecoder",
    "DecoderMemory",
    "InpaintingBlock",
    "NeighbourAttention",
    "ConvContext",
    "MaskedShortcut",
    "MemoryQueue",
    "MemoryMatrix",
    "gumbel_shrinkage",
    "PerImageBatchNorm2d",
]
