"""Prototype GEMMs (bottleneck features × unit prototypes) in the precision the hardware runs fastest, shared by the
projection heads and the iBOT loss."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

PrototypePrecision = Literal["autocast", "float32"]


def prototype_dtype(device_type: str, precision: PrototypePrecision = "autocast") -> torch.dtype:
    """Input dtype of the prototype GEMMs: autocast's (bf16 / fp16) when mixed precision is on and `precision` is
    `"autocast"`, else float32. The GEMMs accumulate and return float32 in every case."""
    if precision == "autocast" and torch.is_autocast_enabled(device_type):
        return torch.get_autocast_dtype(device_type)
    return torch.float32


def matmul_fp32(a: torch.Tensor, b: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """`a @ b` (2-D) with inputs rounded to `dtype` and a float32 result.

    Why not plain autocast: autocast would also round the *output* to bf16 (8 mantissa bits), and these outputs are
    cosines that the losses divide by temperatures of 0.04–0.1 before a softmax over 32k prototypes, where a bf16
    rounding of the cosine (±0.004) moves a logit by up to 0.1. Rounding only the inputs costs ~1e-4 on a cosine of
    256-dim unit vectors (float32 accumulation), and on CUDA the bf16 tensor cores do it at full speed
    (`torch.mm(..., out_dtype=torch.float32)`). On CPU (no such kernel) the product is rounded to bf16 then widened.
    """
    with torch.autocast(a.device.type, enabled=False):
        if dtype == torch.float32:
            return torch.mm(a.float(), b.float())
        a, b = a.to(dtype), b.to(dtype)
        if a.device.type == "cuda":
            return torch.mm(a, b, out_dtype=torch.float32)
        return torch.mm(a, b).float()


class _PrototypeLogits(torch.autograd.Function):
    """(n, d) features × (K, d) unit prototypes → (n, K) float32 cosines, forward and backward GEMMs with inputs in a
    low-precision dtype (float32 accumulation and results, see `matmul_fp32`)."""

    @staticmethod
    def forward(ctx, features: torch.Tensor, prototypes: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        ctx.save_for_backward(features, prototypes)
        ctx.dtype = dtype
        return matmul_fp32(features, prototypes.t(), dtype)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        features, prototypes = ctx.saved_tensors
        grad_features = matmul_fp32(grad, prototypes, ctx.dtype) if ctx.needs_input_grad[0] else None
        grad_prototypes = matmul_fp32(grad.t(), features, ctx.dtype) if ctx.needs_input_grad[1] else None
        return grad_features, grad_prototypes, None


def prototype_logits(features: torch.Tensor, prototypes: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """(..., d) features × (K, d) unit prototypes → (..., K) float32 logits (cosines), GEMM inputs in `dtype`."""
    flat = features.reshape(-1, features.shape[-1])
    if dtype == torch.float32:
        with torch.autocast(features.device.type, enabled=False):
            logits = F.linear(flat.float(), prototypes.float())
    else:
        logits = _PrototypeLogits.apply(flat, prototypes, dtype)
    return logits.reshape(*features.shape[:-1], prototypes.shape[0])
