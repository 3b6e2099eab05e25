"""Masked image modeling on patch tokens: iBOT (TIPS v1, masked patches only) and iBOT++ (TIPSv2, all patches)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .centering import SoftmaxCenter, sinkhorn_knopp, sinkhorn_scalings
from .prototypes import matmul_fp32

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
        in the Sinkhorn marginals and the centre statistics. Materialises (batch, N, K): see `loss_from_features`."""
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

    def loss_from_features(
        self,
        student_features: torch.Tensor,
        student_prototypes: torch.Tensor,
        teacher_features: torch.Tensor,
        teacher_prototypes: torch.Tensor,
        mask: torch.Tensor,
        temperature: float,
        chunk_tokens: int | None = None,
        update: bool = True,
        matmul_dtype: torch.dtype = torch.float32,
    ) -> torch.Tensor:
        """The loss of `forward` from the heads' bottleneck features and unit prototypes, computed `chunk_tokens`
        tokens at a time so that no (tokens, K) tensor is ever held whole (peak O(chunk_tokens · K)).

        One pass over the chunks does everything: per chunk, the teacher logits (one GEMM) give the targets and add
        to the centre's statistics (softmax centring; Sinkhorn-Knopp runs its scaling passes first), the student
        logits (one GEMM) give the cross-entropy, and its gradient `w/τ_s · (softmax(s/τ_s) · Σq − q)` is formed
        at once and pushed through the two GEMMs of the backward (features and prototypes): four GEMMs per chunk,
        nothing recomputed, and the gradients of the whole pass are what backward returns. The MLPs and the
        prototype normalisation run once, before (their gradients flow through autograd as usual).

        Args:
            student_features (`torch.Tensor` of shape `(batch, N, d)`): the student head's unit bottleneck features,
                with gradient.
            student_prototypes (`torch.Tensor` of shape `(K, d)`): the student head's unit prototypes, with gradient.
            teacher_features (`torch.Tensor` of shape `(batch, N, d)`), teacher_prototypes (`(K, d)`): the teacher's.
            mask (`torch.Tensor` of shape `(batch, N)`, bool): True = masked in the student view.
            temperature (`float`): teacher temperature.
            chunk_tokens (`int`, *optional*): tokens per chunk (balanced chunks); all at once when omitted.
            update (`bool`): apply the centre update now (else at the caller's `center.apply()`).
            matmul_dtype (`torch.dtype`): inputs of the prototype GEMMs (float32 accumulation and results).
        """
        batch, patches = mask.shape
        total_tokens = batch * patches
        student = student_features.reshape(total_tokens, -1)
        teacher = teacher_features.detach().reshape(total_tokens, -1)
        teacher_prototypes = teacher_prototypes.detach()
        weights = self.token_weights(mask).reshape(-1)
        stats = mask.reshape(-1).float() if self.mode == "masked" else None
        bounds = chunk_bounds(total_tokens, chunk_tokens)
        self.last_chunks = len(bounds)

        def teacher_logits(i: int, j: int) -> torch.Tensor:
            return matmul_fp32(teacher[i:j], teacher_prototypes.t(), matmul_dtype)

        if self.centering == "sinkhorn":
            shift, prototype_scale, row_scales = sinkhorn_scalings(
                [lambda i=i, j=j: teacher_logits(i, j) for i, j in bounds], temperature,
                weights=None if stats is None else [stats[i:j] for i, j in bounds],
            )

            def targets(index: int, i: int, j: int) -> torch.Tensor:
                logits = teacher_logits(i, j).sub_(shift).div_(temperature).exp_()
                return logits.mul_(prototype_scale[None]).mul_(row_scales[index][:, None])
        else:
            center = self.center.center.clone()
            sums = teacher.new_zeros(teacher_prototypes.shape[0], dtype=torch.float32)

            def targets(index: int, i: int, j: int) -> torch.Tensor:
                logits = teacher_logits(i, j)
                sums.add_(logits.sum(0) if stats is None else stats[i:j] @ logits)
                return torch.softmax(logits.sub_(center).div_(temperature), dim=-1)

        # the gradients are formed only when a backward can follow (not under no_grad / inference_mode)
        need_grad = torch.is_grad_enabled() and (student.requires_grad or student_prototypes.requires_grad)
        loss = _SoftTargetCrossEntropy.apply(
            student, student_prototypes, weights.detach(), targets, bounds, self.student_temperature, matmul_dtype,
            need_grad,
        )
        if self.centering == "softmax":
            self.center.accumulate(sums, float(total_tokens) if stats is None else stats.sum())
            if update:
                self.center.apply()
        return loss


def chunk_bounds(total: int, chunk: int | None) -> list[tuple[int, int]]:
    """`[(start, end), ...]` of ⌈total / chunk⌉ chunks of equal size (± 1) covering `range(total)`."""
    count = 1 if not chunk or chunk >= total else -(-total // chunk)
    size, extra = divmod(total, count)
    bounds, start = [], 0
    for index in range(count):
        end = start + size + (index < extra)
        bounds.append((start, end))
        start = end
    return bounds


class _SoftTargetCrossEntropy(torch.autograd.Function):
    """`Σ_rows w · CE(targets, log_softmax(features @ prototypesᵀ / τ_s))` in token chunks, with the gradients of
    `features` and `prototypes` formed in the same pass (backward only scales them by the incoming gradient).

    With `z = f Wᵀ / τ` and `p = softmax(z)`, `∂/∂z [−Σ_k q_k log p_k] = p · Σ_k q_k − q` (targets of Sinkhorn rows
    that are weighted out sum to 0, not 1), so `∂L/∂f = (w/τ)·(p Σq − q) W` and `∂L/∂W = ((w/τ)·(p Σq − q))ᵀ f`."""

    @staticmethod
    def forward(ctx, features, prototypes, weights, targets, bounds, temperature, dtype, need):
        loss = features.new_zeros((), dtype=torch.float32)
        grad_features = torch.empty(features.shape, dtype=torch.float32, device=features.device) if need else None
        grad_prototypes = torch.zeros(prototypes.shape, dtype=torch.float32, device=features.device) if need else None
        for index, (i, j) in enumerate(bounds):
            target = targets(index, i, j)  # (c, K) float32
            log_probs = torch.log_softmax(matmul_fp32(features[i:j], prototypes.t(), dtype).div_(temperature), -1)
            w = weights[i:j]
            loss = loss + (w * -torch.linalg.vecdot(target, log_probs)).sum()
            if need:
                scale = (w / temperature)[:, None]
                # the gradient of the chunk's logits, in the storage of its log-probabilities
                grad = log_probs.exp_().mul_(target.sum(-1, keepdim=True) * scale).sub_(target.mul_(scale))
                del target, log_probs
                grad_features[i:j] = matmul_fp32(grad, prototypes, dtype)
                grad_prototypes.add_(matmul_fp32(grad.t(), features[i:j], dtype))
        if need:
            ctx.save_for_backward(grad_features, grad_prototypes)
        return loss

    @staticmethod
    def backward(ctx, grad_loss):
        grad_features, grad_prototypes = ctx.saved_tensors
        return grad_features * grad_loss, grad_prototypes * grad_loss, None, None, None, None, None, None
