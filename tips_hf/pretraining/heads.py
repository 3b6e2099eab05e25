"""DINO-style projection head: MLP → L2-normalised bottleneck → weight-normalised prototype layer."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class DINOHead(nn.Module):
    """Projection head of the self-distillation losses (DINO, iBOT).

    Args:
        in_dim (`int`): token width.
        out_dim (`int`): number of prototypes.
        hidden_dim (`int`): MLP width.
        bottleneck_dim (`int`): width before the prototypes.
        num_layers (`int`): MLP layers (≥ 1).
    """

    def __init__(
        self, in_dim: int, out_dim: int, hidden_dim: int = 2048, bottleneck_dim: int = 256, num_layers: int = 3
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

    def logits(self, features: torch.Tensor) -> torch.Tensor:
        """(..., bottleneck_dim) normalised features → (..., out_dim) logits in float32 (autocast off: softmaxes over
        32k prototypes at τ = 0.04 need more than bf16's 8 mantissa bits)."""
        with torch.autocast(features.device.type, enabled=False):
            return F.linear(features.float(), F.normalize(self.prototypes.weight.float(), dim=-1))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """(..., in_dim) → (..., out_dim) float32 logits (cosines of the bottleneck with the unit prototypes)."""
        return self.logits(self.bottleneck(tokens))
