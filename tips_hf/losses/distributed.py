"""Process-group helpers that degrade to no-ops in a single process (so losses never crash outside `accelerate`)."""

from __future__ import annotations

import torch
import torch.distributed as dist


def world() -> tuple[int, int]:
    """(rank, world size); (0, 1) when torch.distributed is not initialised."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum over processes, in place, without gradient (statistics such as centres and Sinkhorn marginals)."""
    if world()[1] > 1:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def all_reduce_max(tensor: torch.Tensor) -> torch.Tensor:
    """Maximum over processes, in place, without gradient."""
    if world()[1] > 1:
        dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return tensor
