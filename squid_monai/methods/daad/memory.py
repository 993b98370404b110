"""DAAD's block-wise memory: divide a feature map into a grid of blocks, replace every block
by a sparse combination of learnt prototype blocks, assemble the map again.

Source: ``seeds/daad_paper.txt``, section 3.1.2 "Block-wise Memory Module".

* Block-wise query: a map ``f_l`` of size ``H x W x C`` is divided evenly into
  ``Q = r_h x r_w x r_c`` blocks of ``H/r_h x W/r_w x C/r_c``; each block, flattened, is a
  query ``q^k`` of dimension ``D`` (the bank's item dimension). ``r_h, r_w, r_c`` are
  division *rates* (the number of blocks along each axis), not block sizes: the paper's best
  ``8 x 8 x 1`` cuts every level into an 8 x 8 grid, so the blocks are larger at the finer
  levels. Each level has its own bank ``M`` (``N x D``, ``N = 500``).
* Addressing, eq. (1): ``w_i = softmax_i(cos(q^k, m_i))`` (no temperature).
* Aggregation, eq. (2): ``q_hat^k = w M``.
* Sparsity: "we drop the items whose memory weights are less than 1/N when computing
  q_hat^k". The paper does not say whether the kept weights are re-normalised. We
  re-normalise them to sum to one (``renormalise=True``, the default), as MemAE's hard
  shrinkage does (the memory DAAD generalises, ref. [14]; BASELINES.md, "MemAE"), because
  without it the aggregate's norm shrinks with the sum of the kept weights: with cosine
  logits in [-1, 1] and N = 500 that sum lies anywhere between about 0.005 (one item kept)
  and about 0.9, so the decoder would receive blocks whose scale says how peaked the addressing was
  rather than which pattern matched. ``renormalise=False`` is the literal reading.

Choices where the paper is silent: a weight exactly equal to ``1/N`` is kept ("less than"
is dropped); the largest weight of each query is always kept (it is >= 1/N in exact
arithmetic because the weights average 1/N, but a uniform softmax can round just below it
in float32, which would leave nothing to re-normalise); addressing runs in float32 under
autocast; items are initialised uniformly in ``+-1/sqrt(D)`` (MemAE's initialisation).
Where a map is too small for the requested rate (fewer than ``r`` pixels, or not divisible
by ``r``), :func:`division_rates` takes the largest rate ``<= r`` that divides the side
evenly (e.g. a 4 x 4 map with ``r = 8`` -> ``r = 4``, one-pixel blocks; 12 -> 6).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["BlockMemory", "division_rate", "division_rates", "drop_below", "memory_read"]


def division_rate(side: int, rate: int) -> int:
    """The largest division rate ``<= rate`` that divides ``side`` evenly (>= 1)."""
    if side < 1 or rate < 1:
        raise ValueError(f"side and rate must be positive, got {side} and {rate}")
    return max(d for d in range(1, min(rate, side) + 1) if side % d == 0)


def division_rates(sides: Sequence[int], rate: int) -> tuple[int, ...]:
    """:func:`division_rate` of every level's side."""
    return tuple(division_rate(int(s), int(rate)) for s in sides)


def drop_below(weights: torch.Tensor, threshold: float, renormalise: bool = True) -> torch.Tensor:
    """Zero the weights below ``threshold`` (the paper's ``1/N``) along the last axis, the
    largest one always kept; optionally re-normalise what is left to sum to one."""
    keep = (weights >= threshold) | (weights >= weights.amax(dim=-1, keepdim=True))
    weights = weights * keep.to(weights.dtype)
    if renormalise:
        weights = weights / weights.sum(dim=-1, keepdim=True).clamp_min(1e-12)
    return weights


