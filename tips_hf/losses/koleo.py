"""KoLeo regulariser (Sablayrolles et al.; DINOv2): spreads embeddings by penalising close nearest neighbours."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class KoLeoLoss(nn.Module):
    """`−mean_i log(min_{j≠i} ‖x_i − x_j‖ + ε)` on L2-normalised (batch, D) embeddings of this process."""

    def __init__(self, eps: float = 1e-8):
        super().__init__()
        self.eps = eps

    def forward(self, embeds: torch.Tensor) -> torch.Tensor:
        x = F.normalize(embeds.float(), dim=-1)
        with torch.no_grad():
            similarity = x @ x.t()
            similarity.fill_diagonal_(-2.0)
            nearest = similarity.argmax(dim=1)
        distances = (x - x[nearest]).norm(dim=-1)
        return -torch.log(distances + self.eps).mean()
