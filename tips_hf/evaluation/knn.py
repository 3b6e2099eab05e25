# Copyright 2026 The tips-hf authors. Licensed under the Apache License, Version 2.0.
"""k-NN classification of frozen CLS embeddings (the README table's "ImageNet-KNN").

Protocol
--------
- DINO's weighted k-NN (Caron et al. 2021, `eval_knn.py`): the training split's embeddings are the memory bank;
  each test embedding takes its k = 20 most cosine-similar training embeddings, each votes for its class with
  weight exp(cosine / T), T = 0.07, and the class with the largest total wins. Top-1 accuracy.
  Implemented by `tips_hf.dense.knn_classify`; `--knn-k` / `--knn-temperature` change k and T.
- Embeddings: the L2-normalised CLS tokens after the final LayerNorm, each head separately (alt-text CLS-1 and
  synthetic CLS-2); the README does not say which head its number uses.
- Images: DINO resizes the short side to 256 (bicubic) and centre-crops 224. We keep that 0.875 crop ratio at the
  model's resolution: short side to size / 0.875 (512 for 448), centre crop size × size, RGB in [0, 1], no mean/std
  (our choice: the TIPS evaluation resolution of this benchmark is not published; `--image-size 224` gives DINO's
  exact 256/224 geometry; `--resize square` squashes the whole image instead).
- Data: ImageNet-style class folders `<data>/train/<class>/*` (memory bank, `--train-split`) and
  `<data>/val/<class>/*` (queries, `--split`), or a `datasets` dataset with `image` and `label` columns
  (`imagenet-1k`: splits `train` / `validation`). `--limit N` takes N evenly spaced images of each split.
"""

from __future__ import annotations

import time
from typing import Any

import torch
import torch.nn.functional as F

from ..dense.knn import knn_classify
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


def _split_records(data: Any, split: str, options: EvalOptions, processor: Any, size: int, classes=None):
    resize = options.extra.get("resize") or "center-crop"
    records, load, names, label_column = labelled_images(
        data, split, options, processor, size, resize, classes, strict_split=True
    )
    return records, load, (names if label_column is None else None)


def _embed(model: Any, records: Any, load: Any, options: EvalOptions, desc: str):
    embeds: dict[str, list[torch.Tensor]] = {head: [] for head in HEADS}
    labels = []
    for batch in batches(records, load, options, desc=desc):
        for head, value in image_embeddings(model, batch["pixel_values"]).items():
            # float16 halves the memory bank (1.28M × D for ImageNet); cosines are recomputed in float32.
            embeds[head].append(F.normalize(value, dim=-1).half().cpu())
        labels.append(torch.as_tensor(batch["label"]).reshape(-1))
    if not labels:
        raise EvalError(f"{desc}: no image to embed")
    return {head: torch.cat(chunks) for head, chunks in embeds.items()}, torch.cat(labels)


@torch.no_grad()
def evaluate_knn(model: Any, processor: Any, data: Any, options: EvalOptions) -> dict[str, Any]:
    """Run the protocol above; returns the result dict."""
    start = time.perf_counter()
    size = model_image_size(model, processor, options.image_size)
    k = int(options.extra.get("knn_k") or 20)
    temperature = float(options.extra.get("knn_temperature") or 0.07)
    local = is_file_layout(data)
    train_split = options.train_split or "train"
    split = options.split or ("val" if local else "validation")
    train_records, train_load, classes = _split_records(data, train_split, options.for_training(), processor, size)
    test_records, test_load, _ = _split_records(data, split, options, processor, size, classes)
    train, train_labels = _embed(model, train_records, train_load, options, "knn: memory bank")
    test, test_labels = _embed(model, test_records, test_load, options, "knn: queries")
    num_classes = int(max(train_labels.max(), test_labels.max())) + 1
    device = next(model.parameters()).device
    metrics = {}
    for head in HEADS:
        result = knn_classify(
            train[head].to(device), train_labels, test[head].to(device), test_labels, k=k, temperature=temperature,
            num_classes=num_classes,
        )  # fmt: skip
        metrics[f"{head}/top1_accuracy"] = result["accuracy"]
    return {
        "task": "knn",
        "split": split,
        "train_split": train_split,
        "num_examples": int(test_labels.numel()),
        "num_train": int(train_labels.numel()),
        "metrics": metrics,
        "protocol": {
            "k": k,
            "temperature": temperature,
            "vote": "sum of exp(cosine / T) over the k nearest training embeddings (DINO)",
            "image_size": [size, size],
            "resize": resize_description(options.extra.get("resize") or "center-crop", size),
            "embedding": "L2-normalised CLS token, per head",
        },
        "table": {
            "columns": ["head", f"k-NN top-1 (k={k}, T={temperature})"],
            "rows": [[head, percent(metrics[f"{head}/top1_accuracy"])] for head in HEADS],
        },
        "runtime_s": time.perf_counter() - start,
    }


__all__ = ["evaluate_knn"]
