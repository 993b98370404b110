"""Helpers the engines of every family share: plain tensors from MONAI batches, the module
inside a DDP wrapper, BatchNorm buffer save/restore around a skipped step, and the
decisions and statistics that must agree across ``torch.distributed`` ranks."""

from __future__ import annotations

import torch
import torch.distributed as dist
from monai.data import MetaTensor
from torch.nn.modules.batchnorm import _BatchNorm

__all__ = [
    "all_ranks",
    "average_running_stats",
    "is_distributed",
    "loss_terms",
    "norm_buffers",
    "plain_tensor",
    "restore_buffers",
    "unwrap",
]


def plain_tensor(data) -> torch.Tensor:
    """A plain tensor: MONAI's MetaTensor would route every network op through its
    ``__torch_function__`` (several times slower on small CPU convolutions)."""
    return data.as_tensor() if isinstance(data, MetaTensor) else torch.as_tensor(data)


def unwrap(module: torch.nn.Module) -> torch.nn.Module:
    """The plain module inside a DistributedDataParallel / DataParallel wrapper."""
    return getattr(module, "module", module)


def norm_buffers(*modules: torch.nn.Module) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(buffer, copy) of every BatchNorm running statistic: a few KB, cheap to keep."""
    return [
        (b, b.clone())
        for m in modules
        for layer in m.modules()
        if isinstance(layer, _BatchNorm)
        for b in (layer.running_mean, layer.running_var, layer.num_batches_tracked)
        if b is not None
    ]


def restore_buffers(saved: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
    """Write back the copies :func:`norm_buffers` took."""
    for buffer, value in saved:
        buffer.copy_(value)


def is_distributed() -> bool:
    """``torch.distributed`` is initialised with more than one rank."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def all_ranks(flag: torch.Tensor) -> bool:
    """``flag`` (a boolean tensor) is true on every rank: one decision for all replicas,
    so that none waits in a collective (DDP's gradient reduction) that another skips."""
    if not is_distributed():
        return bool(flag)
    flag = flag.to(torch.int32).reshape(1)
    dist.all_reduce(flag, op=dist.ReduceOp.MIN)
    return bool(flag.item())


def average_running_stats(*modules: torch.nn.Module) -> None:
    """Average BatchNorm running statistics over the ranks (one all-reduce). DDP reduces
    gradients, not buffers: without this each replica keeps the statistics of its own
    shard and the replicas (and the scores computed with running statistics) drift
    apart. With equal per-rank batches the mean of the running means is the running mean
    of the global batch; the averaged variances leave out the spread between the ranks'
    batch means (what SyncBatchNorm would include)."""
    if not is_distributed():
        return
    stats = [
        buf
        for module in modules
        for m in unwrap(module).modules()
        if isinstance(m, _BatchNorm) and m.track_running_stats
        for buf in (m.running_mean, m.running_var)
        if buf is not None
    ]
    if not stats:
        return
    flat = torch.cat([buf.reshape(-1).float() for buf in stats])
    dist.all_reduce(flat)
    flat /= dist.get_world_size()
    offset = 0
    for buf in stats:
        buf.copy_(flat[offset : offset + buf.numel()].view_as(buf))
        offset += buf.numel()


def loss_terms(output: dict) -> dict[str, float]:
    """``output_transform`` for StatsHandler / MLFlowHandler that logs every loss term: the
    float entries whose key starts with ``loss`` (every family's trainer follows this
    naming)."""
    return {k: v for k, v in output.items() if k.startswith("loss") and isinstance(v, (int, float))}
