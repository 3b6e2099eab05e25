"""CLS self-distillation (DINO): one teacher global crop supervises M student local crops."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .centering import SoftmaxCenter, sinkhorn_knopp


class DINOLoss(nn.Module):
    """`L = −1/M Σ_m mean_b Σ_k p_t[b, k] · log softmax(s_m[b] / τ_s)[k]` (TIPS eq. 1).

    Args:
        out_dim (`int`): number of prototypes of the head.
        student_temperature (`float`, defaults to 0.1): τ_s.
        center_momentum (`float`, defaults to 0.9): EMA momentum of the softmax centre.
        centering (`str`, defaults to `"softmax"`): `"softmax"` (EMA centre) or `"sinkhorn"` (Sinkhorn-Knopp).
    """

    def __init__(
        self, out_dim: int, student_temperature: float = 0.1, center_momentum: float = 0.9, centering: str = "softmax"
    ):
        super().__init__()
        if centering not in ("softmax", "sinkhorn"):
            raise ValueError(f"DINO centering must be 'softmax' or 'sinkhorn', got {centering!r}.")
        self.student_temperature = student_temperature
        self.centering = centering
        self.center = SoftmaxCenter(out_dim, center_momentum)

    @torch.no_grad()
    def teacher_targets(self, teacher_logits: torch.Tensor, temperature: float, update: bool = True) -> torch.Tensor:
        """(batch, K) teacher logits → (batch, K) targets. With softmax centring the batch statistics go to the
        centre, which moves at once (`update=True`) or at the caller's `center.apply()` (once per optimizer step)."""
        if self.centering == "sinkhorn":
            return sinkhorn_knopp(teacher_logits, temperature)
        targets = self.center(teacher_logits, temperature)
        flat = teacher_logits.float().reshape(-1, teacher_logits.shape[-1])
        self.center.accumulate(flat.sum(dim=0), float(flat.shape[0]))
        if update:
            self.center.apply()
        return targets

    def forward(self, student_logits: torch.Tensor, teacher_targets: torch.Tensor) -> torch.Tensor:
        """student_logits: (crops, batch, K); teacher_targets: (batch, K)."""
        log_probs = F.log_softmax(student_logits.float() / self.student_temperature, dim=-1)
        return -(teacher_targets[None] * log_probs).sum(dim=-1).mean()
