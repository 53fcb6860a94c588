"""The one place that knows about data-parallel training (plain torch.distributed).

Ray Train's TorchTrainer initialises the process group on its workers; a notebook or test does not.
Stages call these helpers and behave identically in both cases: shard the data by rank, wrap the
trained model in DDP, all-reduce metrics, and let rank 0 alone write.
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


def wrap_ddp(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """DDP-wrap ``model`` when running data-parallel, else return it unchanged."""
    if not is_distributed():
        return model
    ids = [device.index] if device.type == "cuda" else None
    return torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return model.module if isinstance(model, torch.nn.parallel.DistributedDataParallel) else model


def shard(n: int, perm: torch.Tensor) -> torch.Tensor:
    """This rank's slice of a permutation of range(n): equal-sized strided shards (DistributedSampler style)."""
    ws = world_size()
    per_rank = n // ws if n >= ws else 1
    return perm[rank() :: ws][:per_rank] if n >= ws else perm[:per_rank]


def all_reduce_mean(value: float, device: torch.device) -> float:
    """Mean of a scalar over ranks (identity when not distributed)."""
    if not is_distributed():
        return float(value)
    t = torch.tensor([float(value)], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return float(t.item()) / world_size()


def broadcast_module(module: torch.nn.Module) -> None:
    """Make every rank hold rank 0's parameters (e.g. after rank-0-only initialisation)."""
    if is_distributed():
        for p in module.state_dict().values():
            dist.broadcast(p, src=0)
