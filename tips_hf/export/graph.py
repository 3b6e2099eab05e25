# Copyright 2026 The tips-hf authors. Licensed under the Apache License, Version 2.0.
"""Export-friendly views of the two towers: plain tensor inputs and outputs, and a position-grid resize that stays in
the graph for every input size.

The eager vision tower resizes the learned position grid with `F.interpolate(..., antialias=True)` and skips the
resize when the input grid equals the learned one. Both are a problem for a graph with dynamic height and width:

- the skip is a Python branch on the (symbolic) grid size, so `torch.export` would record a guard and the program
  would refuse the learned grid size;
- ONNX `Resize(antialias=1)` (opset 18) exists, and the dynamo exporter emits it, but ONNX Runtime's antialiasing
  differs from PyTorch's: by up to 0.97 on a unit-variance grid when an output side is 1 (a 14-pixel side) and by
  ~1e-5 at large upscales (measured on ONNX Runtime 1.32).

Both views therefore resize the grid as two matrix products with the weights of PyTorch's separable antialiased
(or plain) bilinear kernel, computed in the graph from the output size ([`resize_weights`]). The weights are the
kernel's own formula (triangle filter, support `max(scale, 1)`, normalised per output pixel), applied horizontally
first as PyTorch does, so the result equals `F.interpolate` up to float32 summation order (tested to 2e-6); at equal
sizes the weights are the identity and the result is exact.
"""

from __future__ import annotations

import contextlib
import types
from collections.abc import Iterator

import torch
from torch import nn

VISION_INPUTS = ("pixel_values",)
VISION_OUTPUTS = ("last_hidden_state", "alt_text_embeds", "synthetic_embeds")
TEXT_INPUTS = ("input_ids", "attention_mask")
TEXT_OUTPUTS = ("text_embeds",)
# Output name of each DPT model (the first field of its transformers output).
DENSE_OUTPUTS = {
    "TipsForSemanticSegmentation": "logits",
    "TipsForDepthEstimation": "predicted_depth",
    "TipsForNormalEstimation": "predicted_normals",
}


def resize_weights(in_size: int, out_size: int | torch.SymInt, antialias: bool = True) -> torch.Tensor:
    """Interpolation matrix `(out_size, in_size)` of PyTorch's bilinear resize along one axis (`align_corners=False`).

    With `antialias=True` this is the kernel of `F.interpolate(..., mode="bilinear", antialias=True)`: output pixel
    `i` has centre `c = scale * (i + 0.5)` with `scale = in / out`; tap `j` gets `max(0, 1 - |(j - c + 0.5) / s|)`
    with support `s = max(scale, 1)`; each row is normalised. Without antialiasing it is the plain bilinear kernel
    (source index clamped at 0, the last pixel repeated at the far edge). `out_size` may be symbolic: every quantity
    is a tensor, so an exported graph keeps it dynamic.
    """
    positions = torch.arange(out_size, dtype=torch.float32)
    # The output size as a float32 tensor computed in the graph (a Python division by a symbolic size would leave the
    # graph); `full / count` is a true division, as the kernel's `float(in) / out` (`in / tensor` would multiply by a
    # reciprocal and round differently).
    count = torch.ones_like(positions).sum()
    scale = torch.full_like(count, float(in_size)) / count
    taps = torch.arange(in_size, dtype=torch.float32)
    centre = scale * (positions + 0.5)
    if antialias:
        support = scale.clamp(min=1.0)
        inverse = torch.ones_like(support) / support
        distance = (taps[None, :] - centre[:, None] + 0.5) * inverse
    else:
        source = (centre - 0.5).clamp(min=0.0)
        distance = taps[None, :] - source[:, None]
    weights = (1.0 - distance.abs()).clamp(min=0.0)
    return weights / weights.sum(dim=1, keepdim=True)


def _graph_position_embeddings(
    embeddings: nn.Module, grid_h: int | torch.SymInt, grid_w: int | torch.SymInt, interpolate: bool = True
) -> torch.Tensor:
    """Drop-in for `TipsVisionEmbeddings.patch_position_embeddings` that always resizes, with matrix products:
    (1, grid_h * grid_w, D)."""
    patch_pos = embeddings.position_embeddings[:, 1:]
    size, dim = embeddings.grid_size, patch_pos.shape[-1]
    antialias = bool(embeddings.config.interpolate_antialias)
    grid = patch_pos.float().reshape(size, size, dim)  # (rows, columns, D)
    rows = torch.matmul(resize_weights(size, grid_w, antialias), grid)  # columns first: (rows, grid_w, D)
    resized = torch.matmul(resize_weights(size, grid_h, antialias), rows.reshape(size, -1))  # (grid_h, grid_w * D)
    return resized.reshape(1, grid_h * grid_w, dim).to(patch_pos.dtype)


@contextlib.contextmanager
def graph_position_resize(vision_model: nn.Module) -> Iterator[None]:
    """Within the block, `vision_model` resizes its position grid with [`resize_weights`] at every size (an
    instance attribute shadows the method; the class and other instances are untouched)."""
    embeddings = vision_model.embeddings
    embeddings.patch_position_embeddings = types.MethodType(_graph_position_embeddings, embeddings)
    try:
        yield
    finally:
        del embeddings.patch_position_embeddings


