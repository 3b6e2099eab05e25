"""Dual-caption contrastive loss: CLS-1 ↔ noisy alt-text, CLS-2 ↔ synthetic caption, each with its own temperature,
negatives from the global batch (features all-gathered *with* gradient; each process scores its local rows)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..modeling.modeling_tips import contrastive_loss
from .distributed import world


def gather_with_grad(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate `tensor` (local_batch, ...) over processes in rank order, keeping the autograd graph so that
    every process's features receive gradients from every other process's loss. Identity in one process."""
    rank, size = world()
    if size == 1:
        return tensor
    import torch.distributed.nn.functional as dist_nn

    return torch.cat(dist_nn.all_gather(tensor.contiguous()), dim=0)


def sigmoid_contrastive_loss(
    image_embeds: torch.Tensor,
    global_text_embeds: torch.Tensor,
    scale: torch.Tensor,
    bias: torch.Tensor,
    offset: int,
) -> torch.Tensor:
    """SigLIP loss of local images against all texts: −Σ log σ(±(s·cos + b)), positives at `offset + i`, divided by
    the local batch size (so that the mean over processes is the global SigLIP loss)."""
    logits = image_embeds @ global_text_embeds.t() * scale + bias
    labels = -torch.ones_like(logits)
    rows = torch.arange(logits.shape[0], device=logits.device)
    labels[rows, rows + offset] = 1.0
    return -F.logsigmoid(labels * logits).sum() / logits.shape[0]


class DualCaptionContrastiveLoss(nn.Module):
    """Contrastive loss of both TIPS heads against the captions of the same images.

    Args:
        kind (`str`, defaults to `"softmax"`): `"softmax"` (symmetric InfoNCE, the paper's) or `"sigmoid"` (SigLIP).

    Forward inputs are L2-normalised (local_batch, D) embeddings and the two temperatures; logits are
    `cosine / temperature` (`+ bias` for the sigmoid variant). Returns a dict with `alt_text_loss`, `synthetic_loss`
    and `loss` (their mean, the v1 and v2 recipes' L_CLIP).
    """

    def __init__(self, kind: str = "softmax"):
        super().__init__()
        if kind not in ("softmax", "sigmoid"):
            raise ValueError(f"contrastive kind must be 'softmax' or 'sigmoid', got {kind!r}.")
        self.kind = kind

    def head_loss(
        self,
        image_embeds: torch.Tensor,
        text_embeds: torch.Tensor,
        temperature: torch.Tensor,
        bias: torch.Tensor | None = None,
    ) -> torch.Tensor:
        rank, _ = world()
        local = image_embeds.shape[0]
        # float32 logits whatever the autocast: cosines ÷ temperatures near 0.005 lose too much in bf16
        with torch.autocast(image_embeds.device.type, enabled=False):
            image_embeds, text_embeds = image_embeds.float(), text_embeds.float()
            temperature = temperature.float()
            all_images, all_texts = gather_with_grad(image_embeds), gather_with_grad(text_embeds)
            offset = rank * local
            if self.kind == "sigmoid":
                if bias is None:
                    raise ValueError("the sigmoid contrastive loss needs a learnable bias.")
                return sigmoid_contrastive_loss(image_embeds, all_texts, 1.0 / temperature, bias.float(), offset)
            targets = torch.arange(local, device=image_embeds.device) + offset
            return contrastive_loss(
                image_embeds @ all_texts.t() / temperature, text_embeds @ all_images.t() / temperature, targets
            )

    def forward(
        self,
        alt_image_embeds: torch.Tensor,
        synthetic_image_embeds: torch.Tensor,
        alt_text_embeds: torch.Tensor | None,
        synthetic_text_embeds: torch.Tensor | None,
        temperatures: torch.Tensor,
        biases: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Either caption may be None (ablations): the loss is then the other head's alone."""
        out = {}
        if alt_text_embeds is not None:
            out["alt_text_loss"] = self.head_loss(
                alt_image_embeds, alt_text_embeds, temperatures[0], None if biases is None else biases[0]
            )
        if synthetic_text_embeds is not None:
            out["synthetic_loss"] = self.head_loss(
                synthetic_image_embeds, synthetic_text_embeds, temperatures[1], None if biases is None else biases[1]
            )
        if not out:
            raise ValueError("the contrastive loss needs at least one caption stream.")
        out["loss"] = torch.stack(list(out.values())).mean()
        return out
