"""SQUID's in-painting block: every tile's features are replaced by normal patterns
retrieved from memory and in-painted from the retrieved patterns of its neighbours.

    x (B*T, C, h, w) -> 1x1 conv -> token q (B, T, D)
      -> memory read r (own region's queue, Gumbel shrinkage)
      -> context: attention with query q over the 8 neighbours' r (or a convolution)
      -> + binary position code -> 1x1 conv back to C channels
      -> masked shortcut with x (training only)
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from monai.networks.blocks import Convolution

from ....nn.blocks import RELU, ResidualDoubleConv, position_code, tile, untile
from .memory import MemoryMatrix, MemoryQueue

__all__ = ["MaskedShortcut", "NeighbourAttention", "ConvContext", "InpaintingBlock"]

_OFFSETS = [(dr, dc) for dr in (-1, 0, 1) for dc in (-1, 0, 1) if (dr, dc) != (0, 0)]


class MaskedShortcut(nn.Module):
    """Training-only mix of a transformed feature with its input, per spatial position.

    ``mode="hard"``: a Bernoulli(p) mask keeps the transformed feature, the rest keeps the
    input (the paper's choice); ``"soft"``: ``p * transformed + (1 - p) * input``;
    ``"none"``: always the transformed feature. In eval mode the output is always 100 %
    transformed, whatever the mode.
    """

    def __init__(self, mode: str = "hard", p: float = 0.95):
        super().__init__()
        if mode not in ("hard", "soft", "none"):
            raise ValueError(f"masked shortcut mode must be 'hard', 'soft' or 'none', got {mode!r}")
        self.mode, self.p = mode, p

    def forward(self, transformed: torch.Tensor, shortcut: torch.Tensor) -> torch.Tensor:
        if not self.training or self.mode == "none":
            return transformed
        if self.mode == "soft":
            return self.p * transformed + (1.0 - self.p) * shortcut
        b, _, h, w = transformed.shape
        keep = torch.rand(b, 1, h, w, device=transformed.device) < self.p
        return torch.where(keep, transformed, shortcut)


def _neighbours(grid: int) -> tuple[torch.Tensor, torch.Tensor]:
    """For each tile of a grid x grid layout, its 8 neighbours' indices (out-of-grid -> 0)
    and whether each neighbour exists."""
    index, valid = [], []
    for r in range(grid):
        for c in range(grid):
            row_i, row_v = [], []
            for dr, dc in _OFFSETS:
                inside = 0 <= r + dr < grid and 0 <= c + dc < grid
                row_i.append((r + dr) * grid + (c + dc) if inside else 0)
                row_v.append(inside)
            index.append(row_i)
            valid.append(row_v)
    return torch.tensor(index), torch.tensor(valid)


class NeighbourAttention(nn.Module):
    """Transformer in-painting over the 3x3 neighbourhood on the tile grid.

    Query: the tile's own encoder token; keys/values: the memory-retrieved tokens of its 8
    neighbours. Out-of-grid neighbours are padding: masked out of the attention
    (``mask_out_of_grid=True``), or taking part as zero tokens as in the authors' code.
    Keys and values are projected once per tile and then gathered, which is the same
    arithmetic as projecting every neighbour per query at an eighth of the cost.
    Output: ``ReLU(LN(attn) + r)``, then ``ReLU(LN(MLP) + .)``.
    """

    def __init__(
        self, dim: int, heads: int, mlp_dim: int, grid: int, mask_out_of_grid: bool = True
    ):
        super().__init__()
        if dim % heads:
            raise ValueError(f"token dim {dim} is not divisible by {heads} attention heads")
        self.heads, self.mask_out_of_grid = heads, mask_out_of_grid
        self.q, self.k, self.v, self.out = (nn.Linear(dim, dim) for _ in range(4))
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp_dim), nn.ReLU(), nn.Linear(mlp_dim, dim))
        index, valid = _neighbours(grid)
        self.register_buffer("neighbour_index", index, persistent=False)
        self.register_buffer("neighbour_valid", valid, persistent=False)

    def forward(self, query: torch.Tensor, retrieved: torch.Tensor) -> torch.Tensor:
        b, t, d = query.shape
        h = self.heads
        q = self.q(query).reshape(b, t, h, 1, d // h)
        k = self.k(retrieved)[:, self.neighbour_index].reshape(b, t, 8, h, d // h).transpose(2, 3)
        v = self.v(retrieved)[:, self.neighbour_index].reshape(b, t, 8, h, d // h).transpose(2, 3)
        valid = self.neighbour_valid  # (T, 8)
        has_neighbour = valid.any(dim=1)
        if self.mask_out_of_grid:
            # a tile with no neighbour at all (a 1 x 1 grid) attends to nothing: zero context
            mask = (valid | ~has_neighbour[:, None])[None, :, None, None, :]
        else:  # the authors' zero-padded tokens: their keys and values are the projection biases
            keep = valid[None, :, None, :, None].to(k.dtype)
            k = k * keep + (1 - keep) * self.k.bias.reshape(1, 1, h, 1, d // h)
            v = v * keep + (1 - keep) * self.v.bias.reshape(1, 1, h, 1, d // h)
            mask = None
        # 4-D (B*T, h, ., d/h), the layout every SDPA kernel and the ONNX exporter take
        if mask is not None:
            mask = mask.expand(b, t, 1, 1, 8).reshape(b * t, 1, 1, 8)
        attn = F.scaled_dot_product_attention(
            q.flatten(0, 1), k.flatten(0, 1), v.flatten(0, 1), attn_mask=mask
        )
        attn = self.out(attn.reshape(b, t, d))
        if self.mask_out_of_grid:
            attn = attn * has_neighbour[None, :, None].to(attn.dtype)
        x = F.relu(self.norm1(attn) + retrieved)
        return F.relu(self.norm2(self.mlp(x)) + x)


class ConvContext(nn.Module):
    """Ablation "convolution instead of transformer": the retrieved feature maps are laid
    out on the tile grid and mixed by a 3x3 double conv (the encoder token is not used)."""

    def __init__(self, channels: int, grid: int):
        super().__init__()
        self.grid = grid
        self.conv = ResidualDoubleConv(channels, channels)

    def forward(self, query: torch.Tensor, retrieved_maps: torch.Tensor) -> torch.Tensor:
        return tile(self.conv(untile(retrieved_maps, self.grid)), self.grid)


class InpaintingBlock(nn.Module):
    """Memory read + neighbourhood in-painting of per-tile feature maps.

    Args:
        in_channels, spatial_size: shape of one tile's input map (C, s, s).
        token_channels: width after the 1x1 projection; token dim = token_channels * s * s.
        grid: tiles per side (N); regions of a space-aware memory = N * N.
        slots, top_k: memory size and shrinkage k.
        heads, mlp_dim: transformer settings.
        memory: ``"queue"`` (real detached tokens, FIFO) or ``"matrix"`` (learnable).
        space_aware: one memory bank per tile position, or one shared bank.
        shrinkage: Gumbel shrinkage (top-k) or the plain softmax read.
        context: ``"transformer"`` or ``"conv"``.
        mask_out_of_grid: mask out-of-grid neighbours from the attention.
        shortcut, mask_prob: masked shortcut mode and keep probability.
    """

    def __init__(
        self,
        in_channels: int,
        spatial_size: int,
        token_channels: int,
        grid: int,
        slots: int,
        top_k: int,
        heads: int,
        mlp_dim: int,
        memory: str = "queue",
        space_aware: bool = True,
        shrinkage: bool = True,
        context: str = "transformer",
        mask_out_of_grid: bool = True,
        shortcut: str = "hard",
        mask_prob: float = 0.95,
    ):
        super().__init__()
        self.grid, self.token_channels = grid, token_channels
        dim = token_channels * spatial_size * spatial_size
        regions = grid * grid if space_aware else 1
        if memory == "queue":
            self.memory = MemoryQueue(regions, slots, dim, top_k, shrinkage)
        elif memory == "matrix":
            self.memory = MemoryMatrix(regions, slots, dim, top_k, shrinkage)
        else:
            raise ValueError(f"memory must be 'queue' or 'matrix', got {memory!r}")
        if context == "transformer":
            self.context = NeighbourAttention(dim, heads, mlp_dim, grid, mask_out_of_grid)
        elif context == "conv":
            self.context = ConvContext(token_channels, grid)
        else:
            raise ValueError(f"context must be 'transformer' or 'conv', got {context!r}")
        self.register_buffer("code", position_code(grid * grid), persistent=False)
        bits = self.code.shape[1]
        self.project_in = Convolution(
            2, in_channels, token_channels, kernel_size=1, act=RELU, norm="batch"
        )
        self.project_out = Convolution(
            2, token_channels + bits, in_channels, kernel_size=1, act=RELU, norm="batch"
        )
        self.shortcut = MaskedShortcut(shortcut, mask_prob)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B*T, C, s, s) -> in-painted (B*T, C, s, s) and the detached tokens (B, T, D)
        to write into the queue after the generator's optimiser step."""
        n, _, s, _ = x.shape
        t = self.grid * self.grid
        z = self.project_in(x)
        tokens = z.reshape(n // t, t, -1)
        retrieved = self.memory.read(tokens)
        if isinstance(self.context, ConvContext):
            ctx = self.context(tokens, retrieved.reshape(z.shape))
        else:
            ctx = self.context(tokens, retrieved).reshape(z.shape)
        code = self.code.to(ctx.dtype).repeat(n // t, 1)[:, :, None, None].expand(-1, -1, s, s)
        y = self.project_out(torch.cat([ctx, code], dim=1))
        return self.shortcut(y, x), tokens.detach()

    def enqueue(self, tokens: torch.Tensor) -> None:
        self.memory.enqueue(tokens)