class ExportableVision(nn.Module):
    """`pixel_values` (B, 3, H, W) → (`last_hidden_state` (B, 1 + R + h*w, D) = [CLS-1, CLS-2, (registers,)
    patches], `alt_text_embeds` (B, D), `synthetic_embeds` (B, D)) of a [`TipsVisionModel`], un-normalised."""

    def __init__(self, vision_model: nn.Module):
        super().__init__()
        self.vision_model = vision_model

    def forward(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        with graph_position_resize(self.vision_model):
            output = self.vision_model(pixel_values=pixel_values, return_dict=True)
        return output.last_hidden_state, output.alt_text_embeds, output.synthetic_embeds


class ExportableText(nn.Module):
    """(`input_ids` (B, L), `attention_mask` (B, L)) → `text_embeds` (B, D): the un-normalised text embedding of a
    [`TipsTextModel`] (masked mean of the final-LayerNorm tokens; an all-padding row gives zeros)."""

    def __init__(self, text_model: nn.Module):
        super().__init__()
        self.text_model = text_model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.text_model(input_ids=input_ids, attention_mask=attention_mask, return_dict=True).pooler_output


class ExportableDense(nn.Module):
    """`pixel_values` (B, 3, H, W) → the task output of a DPT model (`TipsForSemanticSegmentation`: `logits`
    (B, classes, H', W'); `TipsForDepthEstimation`: `predicted_depth` (B, H', W'); `TipsForNormalEstimation`:
    `predicted_normals` (B, 3, H', W')) with (H', W') = (16⌈h/2⌉, 16⌈w/2⌉) for an (h, w) patch grid."""

    def __init__(self, dense_model: nn.Module):
        super().__init__()
        self.dense_model = dense_model

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        with graph_position_resize(self.dense_model.vision_model):
            output = self.dense_model(pixel_values=pixel_values, return_dict=True)
        return output[DENSE_OUTPUTS[type(self.dense_model).__name__]]


def dense_example_and_shapes(config, max_side: int = 4096) -> tuple[tuple[torch.Tensor], dict]:
    """Like [`vision_example_and_shapes`] with height and width multiples of twice the patch size: the DPT decoder
    resizes a skip connection only when the patch grid is odd (a Python branch on the size), so the graph is traced
    for even grids of at least 4 patches a side, which include the released 448 px (32 × 32)."""
    from torch.export import Dim

    patch = config.patch_size
    half = max(2, config.position_grid_size // 2)
    example = torch.rand(2, config.num_channels, 2 * patch * (half + 1), 2 * patch * (half + 2))
    # At least 2 × 2 patches per half-grid side: the traced decoder specialises a side of one pair away.
    half_h = Dim("half_grid_h", min=2, max=max_side // (2 * patch))
    half_w = Dim("half_grid_w", min=2, max=max_side // (2 * patch))
    shapes = {"pixel_values": {0: Dim("batch", min=1, max=65536), 2: 2 * patch * half_h, 3: 2 * patch * half_w}}
    return (example,), shapes


def vision_example_and_shapes(config, max_side: int = 4096) -> tuple[tuple[torch.Tensor], dict]:
    """An example input (2 images, non-square, off the learned grid so nothing is specialised to it) and the dynamic
    shapes: batch, and height/width as multiples of the patch size."""
    from torch.export import Dim

    patch = config.patch_size
    grid = max(2, config.position_grid_size)
    example = torch.rand(2, config.num_channels, patch * (grid + 1), patch * (grid + 3))
    grid_h = Dim("grid_h", min=1, max=max_side // patch)
    grid_w = Dim("grid_w", min=1, max=max_side // patch)
    shapes = {"pixel_values": {0: Dim("batch", min=1, max=65536), 2: patch * grid_h, 3: patch * grid_w}}
    return (example,), shapes


def text_example_and_shapes(config) -> tuple[tuple[torch.Tensor, torch.Tensor], dict]:
    """An example (3 texts of length min(10, max), one with padding) and dynamic batch and length (≤ the text tower's
    `max_position_embeddings`)."""
    from torch.export import Dim

    length = min(10, config.max_position_embeddings)
    input_ids = torch.randint(1, config.vocab_size, (3, length))
    attention_mask = torch.ones(3, length, dtype=torch.long)
    attention_mask[1, length // 2 + 1 :] = 0
    input_ids[1, length // 2 + 1 :] = 0
    batch = Dim("batch", min=1, max=65536)
    seq = Dim("length", min=1, max=config.max_position_embeddings)
    shapes = {"input_ids": {0: batch, 1: seq}, "attention_mask": {0: batch, 1: seq}}
    return (input_ids, attention_mask), shapes


__all__ = [
    "DENSE_OUTPUTS",
    "TEXT_INPUTS",
    "TEXT_OUTPUTS",
    "VISION_INPUTS",
    "VISION_OUTPUTS",
    "ExportableDense",
    "ExportableText",
    "ExportableVision",
    "dense_example_and_shapes",
    "graph_position_resize",
    "resize_weights",
    "text_example_and_shapes",
    "vision_example_and_shapes",
]
