# Copyright 2026 The tips-hf authors. Licensed under the Apache License, Version 2.0.
"""Classification scores: top-k accuracy from logits (numpy only)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from ._arrays import to_numpy


def topk_accuracy(logits: Any, labels: Any, ks: Iterable[int] = (1, 5)) -> dict[str, float]:
    """Top-k accuracy.

    Args:
        logits (array-like of shape `(N, K)`): class scores.
        labels (array-like of shape `(N,)`): the true class index of each row.
        ks (iterable of `int`): the k values; a k above `K` counts as `K` (every row correct).

    Returns:
        `dict` with `top{k}_accuracy` for each k. Ties count against the true class: a row is correct at k when
        fewer than k other classes score at least as high, so constant logits are not rewarded.
    """
    logits = to_numpy(logits).astype(np.float64, copy=False)
    labels = to_numpy(labels).astype(np.int64).reshape(-1)
    if logits.ndim != 2 or logits.shape[0] != labels.shape[0]:
        raise ValueError(f"logits must be (N, K) with N = len(labels) = {labels.shape[0]}, got {logits.shape}.")
    if labels.size and (labels.min() < 0 or labels.max() >= logits.shape[1]):
        raise ValueError(f"labels must lie in [0, {logits.shape[1]}), got min {labels.min()}, max {labels.max()}.")
    true_scores = logits[np.arange(labels.shape[0]), labels]
    rank = (logits >= true_scores[:, None]).sum(axis=1) - 1  # other classes at least as high
    return {f"top{k}_accuracy": float(np.mean(rank < k)) if labels.size else float("nan") for k in ks}


__all__ = ["topk_accuracy"]
