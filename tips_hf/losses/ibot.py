"""Masked image modeling on patch tokens: iBOT (TIPS v1, masked patches only) and iBOT++ (TIPSv2, all patches)."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from .centering import SoftmaxCenter, sinkhorn_knopp, sinkhorn_scalings

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
        self, teacher_logits: torch.Tensor, temperature: float, mask: torch.Tensor | None = None, update: bool = True
    ) -> torch.Tensor:
        """(batch, N, K) teacher logits → targets. For `mode="masked"` only masked patches count (`mask` (batch, N))
        in the Sinkhorn marginals and the centre statistics. Materialises (batch, N, K): see `chunked_loss`."""
        batch, patches, dim = teacher_logits.shape
        weights = mask.reshape(-1) if (self.mode == "masked" and mask is not None) else None
        flat = teacher_logits.reshape(-1, dim)
        if self.centering == "sinkhorn":
            return sinkhorn_knopp(flat, temperature, weights=weights).reshape(batch, patches, dim)
        targets = self.center(flat, temperature).reshape(batch, patches, dim)
        used = flat.float() if weights is None else flat.float()[weights.bool()]
        self.center.accumulate(used.sum(dim=0), float(used.shape[0]))
        if update:
            self.center.apply()
        return targets

    def token_weights(self, mask: torch.Tensor) -> torch.Tensor:
        """(batch, N) weights such that the loss is `Σ weights · cross-entropy` (per-image means, then the mean over
        images): the one place where the normalisation of `forward` and `chunked_loss` is defined."""
        masked = mask.float()
        batch, patches = mask.shape
        per_masked = masked / masked.sum(-1, keepdim=True).clamp_min(1.0)
        if self.mode == "masked":
            return per_masked / batch
        if self.normalisation == "mean":
            return torch.full_like(masked, 1.0 / (batch * patches))
        visible = 1.0 - masked
        per_visible = visible / visible.sum(-1, keepdim=True).clamp_min(1.0)
        return (per_masked + self.visible_weight * per_visible) / batch

    def per_patch(self, student_logits: torch.Tensor, teacher_targets: torch.Tensor) -> torch.Tensor:
        """(batch, N) cross-entropies."""
        log_probs = F.log_softmax(student_logits.float() / self.student_temperature, dim=-1)
        return -(teacher_targets * log_probs).sum(dim=-1)

    def forward(self, student_logits: torch.Tensor, teacher_targets: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """student_logits, teacher_targets: (batch, N, K); mask: (batch, N) bool, True = masked in the student view."""
        return (self.per_patch(student_logits, teacher_targets) * self.token_weights(mask)).sum()

    def chunked_loss(
        self,
        student_logits_fn: Callable[[torch.Tensor], torch.Tensor],
        student_tokens: torch.Tensor,
        teacher_logits_fn: Callable[[torch.Tensor], torch.Tensor],
        teacher_features: torch.Tensor,
        mask: torch.Tensor,
        temperature: float,
        chunk_tokens: int,
        update: bool = True,
    ) -> torch.Tensor:
        """The loss of `forward`, computed `chunk_tokens` tokens at a time so that no (tokens, K) tensor is ever held
        whole: the peak of head + loss is O(chunk_tokens · K), forward and backward.

        Each chunk's student logits, teacher targets and cross-entropies are recomputed in backward
        (`torch.utils.checkpoint`; only the chunk's input tokens are kept). Teacher targets come from
        `teacher_features` (e.g. the teacher head's bottleneck, (batch, N, d)) through `teacher_logits_fn`, chunk
        by chunk: softmax centring needs only the running logit sums (added to the centre's pending statistics),
        Sinkhorn-Knopp only its scaling vectors (`sinkhorn_scalings`).

        Args:
            student_logits_fn: (n, D) student tokens → (n, K) logits, with gradient (e.g. the student head).
            student_tokens (`torch.Tensor` of shape `(batch, N, D)`).
            teacher_logits_fn: (n, d) teacher features → (n, K) logits (called without gradient).
            teacher_features (`torch.Tensor` of shape `(batch, N, d)`).
            mask (`torch.Tensor` of shape `(batch, N)`, bool): True = masked in the student view.
            temperature (`float`): teacher temperature.
            chunk_tokens (`int`): tokens per chunk; one chunk (no recomputation) when it covers them all.
            update (`bool`): apply the centre update now (else at the caller's `center.apply()`).
        """
        batch, patches = mask.shape
        total_tokens = batch * patches
        student = student_tokens.reshape(total_tokens, -1)
        teacher = teacher_features.detach().reshape(total_tokens, -1)
        weights = self.token_weights(mask).reshape(-1)
        stats = mask.reshape(-1).float() if self.mode == "masked" else None
        bounds = [(i, min(i + chunk_tokens, total_tokens)) for i in range(0, total_tokens, max(chunk_tokens, 1))]

        def teacher_logits(i: int, j: int) -> torch.Tensor:
            with torch.no_grad():
                return teacher_logits_fn(teacher[i:j]).float()

        if self.centering == "sinkhorn":
            shift, prototype_scale, row_scales = sinkhorn_scalings(
                [lambda i=i, j=j: teacher_logits(i, j) for i, j in bounds], temperature,
                weights=None if stats is None else [stats[i:j] for i, j in bounds],
            )

            def targets(index: int, logits: torch.Tensor) -> torch.Tensor:
                return torch.exp((logits - shift) / temperature) * prototype_scale[None] * row_scales[index][:, None]
        else:
            center = self.center.center.clone()
            with torch.no_grad():
                sums = None
                for i, j in bounds:
                    logits = teacher_logits(i, j)
                    part = logits.sum(0) if stats is None else stats[i:j] @ logits
                    sums = part if sums is None else sums + part
                self.center.accumulate(sums, float(total_tokens) if stats is None else stats.sum())
            if update:
                self.center.apply()

            def targets(index: int, logits: torch.Tensor) -> torch.Tensor:
                return F.softmax((logits - center) / temperature, dim=-1)

        def chunk_cross_entropy(tokens: torch.Tensor, index: int) -> torch.Tensor:
            i, j = bounds[index]
            with torch.no_grad():
                target = targets(index, teacher_logits(i, j))
            log_probs = F.log_softmax(student_logits_fn(tokens).float() / self.student_temperature, dim=-1)
            return -(target * log_probs).sum(dim=-1)

        recompute = len(bounds) > 1 and torch.is_grad_enabled()
        loss = student.new_zeros((), dtype=torch.float32)
        for index, (i, j) in enumerate(bounds):
            if recompute:
                ce = checkpoint(chunk_cross_entropy, student[i:j], index, use_reentrant=False)
            else:
                ce = chunk_cross_entropy(student[i:j], index)
            loss = loss + (ce * weights[i:j]).sum()
        return loss
