"""Masked image modeling on patch tokens: iBOT (TIPS v1, masked patches only) and iBOT++ (TIPSv2, all patches)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .centering import SoftmaxCenter, sinkhorn_knopp

MODES = ("masked", "all")
NORMALISATIONS = ("masked_plus_visible", "mean")


class IBOTPatchLoss(nn.Module):
    """Cross-entropy between the teacher's centred, sharpened patch distributions (un-masked view) and the student's
    (masked view), per image then averaged over images (DINOv2's normalisation).

    Args:
        out_dim (`int`): number of patch prototypes.
        student_temperature (`float`, defaults to 0.1): τ_s.
        center_momentum (`float`, defaults to 0.9): EMA momentum of the patch centre (separate from the CLS one).
        centering (`str`, defaults to `"softmax"`): `"softmax"` or `"sinkhorn"`.
        mode (`str`, defaults to `"masked"`): `"masked"` — iBOT, only masked patches are supervised (v1);
            `"all"` — iBOT++, visible patches too (v2).
        normalisation (`str`, defaults to `"masked_plus_visible"`): for `mode="all"`: `mean_masked + w · mean_visible`
            per image, or `"mean"` — the plain mean over all patches (reported to under-weight masked patches).
        visible_weight (`float`, defaults to 1.0): `w` above.
    """

    def __init__(
        self,
        out_dim: int,
        student_temperature: float = 0.1,
        center_momentum: float = 0.9,
        centering: str = "softmax",
        mode: str = "masked",
        normalisation: str = "masked_plus_visible",
        visible_weight: float = 1.0,
    ):
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"iBOT mode must be one of {MODES}, got {mode!r}.")
        if normalisation not in NORMALISATIONS:
            raise ValueError(f"iBOT normalisation must be one of {NORMALISATIONS}, got {normalisation!r}.")
        if centering not in ("softmax", "sinkhorn"):
            raise ValueError(f"iBOT centering must be 'softmax' or 'sinkhorn', got {centering!r}.")
        self.student_temperature = student_temperature
        self.centering = centering
        self.mode = mode
        self.normalisation = normalisation
        self.visible_weight = visible_weight
        self.center = SoftmaxCenter(out_dim, center_momentum)

    @torch.no_grad()
    def teacher_targets(
        self, teacher_logits: torch.Tensor, temperature: float, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """(batch, N, K) teacher logits → targets. For `mode="masked"` only masked patches count (`mask` (batch, N))
        in the Sinkhorn marginals and the centre statistics."""
        batch, patches, dim = teacher_logits.shape
        weights = mask.reshape(-1) if (self.mode == "masked" and mask is not None) else None
        flat = teacher_logits.reshape(-1, dim)
        if self.centering == "sinkhorn":
            return sinkhorn_knopp(flat, temperature, weights=weights).reshape(batch, patches, dim)
        targets = self.center(flat, temperature).reshape(batch, patches, dim)
        self.center.update(flat if weights is None else flat[weights.bool()])
        return targets

    def per_patch(self, student_logits: torch.Tensor, teacher_targets: torch.Tensor) -> torch.Tensor:
        """(batch, N) cross-entropies."""
        log_probs = F.log_softmax(student_logits.float() / self.student_temperature, dim=-1)
        return -(teacher_targets * log_probs).sum(dim=-1)

    def forward(self, student_logits: torch.Tensor, teacher_targets: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """student_logits, teacher_targets: (batch, N, K); mask: (batch, N) bool, True = masked in the student view."""
        ce = self.per_patch(student_logits, teacher_targets)
        masked = mask.to(ce.dtype)
        per_image_masked = (ce * masked).sum(-1) / masked.sum(-1).clamp_min(1.0)
        if self.mode == "masked":
            return per_image_masked.mean()
        if self.normalisation == "mean":
            return ce.mean(-1).mean()
        visible = 1.0 - masked
        per_image_visible = (ce * visible).sum(-1) / visible.sum(-1).clamp_min(1.0)
        return (per_image_masked + self.visible_weight * per_image_visible).mean()
