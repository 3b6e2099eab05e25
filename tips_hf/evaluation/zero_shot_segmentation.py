# Copyright 2026 The tips-hf authors. Licensed under the Apache License, Version 2.0.
"""Zero-shot semantic segmentation on ADE20K-150 (the README table's "ADE150-ZS").

Protocol (the official `pytorch/TIPS_zeroshot_segmentation.ipynb`, see SPEC §5)
------------------------------------------------------------------------------
- Labels: the notebook's 150 ADE20K class names (`templates.ADE20K_CLASS_NAMES`), each embedded through the 9 TCL
  templates (`templates.TCL_TEMPLATES`): mean of the L2-normalised text embeddings, renormalised.
- Images: short side resized to 448 (PIL bicubic), RGB in [0, 1], no mean/std, no crop.
- Patch features: the MaskCLIP "values trick" (the last block's attention replaced by its value path, then its MLP
  and the final LayerNorm), L2-normalised; cosine with the label embeddings.
- Sliding windows of 448 px every 336 px; each window's cosines are upsampled bilinearly to the window, softmaxed over
  the 150 labels and averaged where windows overlap (`mode="slide"`; `--mode whole` scores the whole image at once).
- The scores are upsampled bilinearly (align_corners=False) to the annotation's size, argmax; ADE20K label 0
  ("other") is ignored, label k is class k - 1.
- Metric: mIoU from the confusion matrix accumulated over the whole split, mean over the classes present in
  prediction or ground truth (`tips_hf.metrics.iou_from_confusion`, as the notebook's `compute_miou`).

The per-image computation is `tips_hf.dense.zero_shot_segment(model, pixel_values, label_embeds, method="values",
mode="slide", window=448, stride=336)` (`--seg-features patches` uses the final patch tokens instead, an ablation).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..dense.zero_shot import encode_labels, zero_shot_segment
from ..metrics import iou_from_confusion, segmentation_confusion_matrix
from .common import (
    EvalOptions,
    batches,
    is_file_layout,
    model_input,
    open_image,
    pixels_short_side,
    segmentation_result,
)
from .dense_data import SEGMENTATION_COLUMNS, ade20k_records, hf_records, segmentation_target, unpack
from .templates import ADE20K_CLASS_NAMES, resolve_templates
from .zero_shot_classification import read_class_names

SHORT_SIDE, WINDOW, STRIDE = 448, 448, 336


@torch.no_grad()
def segment_scores(
    model: Any,
    pixel_values: torch.Tensor,
    label_embeds: torch.Tensor,
    mode: str,
    window: int,
    stride: int,
    features: str = "values",
) -> torch.Tensor:
    """(B, K, H', W') scores of `tips_hf.dense.zero_shot_segment` for (B, 3, H, W) images (any H, W): window-averaged
    probabilities at (H, W) in `"slide"` mode, patch-grid cosines in `"whole"` mode."""
    out = zero_shot_segment(
        model, model_input(model, pixel_values), label_embeds, method=features, mode=mode, window=window, stride=stride
    )
    return out["scores"]


@torch.no_grad()
def evaluate_zero_shot_segmentation(model: Any, processor: Any, data: Any, options: EvalOptions) -> dict[str, Any]:
    """Run the protocol above; returns the result dict."""
    start = time.perf_counter()
    split = options.split or "validation"
    mode = options.extra.get("mode") or "slide"
    short = options.image_size or SHORT_SIDE
    window = int(options.extra.get("window") or short)
    stride = int(options.extra.get("stride") or round(window * STRIDE / WINDOW))
    names_file = options.extra.get("class_names")
    class_names = read_class_names(names_file) if names_file else list(ADE20K_CLASS_NAMES)
    num_classes = len(class_names)
    template_name, templates = resolve_templates(options.extra.get("templates"), "tcl")
    features = options.extra.get("seg_features") or "values"
    reduce_zero_label = options.extra.get("reduce_zero_label", True)
    if is_file_layout(data):
        records = ade20k_records(Path(data), split, options.limit)
    else:
        records = hf_records(data, split, options, SEGMENTATION_COLUMNS, "annotation")

    def load(record) -> dict[str, Any]:
        image, target, name = unpack(record)
        return {
            "pixel_values": pixels_short_side(open_image(image, name), short, processor),
            "target": torch.from_numpy(segmentation_target(target, name, reduce_zero_label, num_classes)),
        }

    label_embeds = encode_labels(model, processor, class_names, templates=templates, batch_size=256)
    confusion = np.zeros((num_classes, num_classes), dtype=np.int64)
    count = 0
    # One image per forward: sizes differ and the sliding window runs per image anyway.
    for batch in batches(records, load, options, desc="zero-shot segmentation", batch_size=1):
        pixels, target = batch["pixel_values"], batch["target"][0]
        scores = segment_scores(model, pixels, label_embeds, mode, window, stride, features)
        scores = F.interpolate(scores.float(), size=tuple(target.shape), mode="bilinear", align_corners=False)
        prediction = scores.argmax(dim=1)[0].cpu()
        confusion += segmentation_confusion_matrix(prediction, target, num_classes, ignore_index=255)
        count += 1
    scores_dict = iou_from_confusion(confusion)
    protocol = {
        "class_names": str(names_file) if names_file else "ADE20K-150 (official notebook)",
        "templates": template_name,
        "num_templates": len(templates),
        "resize": f"short side to {short} (bicubic), RGB in [0, 1]",
        "features": (
            "values trick (last block's attention -> value path), L2-normalised"
            if features == "values"
            else "final patch tokens, L2-normalised"
        ),
        "mode": mode,
        "window": window,
        "stride": stride,
        "ignore_index": 255,
    }
    return segmentation_result(
        "zero-shot-segmentation", scores_dict, split, count, start, protocol, class_names=class_names
    )


__all__ = ["evaluate_zero_shot_segmentation", "segment_scores"]
