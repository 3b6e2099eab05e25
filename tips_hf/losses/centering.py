"""Teacher target normalisation shared by the DINO and iBOT losses: softmax centring and Sinkhorn-Knopp."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .distributed import all_reduce_max, all_reduce_sum, world


class SoftmaxCenter(nn.Module):
    """DINO centring: teacher targets `softmax((logits - c) / τ_t)` with `c` an EMA of the teacher logits' batch
    mean over all processes. `c` is a buffer, so it is saved and restored with the model state.

    The update is split in two so that it needs only running sums and happens once per optimizer step under
    gradient accumulation: `accumulate` adds a micro-batch's (chunk's) logit sums and count, `apply` all-reduces
    them and moves the centre once. `update` does both (one batch, one step).

    Args:
        dim (`int`): number of prototypes.
        momentum (`float`, defaults to 0.9): EMA momentum of the centre.
    """

    def __init__(self, dim: int, momentum: float = 0.9):
        super().__init__()
        self.momentum = momentum
        self.register_buffer("center", torch.zeros(1, dim))
        # Plain attributes, not buffers: DDP would broadcast rank 0's pending sums over the other ranks'.
        self._pending_sum: torch.Tensor | None = None
        self._pending_count: torch.Tensor | None = None

    def forward(self, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
        """Targets for (..., dim) teacher logits (no gradient): the centred, sharpened softmax."""
        return F.softmax((teacher_logits.detach().float() - self.center) / temperature, dim=-1)

    @torch.no_grad()
    def accumulate(self, logits_sum: torch.Tensor, count: torch.Tensor | float) -> None:
        """Add (dim,) summed teacher logits over `count` rows to the pending statistics (no communication)."""
        logits_sum = logits_sum.detach().float().reshape(1, -1)
        count = torch.as_tensor(count, dtype=torch.float32, device=logits_sum.device).reshape(1)
        if self._pending_sum is None:
            self._pending_sum, self._pending_count = logits_sum.clone(), count.clone()
        else:
            self._pending_sum += logits_sum
            self._pending_count += count

    @torch.no_grad()
    def apply(self) -> None:
        """Move the centre towards the mean of the pending statistics over all processes (every process must call
        it, the same number of times); no-op when nothing is pending."""
        if self._pending_sum is None:
            return
        total = all_reduce_sum(self._pending_sum)
        count = all_reduce_sum(self._pending_count)
        self.center.mul_(self.momentum).add_(total / count.clamp_min(1.0), alpha=1 - self.momentum)
        self._pending_sum = self._pending_count = None

    @torch.no_grad()
    def update(self, teacher_logits: torch.Tensor) -> None:
        """Move the centre towards the batch mean of `teacher_logits` (..., dim), averaged over all processes."""
        flat = teacher_logits.detach().float().reshape(-1, teacher_logits.shape[-1])
        self.accumulate(flat.sum(dim=0), float(flat.shape[0]))
        self.apply()


@torch.no_grad()
def sinkhorn_scalings(
    chunks: Sequence[Callable[[], torch.Tensor]],
    temperature: float,
    iterations: int = 3,
    weights: Sequence[torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
    """Sinkhorn-Knopp as scaling vectors, computed over row chunks that are recomputed on every pass (so no
    (rows, prototypes) matrix is ever held whole): the targets of chunk j are
    `exp((logits_j - shift) / τ) · prototype_scale[None] · row_scale[j][:, None]`.

    Args:
        chunks: callables returning this process's teacher logits chunk by chunk, each `(rows_j, prototypes)`.
        temperature (`float`): teacher temperature.
        iterations (`int`): alternating normalisations (3 as in DINOv2).
        weights: optional 0/1 row weights per chunk (`(rows_j,)`); weighted-out rows get zero targets.

    Returns:
        `(shift, prototype_scale (prototypes,), [row_scale_j (rows_j,)])`.
    """
    if iterations < 1:
        raise ValueError(f"Sinkhorn-Knopp needs at least one iteration, got {iterations}.")
    shift = all_reduce_max(torch.stack([chunk().float().max() for chunk in chunks]).max())

    def exp(j: int) -> torch.Tensor:
        return torch.exp((chunks[j]().float() - shift) / temperature)

    if weights is None:
        rows = [None] * len(chunks)
    else:
        rows = [w.float() for w in weights]
    # The first pass fixes the row counts; the initial total normalisation cancels in the first prototype step.
    prototype_mass = None
    for j in range(len(chunks)):
        e = exp(j)
        if rows[j] is None:
            rows[j] = torch.ones(e.shape[0], device=e.device)
        mass = rows[j] @ e
        prototype_mass = mass if prototype_mass is None else prototype_mass + mass
    prototypes = prototype_mass.shape[0]
    samples = all_reduce_sum(torch.stack([r.sum() for r in rows]).sum().reshape(1))
    weight = [r.clone() for r in rows]
    all_reduce_sum(prototype_mass)
    for iteration in range(iterations):
        scale = 1.0 / (prototype_mass * prototypes).clamp_min(1e-30)  # every prototype: an equal share
        prototype_mass = None
        for j in range(len(chunks)):
            e = exp(j)
            rows[j] = weight[j] / ((e @ scale) * samples).clamp_min(1e-30)  # every sample: a distribution
            if iteration < iterations - 1:
                mass = rows[j] @ e
                prototype_mass = mass if prototype_mass is None else prototype_mass + mass
        if prototype_mass is not None:
            all_reduce_sum(prototype_mass)
    return shift, scale, [r * samples for r in rows]


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
    shift, scale, (rows,) = sinkhorn_scalings(
        [lambda: logits], temperature, iterations, None if weights is None else [weights]
    )
    return torch.exp((logits - shift) / temperature) * scale[None] * rows[:, None]


__all__ = ["SoftmaxCenter", "sinkhorn_knopp", "sinkhorn_scalings", "world"]
