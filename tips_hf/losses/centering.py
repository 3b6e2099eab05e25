"""Teacher target normalisation shared by the DINO and iBOT losses: softmax centring and Sinkhorn-Knopp."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .distributed import all_reduce_max, all_reduce_sum, world


class SoftmaxCenter(nn.Module):
    """DINO centring: teacher targets `softmax((logits - c) / τ_t)` with `c` an EMA of the teacher logits' batch
    mean over all processes. `c` is a buffer, so it is saved and restored with the model state.

    Args:
        dim (`int`): number of prototypes.
        momentum (`float`, defaults to 0.9): EMA momentum of the centre.
    """

    def __init__(self, dim: int, momentum: float = 0.9):
        super().__init__()
        self.momentum = momentum
        self.register_buffer("center", torch.zeros(1, dim))

    def forward(self, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
        """Targets for (..., dim) teacher logits (no gradient): the centred, sharpened softmax."""
        return F.softmax((teacher_logits.detach().float() - self.center) / temperature, dim=-1)

    @torch.no_grad()
    def update(self, teacher_logits: torch.Tensor) -> None:
        """Move the centre towards the batch mean of `teacher_logits` (..., dim), averaged over all processes."""
        flat = teacher_logits.detach().float().reshape(-1, teacher_logits.shape[-1])
        total = all_reduce_sum(flat.sum(dim=0, keepdim=True))
        count = all_reduce_sum(torch.tensor([float(flat.shape[0])], device=flat.device))
        self.center.mul_(self.momentum).add_(total / count, alpha=1 - self.momentum)


@torch.no_grad()
def sinkhorn_knopp(
    teacher_logits: torch.Tensor, temperature: float, iterations: int = 3, weights: torch.Tensor | None = None
) -> torch.Tensor:
    """Sinkhorn-Knopp targets (SwAV/DINOv2): `exp(logits / τ)` rescaled so that every sample's row sums to 1 and
    every prototype receives an equal share of the global batch's mass.

    Args:
        teacher_logits (`torch.Tensor` of shape `(batch, prototypes)`): this process's teacher logits.
        temperature (`float`): teacher temperature.
        iterations (`int`): alternating normalisations (3 as in DINOv2).
        weights (`torch.Tensor` of shape `(batch,)`, *optional*): 0/1 sample weights (e.g. only masked patches take
            part); weighted-out rows are returned as zeros.

    Returns:
        `torch.Tensor` of shape `(batch, prototypes)`, rows summing to 1 (0 for weighted-out rows).
    """
    logits = teacher_logits.float()
    # Shifting by the global maximum keeps exp finite and scales every process alike (normalisation cancels it).
    q = torch.exp((logits - all_reduce_max(logits.max().clone())) / temperature).t()  # (K, B)
    if weights is not None:
        q = q * weights.float()[None]
    prototypes = q.shape[0]
    samples = all_reduce_sum(torch.tensor([float(q.shape[1] if weights is None else weights.sum())], device=q.device))
    q /= all_reduce_sum(q.sum()).clamp_min(1e-30)
    for _ in range(iterations):
        q /= all_reduce_sum(q.sum(dim=1, keepdim=True)).clamp_min(1e-30)  # every prototype: equal mass
        q /= prototypes
        q /= q.sum(dim=0, keepdim=True).clamp_min(1e-30)  # every sample: a distribution
        q /= samples
        if weights is not None:
            q = q * weights.float()[None]
    q *= samples
    return q.t()


__all__ = ["SoftmaxCenter", "sinkhorn_knopp", "world"]
