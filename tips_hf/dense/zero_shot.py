# Copyright 2026 The tips-hf authors. Licensed under the Apache License, Version 2.0.
"""Zero-shot classification and segmentation with text prompts.

Label embeddings are the renormalised mean of the L2-normalised embeddings of each label written into several prompt
templates (the CLIP recipe). Images are classified with a CLS embedding and the head's temperature. Segmentation follows
the official notebook (`TIPS_zeroshot_segmentation.ipynb`, the published ADE20K numbers) by default: the MaskCLIP
"values trick" patch features, cosine with the label embeddings of the TCL templates ([`SEGMENTATION_TEMPLATES`]), over
the whole image or in sliding windows. The functions run under `torch.no_grad()`; put the model in eval mode
(`from_pretrained` does).
"""

from __future__ import annotations

import math
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

# The official zero-shot segmentation prompts: the TCL paper's templates (a subset of CLIP's ImageNet prompts + two).
SEGMENTATION_TEMPLATES: tuple[str, ...] = (
    "itap of a {}.",
    "a bad photo of a {}.",
    "a origami {}.",
    "a photo of the large {}.",
    "a {} in a video game.",
    "art of the {}.",
    "a photo of the small {}.",
    "a photo of many {}.",
    "a photo of {}s.",
)
SEGMENTATION_METHODS = ("values", "patches")
SEGMENTATION_MODES = ("whole", "slide")
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


def _vision_tower(model: Any) -> Any:
    """The `TipsVisionModel` of a `TipsModel` (or the model itself)."""
    return getattr(model, "vision_model", model)


