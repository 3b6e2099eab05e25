# Copyright 2026 The tips-hf authors. Licensed under the Apache License, Version 2.0.
"""Weighted k-nearest-neighbour classification of frozen embeddings (the DINO evaluation protocol), and its dense
form: patch-level k-NN segmentation against a memory bank of labelled training patches."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from .probe import _check_features, _check_maps, _training_patches, patch_targets, score_segmentation, upsampled_blocks


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
        # votes in float32 also when called under autocast (a bf16 evaluation): bf16 similarities tie neighbours
        with torch.autocast(train.device.type, enabled=False):
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


@torch.no_grad()
def knn_segmentation(
    train_feats: torch.Tensor,
    train_masks: torch.Tensor,
    test_feats: torch.Tensor,
    test_masks: torch.Tensor,
    num_classes: int,
    k: int = 10,
    temperature: float = 0.07,
    ignore_index: int | None = None,
    max_train_patches: int | None = None,
    seed: int = 0,
    return_predictions: bool = False,
) -> dict[str, Any]:
    """Segment test images by a k-NN vote of every test patch among labelled training patches (no training at all:
    it measures how well the patch features cluster by class).

    Args:
        train_feats (`torch.Tensor` of shape `(N, h, w, D)`): memory-bank patch features.
        train_masks (`torch.LongTensor` of shape `(N, H, W)`): their label maps (each patch takes the majority label
            of its pixels, see [`patch_targets`]).
        test_feats (`torch.Tensor` of shape `(M, h', w', D)`): patch features to segment.
        test_masks (`torch.LongTensor` of shape `(M, H', W')`): ground truth at the evaluation resolution.
        num_classes (`int`): number of classes `C`.
        k (`int`, defaults to 10), temperature (`float`, defaults to 0.07): see [`knn_classify`].
        ignore_index (`int`, *optional*): void label, neither in the bank nor scored.
        max_train_patches (`int`, *optional*): a random subset of the bank of this size (drawn with `seed`).
        return_predictions (`bool`): also return the `(M, H', W')` label maps.

    Returns:
        `dict` with the [`tips_hf.metrics.mean_iou`] keys (and `predictions`). Each patch's normalised vote shares are
        upsampled bilinearly to `(H', W')` before the argmax.
    """
    train_feats, test_feats = _check_features("train_feats", train_feats), _check_features("test_feats", test_feats)
    test_masks = torch.as_tensor(test_masks).long()
    _check_maps("test_masks", test_masks, test_feats, "M")
    labels = patch_targets(torch.as_tensor(train_masks), tuple(train_feats.shape[1:3]), num_classes, ignore_index)
    labels = labels.reshape(-1)
    rows, bank = _training_patches(
        train_feats, labels >= 0, max_train_patches, seed, "No training patch has a label (all void?)."
    )
    num, h, w, dim = test_feats.shape
    votes = knn_classify(bank, labels[rows], test_feats.reshape(-1, dim), k=k, temperature=temperature,
                         num_classes=num_classes)["scores"]
    shares = (votes / votes.sum(dim=1, keepdim=True).clamp_min(1e-12)).reshape(num, h, w, num_classes)
    blocks = upsampled_blocks(lambda block: block.permute(0, 3, 1, 2).float().cpu(), shares, tuple(test_masks.shape[1:]))
    return score_segmentation(blocks, test_masks, num_classes, ignore_index, return_predictions)


__all__ = ["knn_classify", "knn_segmentation"]