def memory_read(
    queries: torch.Tensor, memory: torch.Tensor, renormalise: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """Eq. (1)-(2) with the 1/N drop: ``queries`` (..., D), ``memory`` (N, D) ->
    (aggregated blocks (..., D), sparse weights (..., N))."""
    cosine = F.normalize(queries, dim=-1) @ F.normalize(memory, dim=-1).t()
    weights = drop_below(torch.softmax(cosine, dim=-1), 1.0 / memory.shape[0], renormalise)
    return weights @ memory, weights


class BlockMemory(nn.Module):
    """One level's block-wise memory (see the module docstring).

    Args:
        channels: ``C`` of the level's feature map.
        size: its spatial size, ``H`` (square) or ``(H, W)``.
        items: ``N``, the bank size (paper: 500).
        division: ``r_h = r_w``, or ``(r_h, r_w)``; each must divide the map evenly (use
            :func:`division_rate` to fit a small map).
        channel_division: ``r_c`` (paper's best: 1).
        renormalise: re-normalise the kept weights (see the module docstring).

    ``forward(f)`` maps (B, C, H, W) to the assembled (B, C, H, W); :meth:`divide`,
    :meth:`address` and :meth:`assemble` are its three steps.
    """

    def __init__(
        self,
        channels: int,
        size: int | Sequence[int],
        items: int = 500,
        division: int | Sequence[int] = 8,
        channel_division: int = 1,
        renormalise: bool = True,
    ):
        super().__init__()
        h, w = (int(size), int(size)) if isinstance(size, int) else (int(size[0]), int(size[1]))
        rh, rw = (
            (int(division), int(division))
            if isinstance(division, int)
            else (int(division[0]), int(division[1]))
        )
        rc = int(channel_division)
        for name, side, rate in (("height", h, rh), ("width", w, rw), ("channels", channels, rc)):
            if rate < 1 or side % rate:
                raise ValueError(
                    f"division rate {rate} does not divide the map's {name} {side} evenly"
                )
        self.channels, self.size, self.rates = int(channels), (h, w), (rh, rw, rc)
        #: one block's shape (C/r_c, H/r_h, W/r_w) and its flattened dimension D
        self.block_shape = (channels // rc, h // rh, w // rw)
        self.dim = math.prod(self.block_shape)
        self.items, self.renormalise = int(items), bool(renormalise)
        bound = 1.0 / math.sqrt(self.dim)
        self.memory = nn.Parameter(torch.empty(self.items, self.dim).uniform_(-bound, bound))

    @property
    def blocks(self) -> int:
        """``Q = r_h * r_w * r_c``, the queries per image."""
        return self.rates[0] * self.rates[1] * self.rates[2]

    def divide(self, f: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, Q, D): block ``(c, y, x)`` of the grid at index
        ``(c * r_h + y) * r_w + x``, flattened in (channel, row, column) order."""
        rh, rw, rc = self.rates
        cb, bh, bw = self.block_shape
        x = f.reshape(-1, rc, cb, rh, bh, rw, bw).permute(0, 1, 3, 5, 2, 4, 6)
        return x.reshape(-1, self.blocks, self.dim)

    def assemble(self, q: torch.Tensor) -> torch.Tensor:
        """(B, Q, D) -> (B, C, H, W), the inverse of :meth:`divide`."""
        rh, rw, rc = self.rates
        cb, bh, bw = self.block_shape
        x = q.reshape(-1, rc, rh, rw, cb, bh, bw).permute(0, 1, 4, 2, 5, 3, 6)
        return x.reshape(-1, self.channels, self.size[0], self.size[1])

    def address(self, q: torch.Tensor) -> torch.Tensor:
        """Sparse addressing weights (B, Q, N) of the queries (B, Q, D)."""
        return self.read(q)[1]

    def read(self, q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(aggregated blocks (B, Q, D), weights (B, Q, N)), in float32."""
        with torch.autocast(device_type=q.device.type, enabled=False):
            return memory_read(q.float(), self.memory.float(), self.renormalise)

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        return self.assemble(self.read(self.divide(f))[0]).to(f.dtype)

    def extra_repr(self) -> str:
        return (
            f"channels={self.channels}, size={self.size}, rates(r_h, r_w, r_c)={self.rates}, "
            f"block={self.block_shape}, items={self.items}, renormalise={self.renormalise}"
        )
