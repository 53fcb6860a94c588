"""The one place that knows about data-parallel training (plain torch.distributed).

Ray Train's TorchTrainer initialises the process group on its workers; a notebook or test does not.
Stages call these helpers and behave identically in both cases: shard the data by rank, average the
gradients, all-reduce metrics, and let rank 0 alone write.
"""

from __future__ import annotations

import torch
import torch.distributed as dist


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def is_rank_zero() -> bool:
    return rank() == 0


def average_gradients(model: torch.nn.Module) -> None:
    """All-reduce-mean the gradients (one coalesced call): what DDP does, but explicit, so it also
    holds for losses that differentiate through autograd.grad (the consistency term), which DDP's
    hooks do not support."""
    if not is_distributed():
        return
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= world_size()
    offset = 0
    for g in grads:
        g.copy_(flat[offset:offset + g.numel()].view_as(g))
        offset += g.numel()


def all_gather_rows(x: torch.Tensor, total: int) -> torch.Tensor:
    """Concatenate every rank's equal-sized chunk along dim 0 and keep the first ``total`` rows."""
    if not is_distributed():
        return x[:total]
    parts = [torch.empty_like(x) for _ in range(world_size())]
    dist.all_gather(parts, x.contiguous())
    return torch.cat(parts)[:total]


def shard(perm: torch.Tensor) -> torch.Tensor:
    """This rank's equal-sized strided slice of a permutation (DistributedSampler style, tail dropped)."""
    ws = world_size()
    per_rank = max(perm.shape[0] // ws, 1)
    return perm[rank()::ws][:per_rank]


def all_reduce_mean(value: float, device: torch.device) -> float:
    """Mean of a scalar over ranks (identity when not distributed)."""
    if not is_distributed():
        return float(value)
    t = torch.tensor([float(value)], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return float(t.item()) / world_size()
