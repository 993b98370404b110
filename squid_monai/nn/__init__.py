"""Generic building blocks that several families share (convolution blocks, tiling); nothing
family-specific lives here."""

from .blocks import ResidualDoubleConv, UpBlock, position_code, tile, untile, zero_tiles

__all__ = ["ResidualDoubleConv", "UpBlock", "position_code", "tile", "untile", "zero_tiles"]
