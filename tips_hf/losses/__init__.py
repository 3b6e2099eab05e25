"""TIPS pretraining objectives, each a small module that knows nothing about data or optimisers.

- `DualCaptionContrastiveLoss`: CLS-1 ↔ alt-text and CLS-2 ↔ synthetic caption, global negatives (softmax or sigmoid)
- `DINOLoss`: CLS self-distillation, teacher global crop → student local crops
- `IBOTPatchLoss`: masked image modeling on patch tokens (iBOT, masked only; iBOT++, all patches)
- `KoLeoLoss`: uniformity regulariser (off by default)
- `SoftmaxCenter`, `sinkhorn_knopp`: teacher target normalisation shared by DINO and iBOT
"""

from .centering import SoftmaxCenter, sinkhorn_knopp
from .contrastive import DualCaptionContrastiveLoss, gather_with_grad
from .dino import DINOLoss
from .ibot import IBOTPatchLoss
from .koleo import KoLeoLoss

__all__ = [
    "DINOLoss",
    "DualCaptionContrastiveLoss",
    "IBOTPatchLoss",
    "KoLeoLoss",
    "SoftmaxCenter",
    "gather_with_grad",
    "sinkhorn_knopp",
]
