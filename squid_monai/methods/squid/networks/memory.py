"""Memories of normal patterns: the space-aware FIFO queue, the learnable matrix, and
the Gumbel shrinkage that reads them.

Both memories hold ``regions`` independent banks of ``slots`` x ``dim`` entries. A query
token of region ``r`` (shape ``(B, R, D)``) is compared to the entries of its own bank by a
plain dot product (no temperature), the similarities go through :func:`gumbel_shrinkage`,
and the weighted sum of the bank's entries is returned. With ``regions == 1`` every token
reads the same shared bank (the "no space-aware memory" ablation).
"""

from __future__ import annotations

import torch
import torch.nn as nn

__all__ = ["gumbel_shrinkage", "nearest_distance", "MemoryQueue", "MemoryMatrix"]


def gumbel_shrinkage(logits: torch.Tensor, k: int) -> torch.Tensor:
    """SQUID eq. 1: ``sg(hs(softmax(w), k) - softmax(w)) + softmax(w)`` over the last dim.

    Forward: exactly the ``k`` largest softmax weights survive, re-normalised to sum to 1
    (ties are broken by :func:`torch.topk`). Backward: the gradient of the plain softmax,
    so every entry receives gradient (straight-through; no Gumbel noise is drawn).
    """
    soft = torch.softmax(logits, dim=-1)
    if k >= soft.shape[-1]:
        return soft
    top = torch.topk(soft, k, dim=-1)
    hard = torch.zeros_like(soft).scatter(-1, top.indices, top.values)
    hard = hard / hard.sum(dim=-1, keepdim=True)
    return (hard - soft).detach() + soft


def nearest_distance(
    query: torch.Tensor, bank: torch.Tensor, valid: torch.Tensor | None = None
) -> torch.Tensor:
    """(B, T, D) tokens and (T, S, D) items per position -> (B, T) squared distance of each
    token to the nearest item of its position, per dimension (fp32); ``valid`` (S,) masks
    items out."""
    with torch.autocast(device_type=query.device.type, enabled=False):
        distance = (
            torch.cdist(query.float().transpose(0, 1), bank.float()).pow(2).transpose(0, 1)
        )  # (B, T, S)
        if valid is not None:
            distance = distance.masked_fill(~valid, float("inf"))
        return distance.min(-1).values / query.shape[-1]


class _Memory(nn.Module):
    """Shared read path of the queue and the matrix (``self.memory`` is (R, S, D))."""

    memory: torch.Tensor

    def __init__(self, top_k: int, shrinkage: bool):
        super().__init__()
        self.top_k = top_k
        self.shrinkage = shrinkage

    def _valid_slots(self) -> torch.Tensor | None:
        return None

    def read(self, query: torch.Tensor) -> torch.Tensor:
        """(B, T, D) tokens -> (B, T, D) memory-retrieved tokens; token ``t`` reads bank ``t``
        (or the single shared bank). Computed in fp32, also under autocast."""
        t = query.shape[1]
        with torch.autocast(device_type=query.device.type, enabled=False):
            out = torch.einsum("bts,tsd->btd", self.weights(query), self._bank(t))
        return out.to(query.dtype)

    def _bank(self, t: int) -> torch.Tensor:
        regions, slots, d = self.memory.shape
        if regions not in (1, t):
            raise ValueError(f"memory has {regions} regions but the query has {t} tokens per image")
        return self.memory.float().expand(t, slots, d)

    def nearest_distance(self, query: torch.Tensor) -> torch.Tensor:
        """(B, T, D) tokens -> (B, T) squared distance to the nearest item of each token's
        bank, per dimension (fp32): how far a region's feature is from every normal one the
        memory holds (a queue holds real normal features, so this is a k=1 nearest-neighbour
        distance in the encoder's space)."""
        return nearest_distance(query, self._bank(query.shape[1]), self._valid_slots())

    def weights(self, query: torch.Tensor) -> torch.Tensor:
        """(B, T, D) tokens -> (B, T, S) read weights over each token's bank (fp32)."""
        with torch.autocast(device_type=query.device.type, enabled=False):
            logits = torch.einsum("btd,tsd->bts", query.float(), self._bank(query.shape[1]))
            valid = self._valid_slots()
            if valid is not None:
                logits = logits.masked_fill(~valid, torch.finfo(logits.dtype).min)
            return (
                gumbel_shrinkage(logits, self.top_k)
                if self.shrinkage
                else torch.softmax(logits, -1)
            )


class MemoryQueue(_Memory):
    """Space-aware FIFO queue of real, detached encoder tokens.

    One bank per tile position (``regions = N * N``) or one shared bank (``regions = 1``).
    The contents, the write pointer and the fill level are buffers: they are saved in
    ``state_dict``, moved by ``.to()`` and resumed exactly. Reading never gives the queue a
    gradient; slots not yet written are masked out of the read.
    """

    def __init__(self, regions: int, slots: int, dim: int, top_k: int = 5, shrinkage: bool = True):
        super().__init__(top_k, shrinkage)
        self.register_buffer("memory", torch.zeros(regions, slots, dim))
        self.register_buffer("pointer", torch.zeros((), dtype=torch.long))
        self.register_buffer("size", torch.zeros((), dtype=torch.long))
        # slot numbers as a buffer, not ``torch.arange(..., device=...)``: a trace would keep
        # that device as a constant, and the exported model would fail on another device
        self.register_buffer("slot_index", torch.arange(slots), persistent=False)

    def _valid_slots(self) -> torch.Tensor:
        return self.slot_index < self.size

    @torch.no_grad()
    def enqueue(self, tokens: torch.Tensor) -> None:
        """Write a batch of tokens (B, T, D), first in first out, and advance the pointer.

        With one bank per position, position ``t`` receives ``tokens[:, t]`` in batch order;
        with a shared bank all B*T tokens are written in (batch, tile) order. Under data
        parallelism pass the all-gathered global batch so that every replica stays identical.
        """
        regions, slots, dim = self.memory.shape
        if tokens.dim() != 3 or tokens.shape[-1] != dim:
            raise ValueError(f"expected tokens of shape (B, T, {dim}), got {tuple(tokens.shape)}")
        entries = tokens.reshape(1, -1, dim) if regions == 1 else tokens.transpose(0, 1)
        if entries.shape[0] != regions:
            raise ValueError(
                f"queue has {regions} regions, tokens have {entries.shape[0]} positions"
            )
        n = entries.shape[1]
        kept = min(n, slots)
        index = (self.pointer + (n - kept) + self.slot_index[:kept]) % slots
        self.memory[:, index] = entries[:, n - kept :].detach().to(self.memory.dtype)
        self.pointer.copy_((self.pointer + n) % slots)
        self.size.copy_(torch.clamp(self.size + n, max=slots))


class MemoryMatrix(_Memory):
    """Learnable memory (MemAE-style): a parameter of ``regions`` x ``items`` x ``dim``
    trained by back-propagation and read with the same shrinkage. Used for SQUID's decoder
    memory and for the "memory matrix instead of queue" ablation."""

    def __init__(self, regions: int, items: int, dim: int, top_k: int = 5, shrinkage: bool = True):
        super().__init__(top_k, shrinkage)
        bound = 1.0 / dim**0.5
        self.memory = nn.Parameter(torch.empty(regions, items, dim).uniform_(-bound, bound))

    def enqueue(self, tokens: torch.Tensor) -> None:
        """A learnable memory is written by the optimiser, not by the data: no-op."""
