# Copyright 2026 The tips-hf authors. Licensed under the Apache License, Version 2.0.
"""Zero-shot classification and segmentation with text prompts.

Label embeddings are the renormalised mean of the L2-normalised embeddings of each label written into several prompt
templates (the CLIP recipe). Images are classified with a CLS embedding and the head's temperature; segmentation
compares every (L2-normalised) patch embedding with the label embeddings. The functions run under `torch.no_grad()`;
put the model in eval mode (`from_pretrained` does).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

PROMPT_TEMPLATES: tuple[str, ...] = (
    "a photo of a {}.",
    "a photo of the {}.",
    "a bad photo of a {}.",
    "a close-up photo of a {}.",
    "a photo of a small {}.",
    "a photo of a large {}.",
    "a {} in the scene.",
    "there is a {} in the image.",
    "there is the {} in the scene.",
    "this is a {}.",
    "an image of a {}.",
    "itap of a {}.",
)

HEADS = {"alt_text": 0, "synthetic": 1}
BACKGROUND = -1  # label of pixels below `background_threshold` in `zero_shot_segment`


def _tokenizer_of(tokenizer_or_processor: Any) -> Any:
    tokenizer = getattr(tokenizer_or_processor, "tokenizer", None)  # a processor wraps its tokenizer
    return tokenizer_or_processor if tokenizer is None else tokenizer


@torch.no_grad()
def encode_texts(model: Any, tokenizer_or_processor: Any, texts: Sequence[str], batch_size: int = 256) -> torch.Tensor:
    """L2-normalised text embeddings, `(len(texts), D)` float32 on the model's device.

    Texts are padded/cut to the text tower's length (at most the tokenizer's `model_max_length`, 64 for TIPS), as
    [`TipsProcessor`] does.
    """
    tokenizer = _tokenizer_of(tokenizer_or_processor)
    max_length = min(int(getattr(tokenizer, "model_max_length", 64)), model.config.text_config.max_position_embeddings)
    device = next(model.parameters()).device
    chunks = []
    for start in range(0, len(texts), batch_size):
        tokens = tokenizer(
            list(texts[start : start + batch_size]),
            padding="max_length",
            truncation=True,
            max_length=max_length,
            return_tensors="pt",
        )
        output = model.get_text_features(
            input_ids=tokens["input_ids"].to(device), attention_mask=tokens["attention_mask"].to(device)
        )
        chunks.append(F.normalize(output.pooler_output.float(), dim=-1))
    if not chunks:
        return torch.empty(0, model.config.text_config.hidden_size, device=device)
    return torch.cat(chunks)


def encode_labels(
    model: Any,
    tokenizer_or_processor: Any,
    labels: Sequence[str],
    templates: Sequence[str] = PROMPT_TEMPLATES,
    batch_size: int = 256,
) -> torch.Tensor:
    """Embed class names through prompt templates.

    Args:
        model ([`TipsModel`]): the dual encoder (its text tower is used).
        tokenizer_or_processor ([`TipsTokenizer`] or [`TipsProcessor`]): turns text into `input_ids`.
        labels (`Sequence[str]`): the K class names.
        templates (`Sequence[str]`, defaults to [`PROMPT_TEMPLATES`]): T format strings with one `{}` slot.
        batch_size (`int`): texts per forward pass.

    Returns:
        `torch.FloatTensor` of shape `(K, D)`: for each label, the mean of its T L2-normalised prompt embeddings,
        renormalised to unit length.
    """
    templates = list(templates)
    if not templates or any("{}" not in template for template in templates):
        raise ValueError(f"Each template needs a '{{}}' slot for the label, got {templates!r}.")
    if not labels:
        raise ValueError("encode_labels needs at least one label.")
    texts = [template.format(label) for label in labels for template in templates]
    embeds = encode_texts(model, tokenizer_or_processor, texts, batch_size=batch_size)
    return F.normalize(embeds.reshape(len(labels), len(templates), -1).mean(dim=1), dim=-1)


@torch.no_grad()
def zero_shot_classify(
    model: Any, pixel_values: torch.Tensor, label_embeds: torch.Tensor, head: str = "alt_text"
) -> torch.Tensor:
    """Zero-shot classification logits.

    Args:
        model ([`TipsModel`]): the dual encoder.
        pixel_values (`torch.FloatTensor` of shape `(B, 3, H, W)`): images in [0, 1] (see [`TipsProcessor`]).
        label_embeds (`torch.FloatTensor` of shape `(K, D)`): unit-norm label embeddings ([`encode_labels`]).
        head (`str`, defaults to `"alt_text"`): `"alt_text"` (first CLS) or `"synthetic"` (second CLS); each has its
            own temperature.

    Returns:
        `torch.FloatTensor` of shape `(B, K)`: cosine similarity / temperature of the head (softmax gives
        probabilities).
    """
    if head not in HEADS:
        raise ValueError(f"head must be one of {sorted(HEADS)}, got {head!r}.")
    features = model.get_image_features(pixel_values=pixel_values)
    image = features.alt_text_embeds if head == "alt_text" else features.synthetic_embeds
    image = F.normalize(image.float(), dim=-1)
    temperature = model.temperature[HEADS[head]].float()
    return image @ label_embeds.to(image).T / temperature


@torch.no_grad()
def zero_shot_segment(
    model: Any,
    pixel_values: torch.Tensor,
    label_embeds: torch.Tensor,
    output_size: tuple[int, int] | None = None,
    background_threshold: float | None = None,
) -> dict[str, torch.Tensor]:
    """Zero-shot semantic segmentation from patch–text cosine similarity.

    Args:
        model ([`TipsModel`]): the dual encoder.
        pixel_values (`torch.FloatTensor` of shape `(B, 3, H_in, W_in)`): images in [0, 1].
        label_embeds (`torch.FloatTensor` of shape `(K, D)`): unit-norm label embeddings ([`encode_labels`]).
        output_size (`tuple[int, int]`, *optional*): `(H, W)` to upsample the scores to (bilinear, on the scores,
            before the argmax); `None` keeps the patch grid `(h, w)`.
        background_threshold (`float`, *optional*): pixels whose best cosine similarity is below it get the label
            [`BACKGROUND`] (-1).

    Returns:
        `dict` with `logits` (`torch.FloatTensor` of shape `(B, K, h, w)`, or `(B, K, H, W)` when upsampled): cosine
        similarities of patches and labels; `labels` (`torch.LongTensor` of shape `(B, h, w)` or `(B, H, W)`): argmax
        over K (or -1 for background).
    """
    patches = F.normalize(model.get_image_features(pixel_values=pixel_values).patch_embeds.float(), dim=-1)
    logits = torch.einsum("bhwd,kd->bkhw", patches, label_embeds.to(patches))
    if output_size is not None:
        logits = F.interpolate(logits, size=tuple(output_size), mode="bilinear", align_corners=False)
    scores, labels = logits.max(dim=1)
    if background_threshold is not None:
        labels = torch.where(scores < background_threshold, torch.full_like(labels, BACKGROUND), labels)
    return {"logits": logits, "labels": labels}


__all__ = [
    "BACKGROUND",
    "PROMPT_TEMPLATES",
    "encode_labels",
    "encode_texts",
    "zero_shot_classify",
    "zero_shot_segment",
]
