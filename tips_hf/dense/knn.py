# Copyright 2026 The tips-hf authors. Licensed under the Apache License, Version 2.0.
"""Weighted k-nearest-neighbour classification of frozen embeddings (the DINO evaluation protocol)."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F


@torch.no_grad()
def knn_classify(
    train_embeds: torch.Tensor,
    train_labels: torch.Tensor,
    test_embeds: torch.Tensor,
    test_labels: torch.Tensor | None = None,
    k: int = 20,
    temperature: float = 0.07,
    num_classes: int | None = None,
    batch_size: int = 1024,
) -> dict[str, Any]:
    """Classify test embeddings by a temperature-weighted vote of their k most cosine-similar training embeddings.

    Each neighbour votes for its class with weight `exp(cosine / temperature)` (DINO, Caron et al. 2021); the class
    with the largest total wins (ties go to the lowest class index).

    Args:
        train_embeds (`torch.Tensor` of shape `(N, D)`): the memory bank (normalised here).
        train_labels (`torch.LongTensor` of shape `(N,)`): class of each training embedding, in `[0, C)`.
        test_embeds (`torch.Tensor` of shape `(M, D)`): embeddings to classify.
        test_labels (`torch.LongTensor` of shape `(M,)`, *optional*): ground truth, for `accuracy`.
        k (`int`, defaults to 20): neighbours per query (capped at `N`).
        temperature (`float`, defaults to 0.07): vote temperature.
        num_classes (`int`, *optional*): `C`; defaults to `max(train_labels) + 1`.
        batch_size (`int`): queries per similarity block (bounds memory to `batch_size × N`).

    Returns:
        `dict` with `predictions` (`torch.LongTensor` of shape `(M,)`), `scores` (`torch.FloatTensor` of shape
        `(M, C)`, the summed vote weights, each query's scaled by a positive factor) and, when `test_labels` is given,
        `accuracy` (`float`, top-1: the fraction of `predictions` equal to `test_labels`).
    """
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}.")
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}.")
    train = F.normalize(torch.as_tensor(train_embeds).float(), dim=-1)
    test = F.normalize(torch.as_tensor(test_embeds).float().to(train.device), dim=-1)
    labels = torch.as_tensor(train_labels, dtype=torch.long, device=train.device).reshape(-1)
    if train.ndim != 2 or test.ndim != 2 or train.shape[1] != test.shape[1] or labels.shape[0] != train.shape[0]:
        raise ValueError(
            f"Expected train (N, D), train_labels (N,), test (M, D); got {tuple(train.shape)}, {tuple(labels.shape)}, "
            f"{tuple(test.shape)}."
        )
    num_classes = int(labels.max()) + 1 if num_classes is None else num_classes
    if labels.min() < 0 or labels.max() >= num_classes:
        raise ValueError(f"train_labels must lie in [0, {num_classes}).")
    k = min(k, train.shape[0])
    scores = torch.zeros(test.shape[0], num_classes, device=train.device)
    for start in range(0, test.shape[0], batch_size):
        similarity = test[start : start + batch_size] @ train.T
        top_sim, top_index = similarity.topk(k, dim=1)
        # exp(s / T) can overflow for small T; subtracting the row max (1 / T at most) scales a row's votes only.
        weights = ((top_sim - top_sim[:, :1]) / temperature).exp()
        scores[start : start + similarity.shape[0]].scatter_add_(1, labels[top_index], weights)
    predictions = scores.argmax(dim=1)
    result: dict[str, Any] = {"predictions": predictions, "scores": scores}
    if test_labels is not None:
        target = torch.as_tensor(test_labels, dtype=torch.long, device=predictions.device).reshape(-1)
        if target.shape[0] != predictions.shape[0]:
            raise ValueError(f"test_labels has {target.shape[0]} entries for {predictions.shape[0]} test embeddings.")
        result["accuracy"] = (predictions == target).double().mean().item()
    return result


__all__ = ["knn_classify"]
