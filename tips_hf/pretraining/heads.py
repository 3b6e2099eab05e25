"""DINO-style projection head: MLP → L2-normalised bottleneck → weight-normalised prototype layer."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..losses.prototypes import PrototypePrecision, prototype_dtype, prototype_logits


class DINOHead(nn.Module):
    """Projection head of the self-distillation losses (DINO, iBOT).

    Args:
        in_dim (`int`): token width.
        out_dim (`int`): number of prototypes.
        hidden_dim (`int`): MLP width.
        bottleneck_dim (`int`): width before the prototypes.
        num_layers (`int`): MLP layers (≥ 1).
        precision (`str`, defaults to `"autocast"`): inputs of the prototype GEMM, see `prototype_dtype`.
    """

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        hidden_dim: int = 2048,
        bottleneck_dim: int = 256,
        num_layers: int = 3,
        precision: PrototypePrecision = "autocast",
    ):
        super().__init__()
        layers: list[nn.Module] = []
        dims = [in_dim] + [hidden_dim] * (num_layers - 1) + [bottleneck_dim]
        for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
            layers.append(nn.Linear(a, b))
            if i < len(dims) - 2:
                layers.append(nn.GELU())
        self.mlp = nn.Sequential(*layers)
        # Prototypes with unit norm (DINO's weight norm with a frozen gain of 1), stored as a plain weight.
        self.prototypes = nn.Linear(bottleneck_dim, out_dim, bias=False)
        self.precision = precision
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for module in self.mlp:
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                nn.init.zeros_(module.bias)
        nn.init.trunc_normal_(self.prototypes.weight, std=0.02)

    def bottleneck(self, tokens: torch.Tensor) -> torch.Tensor:
        """(..., in_dim) → (..., bottleneck_dim) L2-normalised features, float32."""
        return F.normalize(self.mlp(tokens).float(), dim=-1)

    def unit_prototypes(self) -> torch.Tensor:
        """(out_dim, bottleneck_dim) float32 prototypes of unit norm: computed once per step by the caller and passed
        to every `logits` call of that step (normalising a (32k × 256) weight per call was a large share of the old
        step's memory traffic)."""
        return F.normalize(self.prototypes.weight.float(), dim=-1)

    def matmul_dtype(self, device_type: str) -> torch.dtype:
        """Input dtype of this head's prototype GEMMs under the current autocast state."""
        return prototype_dtype(device_type, self.precision)

    def logits(self, features: torch.Tensor, prototypes: torch.Tensor | None = None) -> torch.Tensor:
        """(..., bottleneck_dim) normalised features → (..., out_dim) float32 logits (cosines with the unit
        prototypes; `prototypes` from `unit_prototypes()`, computed here when omitted)."""
        prototypes = self.unit_prototypes() if prototypes is None else prototypes
        return prototype_logits(features, prototypes, self.matmul_dtype(features.device.type))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """(..., in_dim) → (..., out_dim) float32 logits (cosines of the bottleneck with the unit prototypes)."""
        return self.logits(self.bottleneck(tokens))
