# Copyright 2026 The tips-hf authors. Licensed under the Apache License, Version 2.0.
"""Zero-shot image classification (ImageNet-1k style): top-1 / top-5 accuracy with a prompt ensemble.

Protocol
--------
- Images: squared to the model's input size (448×448 for HR/v2 models) with the model's `TipsImageProcessor`
  (bilinear, antialiased, RGB in [0, 1]), as for retrieval; no crop (`--resize center-crop`: CLIP-style short
  side to size / 0.875 and a central crop).
- Classifier: each class name is written into every template of the ensemble; the label embedding is the mean of
  the L2-normalised text embeddings, renormalised (`tips_hf.dense.encode_labels`). Logits are cosine similarities
  with the L2-normalised CLS embedding of each head (alt-text CLS-1, synthetic CLS-2); the head's temperature does
  not change the ranking and is left out.
- Ensemble (our choice, `--templates clip80`, the default): CLIP's 80 ImageNet templates. Neither TIPS repository
  publishes its classification prompts and the papers' text available to us does not name them, so this is the
  standard CLIP protocol rather than a verified copy of Google's; `--templates tcl|tips-hf|none|FILE` switch it.
  ImageNet accuracy is not in the official README table.
- Class names: the folder names (ImageNet's WordNet ids such as `n01440364` need `--class-names FILE`, e.g. CLIP's
  cleaned 1,000 names, one per line in sorted-folder order, or a JSON list / {folder: name} map), or the `label`
  column's `ClassLabel` names of a `datasets` dataset.
- Metric: `tips_hf.metrics.topk_accuracy` (ties count against the true class), k = 1 and 5.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from ..dense.zero_shot import encode_labels
from ..metrics import topk_accuracy
from .common import (
    HEADS,
    EvalError,
    EvalOptions,
    batches,
    image_embeddings,
    is_file_layout,
    labelled_images,
    model_image_size,
    percent,
    resize_description,
)
from .templates import resolve_templates

_WNID = re.compile(r"^n\d{8}$")


def read_class_names(path: str | Path, folders: list[str] | None = None) -> list[str]:
    """Class names for `folders` (the class folders or `ClassLabel` names; `None` when unknown) from a text file (one
    name per line, in sorted-folder order), a JSON list, or a JSON {folder: name} map."""
    path = Path(path)
    if not path.is_file():
        raise EvalError(f"--class-names: file not found: {path}")
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() == ".json":
        try:
            content = json.loads(text)
        except json.JSONDecodeError as error:
            raise EvalError(f"{path}: invalid JSON: {error}") from None
        if isinstance(content, dict):
            if folders is None:
                raise EvalError(f"{path}: a {{folder: name}} map needs class folders or ClassLabel names to map")
            missing = [folder for folder in folders if folder not in content]
            if missing:
                raise EvalError(f"{path}: no name for class folder(s) {', '.join(missing[:5])}")
            return [str(content[folder]) for folder in folders]
        names = [str(name) for name in content] if isinstance(content, list) else None
        if names is None:
            raise EvalError(f"{path}: expected a JSON list of names or a {{folder: name}} object")
    else:
        names = [line.strip() for line in text.splitlines() if line.strip()]
    if folders is not None and len(names) != len(folders):
        raise EvalError(f"{path}: {len(names)} class names for {len(folders)} classes")
    return names


def _load_data(data: Any, options: EvalOptions, processor: Any, size: int):
    resize = options.extra.get("resize") or "square"
    class_names_file = options.extra.get("class_names")
    local = is_file_layout(data)
    split = options.split or ("val" if local else "validation")
    records, load, found, label_column = labelled_images(data, split, options, processor, size, resize)
    if class_names_file:
        return records, load, read_class_names(class_names_file, found or None), label_column
    if local and any(_WNID.match(folder) for folder in found):
        raise EvalError(
            f"{data}: class folders are WordNet ids (e.g. {found[0]}); pass --class-names FILE with a readable "
            "name per class"
        )
    if local:
        return records, load, [folder.replace("_", " ") for folder in found], label_column
    if not found:
        raise EvalError(f"column {label_column!r} is not a ClassLabel with names; pass --class-names FILE")
    return records, load, found, label_column


@torch.no_grad()
def evaluate_zero_shot_classification(model: Any, processor: Any, data: Any, options: EvalOptions) -> dict[str, Any]:
    """Run the protocol above; returns the result dict."""
    start = time.perf_counter()
    size = model_image_size(model, processor, options.image_size)
    template_name, templates = resolve_templates(options.extra.get("templates"), "clip80")
    records, load, names, label_column = _load_data(data, options, processor, size)
    label_embeds = encode_labels(model, processor, names, templates=templates, batch_size=max(64, options.batch_size))
    logits: dict[str, list[torch.Tensor]] = {head: [] for head in HEADS}
    labels = []
    for batch in batches(records, load, options, desc="zero-shot classification"):
        for head, value in image_embeddings(model, batch["pixel_values"]).items():
            logits[head].append((F.normalize(value, dim=-1) @ label_embeds.to(value).T).cpu())
        labels.append(torch.as_tensor(batch["label"]).reshape(-1))
        if int(labels[-1].max()) >= len(names):  # a dataset label beyond the class names (folders cannot be)
            raise EvalError(f"column {label_column!r}: label {int(labels[-1].max())} outside [0, {len(names)})")
    if not labels:
        raise EvalError(f"{data}: no example to evaluate")
    target = torch.cat(labels)
    metrics = {}
    for head in HEADS:
        for key, value in topk_accuracy(torch.cat(logits[head]), target, ks=(1, 5)).items():
            metrics[f"{head}/{key}"] = value
    return {
        "task": "zero-shot-classification",
        "split": options.split,
        "num_examples": int(target.numel()),
        "num_classes": len(names),
        "metrics": metrics,
        "protocol": {
            "image_size": [size, size],
            "resize": resize_description(options.extra.get("resize") or "square", size),
            "templates": template_name,
            "num_templates": len(templates),
            "label_embedding": "mean of L2-normalised prompt embeddings, renormalised",
            "score": "cosine similarity with the L2-normalised CLS embedding, per head",
        },
        "table": {
            "columns": ["head", "top-1", "top-5"],
            "rows": [
                [head, percent(metrics[f"{head}/top1_accuracy"]), percent(metrics[f"{head}/top5_accuracy"])]
                for head in HEADS
            ],
        },
        "runtime_s": time.perf_counter() - start,
    }


__all__ = ["evaluate_zero_shot_classification", "read_class_names"]
