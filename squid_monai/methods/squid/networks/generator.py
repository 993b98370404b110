"""SQUID generator: a per-tile encoder, a teacher decoder (plain auto-encoder on the
detached encoding) and a student decoder (in-painted bottleneck, decoder memory).

Decoder levels are numbered from the deepest; the ``skip_levels`` deepest run per tile,
concatenate the encoder skip of their size and (student only) read a decoder memory;
the tiles are then re-assembled into one image map for the remaining levels.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn

from ....nn.blocks import ResidualDoubleConv, UpBlock, tile, untile, zero_tiles
from .inpainting import InpaintingBlock, MaskedShortcut
from .memory import MemoryMatrix, MemoryQueue

__all__ = ["SQUIDEncoder", "DecoderMemory", "SQUIDDecoder", "SQUIDGenerator"]


class SQUIDEncoder(nn.Module):
    """Per-tile encoder: a double conv to ``channels[0]``, then one stride-2 double conv
    per further width. Returns the bottleneck and the skips (the inputs of the down
    blocks, shallowest first)."""

    def __init__(self, in_channels: int, channels: Sequence[int]):
        super().__init__()
        self.stem = ResidualDoubleConv(in_channels, channels[0])
        self.down = nn.ModuleList(
            ResidualDoubleConv(a, b, stride=2) for a, b in zip(channels[:-1], channels[1:])
        )

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        x = self.stem(x)
        skips = []
        for block in self.down:
            skips.append(x)
            x = block(x)
        return x, skips


class DecoderMemory(nn.Module):
    """MemAE-style learnable memory after a per-tile decoder level (student only).

    Each tile map is split into ``windows x windows`` windows; each window position has
    its own memory of ``items`` entries, read with the same shrinkage as the queue. A
    training-only masked shortcut keeps some positions' original features.

    ``grid > 1`` makes the memory *space-aware* like the queue: one memory per (tile
    position, window position), so a window can only be rebuilt from the normal patterns
    seen at that place of the image. With ``grid = 1`` (the authors' network) all tiles
    share the window memories, and an anomalous pattern (a blank cell, a 0) that is normal
    *somewhere* in the image is reproduced wherever it appears.

    ``kind="queue"`` holds *real* detached window features of normal training images
    (first in, first out, like the in-painting queue) instead of learnable items: a
    learnable matrix can learn items whose top-k mixtures rebuild almost any pattern,
    anomalies included, while a mixture of a few real normal windows stays normal. The
    training forward leaves the batch's window features in ``last_tokens`` for
    :meth:`enqueue`, called after the optimiser step.
    """

    def __init__(
        self,
        channels: int,
        spatial_size: int,
        windows: int,
        items: int,
        top_k: int,
        shrinkage: bool = True,
        shortcut: str = "hard",
        mask_prob: float = 0.95,
        grid: int = 1,
        kind: str = "matrix",
    ):
        super().__init__()
        if spatial_size % windows:
            raise ValueError(
                f"decoder map of size {spatial_size} cannot be split into {windows}x{windows} windows"
            )
        self.windows, self.grid = windows, grid
        dim = channels * (spatial_size // windows) ** 2
        if kind not in ("matrix", "queue"):
            raise ValueError(f"decoder memory kind must be 'matrix' or 'queue', got {kind!r}")
        memory = MemoryQueue if kind == "queue" else MemoryMatrix
        self.memory = memory(grid * grid * windows * windows, items, dim, top_k, shrinkage)
        self.shortcut = MaskedShortcut(shortcut, mask_prob)
        self.last_tokens: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        regions = self.grid**2 * self.windows**2  # tiles are batch-major: (image, tile) rows
        windows = tile(x, self.windows).reshape(n // self.grid**2, regions, -1)
        if self.training and isinstance(self.memory, MemoryQueue):
            self.last_tokens = windows.detach()
        read = self.memory.read(windows).reshape(
            n * self.windows**2, c, h // self.windows, w // self.windows
        )
        return self.shortcut(untile(read, self.windows), x)

    def enqueue(self, tokens: torch.Tensor) -> None:
        self.memory.enqueue(tokens)


class SQUIDDecoder(nn.Module):
    """Teacher or student decoder (the student gets ``memory`` settings, the teacher none).

    ``forward(bottleneck, skips)`` returns the reconstruction (sigmoid, in [0, 1]) and each
    level's output, deepest first, for feature distillation.
    """

    def __init__(
        self,
        out_channels: int,
        channels: Sequence[int],
        grid: int,
        tile_size: int,
        skip_levels: int = 2,
        memory: dict | None = None,
        output_bias: float | None = None,
    ):
        super().__init__()
        levels = len(channels) - 1
        if not 0 < skip_levels <= levels:
            raise ValueError(f"skip_levels must be in 1..{levels}, got {skip_levels}")
        self.grid, self.skip_levels = grid, skip_levels
        self.blocks = nn.ModuleList()
        self.memories = nn.ModuleList()
        for i, level in enumerate(range(levels, 0, -1)):
            per_tile = i < skip_levels
            in_ch = channels[level] + (channels[level - 1] if per_tile else 0)
            self.blocks.append(UpBlock(in_ch, channels[level - 1]))
            if per_tile and memory is not None:
                size = tile_size >> (level - 1)
                self.memories.append(DecoderMemory(channels[level - 1], size, **memory))
            elif per_tile:
                self.memories.append(nn.Identity())
        self.head = nn.Conv2d(channels[0], out_channels, kernel_size=1)
        if output_bias is not None:  # see SQUIDGenerator's output_bias
            nn.init.constant_(self.head.bias, float(output_bias))

    def forward(
        self, bottleneck: torch.Tensor, skips: list[torch.Tensor]
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        x, features = bottleneck, []
        for i, block in enumerate(self.blocks):
            if i < self.skip_levels:
                x = self.memories[i](block(x, skips[-1 - i]))
                if i == self.skip_levels - 1:
                    x = untile(x, self.grid)
            else:
                x = block(x)
            features.append(x)
        return torch.sigmoid(self.head(x)), features


class SQUIDGenerator(nn.Module):
    """SQUID generator (Xiang et al., CVPR 2023), every ablation of the paper a switch.

    Args:
        image_size: side of the square input (pixels); must divide into ``tiles`` tiles
            whose side is divisible by ``2 ** (len(channels) - 1)``.
        in_channels: image channels (1 for radiographs).
        tiles: tiles per side, N (N x N tiles; 1 = no space awareness at all).
        channels: encoder widths, shallowest first; ``len(channels) - 1`` down levels.
        skip_levels: deepest decoder levels that run per tile with skips (and decoder memory).
        token_channels: width of the 1x1 projection in the in-painting block.
        queue_slots, top_k, heads, mlp_dim: in-painting memory and transformer settings.
        mask_prob: keep probability of every masked shortcut.
        decoder_memory_items, decoder_memory_windows: decoder memory size and windows per side.
        decoder_memory_space_aware: one decoder memory per tile position as well as per
            window (False: the windows' memories are shared by all tiles, as in the authors'
            network).
        decoder_memory_kind: ``"matrix"`` (learnable, the paper's) or ``"queue"`` (real
            normal window features, see :class:`DecoderMemory`).
        space_aware: one queue per tile position (False: one shared queue).
        inpainting: use the in-painting block (False: the student decodes the raw bottleneck).
        shrinkage: Gumbel shrinkage on every memory read (False: plain softmax).
        distillation: build the teacher and return its features (False: no teacher).
        stop_gradient: the teacher's inputs are detached from the encoder.
        memory: ``"queue"`` or ``"matrix"`` for the in-painting memory.
        shortcut: ``"hard"``, ``"soft"`` or ``"none"`` masked shortcuts.
        decoder_memory: use the student's decoder memory blocks.
        context: ``"transformer"`` or ``"conv"`` in-painting.
        pixel_mask_ratio: fraction of the N x N input tiles zeroed at random in every
            training image (the nearest whole number of tiles; inference never masks); the
            network, its targets (the clean image) and its losses are unchanged. 0.25 is the
            paper's pixel-level in-painting ablation (App. B.1), 0 the full model.
        mask_out_of_grid: mask out-of-grid neighbours from the attention.
        output_bias: initial bias of both decoders' output convolution, the logit of the
            reconstruction a zero feature map gives (None: PyTorch's default initialisation,
            as in the paper). Beyond the paper: Adam moves a bias by about the learning rate
            per step, so on images whose mean is far from 0.5 (DigitAnatomy: 0.23, a black
            background) a few hundred steps at 1e-4 leave the background grey unless the
            bias starts at the logit of the training images' mean intensity. Not a default:
            on ten fresh seeds it turns one good seed's digits dim instead (the output stays
            near where it starts either way; docs/EXPERIMENTS.md, session 20).

    ``forward(x)`` with x (B, C, H, W) in [0, 1] returns a dict. Training mode:
    ``student`` and ``teacher`` reconstructions, ``student_features`` and
    ``teacher_features`` (per decoder level) and ``tokens``, the detached tokens to pass to
    :meth:`enqueue` after the generator's optimiser step. Eval mode: ``student`` only;
    the teacher is not computed. :meth:`reconstruct` is the inference path (no autograd).
    """

    def __init__(
        self,
        image_size: int = 128,
        in_channels: int = 1,
        tiles: int = 2,
        channels: Sequence[int] = (32, 64, 128, 256, 512),
        skip_levels: int = 2,
        token_channels: int = 128,
        queue_slots: int = 200,
        top_k: int = 5,
        heads: int = 8,
        mlp_dim: int = 512,
        mask_prob: float = 0.95,
        decoder_memory_items: int = 200,
        decoder_memory_windows: int = 2,
        decoder_memory_space_aware: bool = False,
        decoder_memory_kind: str = "matrix",
        space_aware: bool = True,
        inpainting: bool = True,
        shrinkage: bool = True,
        distillation: bool = True,
        stop_gradient: bool = True,
        memory: str = "queue",
        shortcut: str = "hard",
        decoder_memory: bool = True,
        context: str = "transformer",
        pixel_mask_ratio: float = 0.0,
        mask_out_of_grid: bool = True,
        output_bias: float | None = None,
    ):
        super().__init__()
        levels = len(channels) - 1
        tile_size = image_size // tiles
        if image_size % tiles or tile_size % (2**levels):
            raise ValueError(
                f"image_size {image_size} must split into {tiles}x{tiles} tiles whose side is divisible by {2**levels}"
            )
        self.masked_tiles = round(pixel_mask_ratio * tiles * tiles)
        if not 0.0 <= pixel_mask_ratio < 1.0 or (pixel_mask_ratio > 0 and self.masked_tiles == 0):
            raise ValueError(
                f"pixel_mask_ratio {pixel_mask_ratio} masks no tile or every tile of {tiles}x{tiles}"
            )
        self.image_size, self.grid, self.stop_gradient = image_size, tiles, stop_gradient
        self.encoder = SQUIDEncoder(in_channels, channels)
        self.inpainting = None
        if inpainting:
            self.inpainting = InpaintingBlock(
                in_channels=channels[-1],
                spatial_size=tile_size >> levels,
                token_channels=token_channels,
                grid=tiles,
                slots=queue_slots,
                top_k=top_k,
                heads=heads,
                mlp_dim=mlp_dim,
                memory=memory,
                space_aware=space_aware,
                shrinkage=shrinkage,
                context=context,
                mask_out_of_grid=mask_out_of_grid,
                shortcut=shortcut,
                mask_prob=mask_prob,
            )
        dec_memory = None
        if decoder_memory:
            dec_memory = dict(
                windows=decoder_memory_windows,
                items=decoder_memory_items,
                top_k=top_k,
                shrinkage=shrinkage,
                shortcut=shortcut,
                mask_prob=mask_prob,
                grid=tiles if decoder_memory_space_aware else 1,
                kind=decoder_memory_kind,
            )
        self.student = SQUIDDecoder(
            in_channels, channels, tiles, tile_size, skip_levels, dec_memory, output_bias
        )
        self.teacher = (
            SQUIDDecoder(
                in_channels, channels, tiles, tile_size, skip_levels, output_bias=output_bias
            )
            if distillation
            else None
        )

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor | list[torch.Tensor]]:
        if self.training and self.masked_tiles:
            x = zero_tiles(x, self.grid, self.masked_tiles)
        tiles = tile(x, self.grid)
        bottleneck, skips = self.encoder(tiles)
        out: dict = {}
        if self.training and self.teacher is not None:
            t_in, t_skips = bottleneck, skips
            if self.stop_gradient:
                t_in, t_skips = bottleneck.detach(), [s.detach() for s in skips]
            out["teacher"], out["teacher_features"] = self.teacher(t_in, t_skips)
        tokens = None
        if self.inpainting is not None:
            bottleneck, tokens = self.inpainting(bottleneck)
        out["student"], out["student_features"] = self.student(bottleneck, skips)
        if self.training:
            if tokens is not None:
                out["tokens"] = tokens
            queues = [
                m.last_tokens
                for m in self.student.memories
                if getattr(m, "last_tokens", None) is not None
            ]
            if queues:
                out["decoder_tokens"] = queues
        else:
            out = {"student": out["student"]}
        return out

    @torch.no_grad()
    def tokens(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, D) the tiles' tokens as the memory sees them (eval mode)."""
        bottleneck, _ = self.encoder(tile(x, self.grid))
        return self.inpainting.project_in(bottleneck).reshape(x.shape[0], self.grid * self.grid, -1)

    @torch.no_grad()
    def probes(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per image (B,), in eval mode, the quantities inside SQUID that an anomaly should
        move (candidate scores; ``benchmarks/scores.py`` compares them):

        - ``memory_distance``: each tile's token to its nearest memory item (the queue holds
          real normal tokens of that tile position), mean over tiles;
        - ``inpainting_shift``: how much in-painting changes the bottleneck (a normal tile is
          rebuilt from its memory almost unchanged);
        - ``teacher_student``: pixel difference of the teacher's reconstruction (plain
          encoding) and the student's (in-painted).

        Needs the in-painting block (the ``inpainting=False`` ablation has no memory).
        """
        bottleneck, painted, tokens, skips = self._inference_pass(x)
        out = {
            "memory_distance": self.inpainting.memory.nearest_distance(tokens).mean(1),
            "inpainting_shift": (painted - bottleneck)
            .float()
            .pow(2)
            .reshape(x.shape[0], -1)
            .mean(1),
        }
        if self.teacher is not None:
            student, _ = self.student(painted, skips)
            teacher, _ = self.teacher(bottleneck, skips)
            out["teacher_student"] = (student - teacher).float().pow(2).flatten(1).mean(1)
        return out

    def evidence(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Eval mode, one encoder pass: the student's reconstruction (in-painted bottleneck),
        the teacher's (plain bottleneck) and the tiles' tokens (B, T, D), which the scorer's
        ``combined`` source compares with the normal images'. Needs the in-painting block
        and the teacher (distillation)."""
        if self.teacher is None:
            raise ValueError("evidence() needs the teacher decoder (distillation=True)")
        bottleneck, painted, tokens, skips = self._inference_pass(x)
        return {
            "student": self.student(painted, skips)[0],
            "teacher": self.teacher(bottleneck, skips)[0],
            "tokens": tokens,
        }

    def _inference_pass(self, x: torch.Tensor):
        """Eval: (bottleneck, in-painted bottleneck, tokens, skips) of the tiled input."""
        if self.training:
            raise RuntimeError("this is an inference path: call .eval() first")
        if self.inpainting is None:
            raise ValueError("the in-painting block is needed (inpainting=True)")
        bottleneck, skips = self.encoder(tile(x, self.grid))
        painted, tokens = self.inpainting(bottleneck)
        return bottleneck, painted, tokens, skips

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """Inference: the student reconstruction in eval mode, with no autograd graph."""
        if self.training:
            raise RuntimeError("reconstruct() is the inference path: call .eval() first")
        return self.forward(x)["student"]

    def enqueue(
        self, tokens: torch.Tensor | None, decoder_tokens: list[torch.Tensor] | None = None
    ) -> None:
        """Write the batch's detached tokens (``forward(x)["tokens"]``, and
        ``forward(x)["decoder_tokens"]`` for queue decoder memories) into the memory queues.
        Call after the generator's optimiser step (a queue is read before it is written
        within one iteration)."""
        if self.inpainting is not None and tokens is not None:
            self.inpainting.enqueue(tokens)
        if decoder_tokens:
            queues = [
                m
                for m in self.student.memories
                if isinstance(getattr(m, "memory", None), MemoryQueue)
            ]
            for memory, window_tokens in zip(queues, decoder_tokens):
                memory.enqueue(window_tokens)
