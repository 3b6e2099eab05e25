"""Dense heads on TIPS patch features: semantic segmentation and depth regression.

`TipsForDenseTasks` = a `TipsVisionModel` backbone (frozen, or adapted with LoRA) + a small head on the (h, w) patch
grid; predictions are upsampled bilinearly to the label resolution.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers.utils import ModelOutput

from ..modeling.modeling_tips import TipsModel, TipsVisionModel


@dataclass
class DenseOutput(ModelOutput):
    """`logits` (B, C, H, W) for segmentation or (B, 1, H, W) for depth, at the label size when labels are given; `loss`
    (a scalar) when labels are given."""

    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None


class DenseHead(nn.Module):
    """`linear`: one 1×1 projection of the patch features; `mlp`: LayerNorm → Linear → GELU → Linear."""

    def __init__(self, in_dim: int, out_dim: int, kind: str = "linear", hidden_dim: int = 256):
        super().__init__()
        if kind == "linear":
            self.net = nn.Sequential(nn.LayerNorm(in_dim), nn.Linear(in_dim, out_dim))
        elif kind == "mlp":
            self.net = nn.Sequential(nn.LayerNorm(in_dim), nn.Linear(in_dim, hidden_dim), nn.GELU(),
                                     nn.Linear(hidden_dim, out_dim))
        else:
            raise ValueError(f"head kind must be 'linear' or 'mlp', got {kind!r}.")

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        """(B, h, w, D) → (B, out_dim, h, w)."""
        return self.net(patches).permute(0, 3, 1, 2)


class TipsForDenseTasks(nn.Module):
    """TIPS vision tower with a segmentation or depth head.

    Args:
        backbone: a `TipsVisionModel`, or a `TipsModel` (its vision tower is used).
        task (`str`): `"segmentation"` (cross-entropy, `num_classes` outputs, `ignore_index` 255) or `"depth"`
            (squared error on the pixels with a depth, finite and > 0; one output: the metric is RMSE).
        num_classes (`int`): segmentation classes.
        head (`str`): `"linear"` or `"mlp"`.
    """

    def __init__(self, backbone: TipsVisionModel | TipsModel, task: str = "segmentation", num_classes: int = 2,
                 head: str = "linear", ignore_index: int = 255):
        super().__init__()
        if task not in ("segmentation", "depth"):
            raise ValueError(f"task must be 'segmentation' or 'depth', got {task!r}.")
        self.vision_model = backbone.vision_model if isinstance(backbone, TipsModel) else backbone
        self.task, self.ignore_index = task, ignore_index
        width = self.vision_model.config.hidden_size
        self.head = DenseHead(width, num_classes if task == "segmentation" else 1, head)

    def forward(self, pixel_values: torch.Tensor, labels: torch.Tensor | None = None) -> DenseOutput:
        patches = self.vision_model(pixel_values=pixel_values).patch_embeds
        logits = self.head(patches)
        size = labels.shape[-2:] if labels is not None else pixel_values.shape[-2:]
        logits = F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
        loss = None
        if labels is not None:
            if self.task == "segmentation":
                loss = F.cross_entropy(logits, labels.long(), ignore_index=self.ignore_index)
            else:
                valid = torch.isfinite(labels) & (labels > 0)  # 0 or less: missing (NYU), as SILog and the metrics
                loss = (logits[:, 0] - labels).pow(2)[valid].mean()
        return DenseOutput(loss, logits)

    def predict(self, pixel_values: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """(B, H, W) class ids (segmentation) or depth values, at `size`."""
        logits = self.forward(pixel_values).logits
        logits = F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
        return logits.argmax(1) if self.task == "segmentation" else logits[:, 0]