@torch.no_grad()
def value_patch_embeds(model: Any, pixel_values: torch.Tensor) -> torch.Tensor:
    """Patch features of the MaskCLIP "values trick" (the official zero-shot segmentation): all blocks but the last
    run normally; in the last, attention is replaced by its value path (norm1 → value projection → out projection →
    LayerScale → residual), then the block's MLP branch and the final LayerNorm.

    Args:
        model ([`TipsModel`] or [`TipsVisionModel`]): the vision tower is used.
        pixel_values (`torch.FloatTensor` of shape `(B, 3, H, W)`): images in [0, 1], sides multiples of 14.

    Returns:
        `torch.FloatTensor` of shape `(B, H // 14, W // 14, D)` (not normalised).
    """
    vision = _vision_tower(model)
    hidden = vision.embeddings(pixel_values)
    *blocks, last = vision.encoder.layers
    for block in blocks:
        hidden = block(hidden, None)[0]
    width = hidden.shape[-1]
    value = last.attention.qkv(last.norm1(hidden))[..., 2 * width :]  # rows [query; key; value]
    hidden = hidden + last.layer_scale1(last.attention.out_proj(value))
    hidden = hidden + last.layer_scale2(last.mlp(last.norm2(hidden)))
    tokens = vision.layernorm(hidden)
    batch, _, height, width_px = pixel_values.shape
    patch = vision.config.patch_size
    first_patch = 1 + vision.config.num_register_tokens
    return tokens[:, first_patch:].reshape(batch, height // patch, width_px // patch, -1)


def _patch_cosines(model: Any, pixel_values: torch.Tensor, label_embeds: torch.Tensor, method: str) -> torch.Tensor:
    """(B, K, h, w) cosines of the patch features and the labels; sides that are not multiples of the patch size are
    first resized (bicubic) up to the next multiple, as the notebook's `encode_image_value_attention` does."""
    patch = getattr(getattr(_vision_tower(model), "config", None), "patch_size", 14)
    height, width = pixel_values.shape[-2:]
    size = (math.ceil(height / patch) * patch, math.ceil(width / patch) * patch)
    if size != (height, width):
        pixel_values = F.interpolate(pixel_values, size=size, mode="bicubic", align_corners=False)
    if method == "values":
        features = value_patch_embeds(model, pixel_values)
    elif hasattr(model, "get_image_features"):
        features = model.get_image_features(pixel_values=pixel_values).patch_embeds
    else:
        features = model(pixel_values=pixel_values, return_dict=True).patch_embeds
    features = F.normalize(features.float(), dim=-1)
    return torch.einsum("bhwd,kd->bkhw", features, label_embeds.to(features))


@torch.no_grad()
def zero_shot_segment(
    model: Any,
    pixel_values: torch.Tensor,
    label_embeds: torch.Tensor,
    method: str = "values",
    mode: str = "whole",
    window: int | None = None,
    stride: int | None = None,
    *,
    output_size: tuple[int, int] | None = None,
    background_threshold: float | None = None,
) -> dict[str, torch.Tensor]:
    """Zero-shot semantic segmentation, by default as the official notebook computes the published ADE20K numbers.

    Args:
        model ([`TipsModel`] or [`TipsVisionModel`]): the image encoder (label embeddings come from the text tower,
            see [`encode_labels`] with [`SEGMENTATION_TEMPLATES`]).
        pixel_values (`torch.FloatTensor` of shape `(B, 3, H, W)`): images in [0, 1]; the official protocol resizes
            the short side to 448 (bicubic) first.
        label_embeds (`torch.FloatTensor` of shape `(K, D)`): unit-norm label embeddings.
        method (`str`, defaults to `"values"`): `"values"` (MaskCLIP values trick, [`value_patch_embeds`]; official)
            or `"patches"` (the final patch tokens).
        mode (`str`, defaults to `"whole"`): `"whole"` (one pass over the image: cosines on the patch grid) or
            `"slide"` (the notebook's `predict_slide`: square windows of `window` px every `stride` px, the last
            window of each row/column flush with the border; each window's cosines upsampled bilinearly to the
            window, softmax over the labels, averaged where windows overlap).
        window (`int`, *optional*): slide window side in px (default 448, the official value).
        stride (`int`, *optional*): slide stride in px (default `3 * window // 4`, i.e. the official 336).
        output_size (`tuple[int, int]`, *optional*): `(H', W')` to upsample `scores` to (bilinear, before the argmax;
            the official evaluation upsamples to the label map).
        background_threshold (`float`, *optional*): pixels whose best score is below it get the label
            [`BACKGROUND`] (-1).

    Returns:
        `dict` with `scores`: `(B, K, h, w)` cosine similarities (`"whole"`, h = ⌈H/14⌉) or `(B, K, H, W)`
        window-averaged probabilities (`"slide"`), or at `output_size`; `labels` (`torch.LongTensor`, the argmax over
        K); `logits` (the same tensor as `scores`, the name of earlier versions).
    """
    if method not in SEGMENTATION_METHODS:
        raise ValueError(f"method must be one of {SEGMENTATION_METHODS}, got {method!r}.")
    if mode not in SEGMENTATION_MODES:
        raise ValueError(f"mode must be one of {SEGMENTATION_MODES}, got {mode!r}.")
    if mode == "whole":
        scores = _patch_cosines(model, pixel_values, label_embeds, method)
    else:
        scores = _slide(model, pixel_values, label_embeds, method, window or 448, stride)
    if output_size is not None:
        scores = F.interpolate(scores, size=tuple(output_size), mode="bilinear", align_corners=False)
    best, labels = scores.max(dim=1)
    if background_threshold is not None:
        labels = torch.where(best < background_threshold, torch.full_like(labels, BACKGROUND), labels)
    return {"scores": scores, "labels": labels, "logits": scores}


def _slide(
    model: Any, pixel_values: torch.Tensor, label_embeds: torch.Tensor, method: str, window: int, stride: int | None
) -> torch.Tensor:
    stride = stride or max(1, 3 * window // 4)
    if window <= 0 or stride <= 0:
        raise ValueError(f"window and stride must be positive, got {window} and {stride}.")
    batch, _, height, width = pixel_values.shape
    probs = pixel_values.new_zeros(batch, label_embeds.shape[0], height, width, dtype=torch.float32)
    counts = pixel_values.new_zeros(height, width, dtype=torch.float32)
    rows = max(height - window + stride - 1, 0) // stride + 1
    cols = max(width - window + stride - 1, 0) // stride + 1
    for i in range(rows):
        for j in range(cols):
            y2, x2 = min(i * stride + window, height), min(j * stride + window, width)
            y1, x1 = max(y2 - window, 0), max(x2 - window, 0)
            cosines = _patch_cosines(model, pixel_values[:, :, y1:y2, x1:x2], label_embeds, method)
            cosines = F.interpolate(cosines, size=(y2 - y1, x2 - x1), mode="bilinear", align_corners=False)
            probs[:, :, y1:y2, x1:x2] += cosines.softmax(dim=1)
            counts[y1:y2, x1:x2] += 1
    return probs / counts


__all__ = [
    "BACKGROUND",
    "PROMPT_TEMPLATES",
    "SEGMENTATION_TEMPLATES",
    "value_patch_embeds",
    "encode_labels",
    "encode_texts",
    "zero_shot_classify",
    "zero_shot_segment",
]
