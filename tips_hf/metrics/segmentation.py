# Copyright 2026 The tips-hf authors. Licensed under the Apache License, Version 2.0.
"""Semantic-segmentation scores: pixel confusion matrix, per-class and mean IoU, pixel accuracy (numpy only)."""

from __future__ import annotations

from typing import Any

import numpy as np

from ._arrays import as_list_of_arrays, to_numpy


def segmentation_confusion_matrix(
    predictions: Any, references: Any, num_classes: int, ignore_index: int | None = None
) -> np.ndarray:
    """Pixel confusion matrix of one or several label maps.

    Args:
        predictions (array-like of any shape): predicted class ids.
        references (array-like of the same shape): ground-truth class ids; pixels equal to `ignore_index` are skipped.
        num_classes (`int`): number of classes `C`; every counted id must lie in `[0, C)`.
        ignore_index (`int`, *optional*): reference value to ignore (e.g. 255).

    Returns:
        `np.ndarray` of shape `(C, C)` (int64): `[reference, prediction]` pixel counts.
    """
    pred = to_numpy(predictions).reshape(-1).astype(np.int64, copy=False)
    ref = to_numpy(references).reshape(-1).astype(np.int64, copy=False)
    if pred.shape != ref.shape:
        raise ValueError(f"predictions and references have different sizes: {pred.size} vs {ref.size} pixels.")
    if ignore_index is not None:
        keep = ref != ignore_index
        pred, ref = pred[keep], ref[keep]
    for name, values in (("references", ref), ("predictions", pred)):
        if values.size and (values.min() < 0 or values.max() >= num_classes):
            raise ValueError(
                f"{name} hold class ids outside [0, {num_classes}) (min {values.min()}, max {values.max()}); "
                "pass ignore_index for void pixels."
            )
    return np.bincount(ref * num_classes + pred, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def iou_from_confusion(confusion: np.ndarray) -> dict[str, Any]:
    """Scores from a `(C, C)` `[reference, prediction]` confusion matrix (see [`mean_iou`] for the keys)."""
    confusion = np.asarray(confusion, dtype=np.float64)
    true_positive = np.diag(confusion)
    in_reference, in_prediction = confusion.sum(axis=1), confusion.sum(axis=0)
    union = in_reference + in_prediction - true_positive
    # A class is scored when it occurs in the prediction or the reference; other classes are NaN, not 0 or 1.
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = np.where(union > 0, true_positive / union, np.nan)
        accuracy = np.where(in_reference > 0, true_positive / in_reference, np.nan)
    total = confusion.sum()
    return {
        "mean_iou": float(np.nanmean(iou)) if np.any(union > 0) else float("nan"),
        "per_category_iou": iou.tolist(),
        "pixel_accuracy": float(true_positive.sum() / total) if total > 0 else float("nan"),
        "mean_accuracy": float(np.nanmean(accuracy)) if np.any(in_reference > 0) else float("nan"),
        "per_category_accuracy": accuracy.tolist(),
    }


def mean_iou(predictions: Any, references: Any, num_classes: int, ignore_index: int | None = None) -> dict[str, Any]:
    """Semantic-segmentation scores accumulated over all pixels of all images.

    Args:
        predictions: `(N, H, W)` array/tensor, one `(H, W)` map, or a list of `(H_i, W_i)` maps of class ids.
        references: the ground truth, same layout and sizes as `predictions`.
        num_classes (`int`): number of classes `C`.
        ignore_index (`int`, *optional*): reference value whose pixels are not scored (e.g. 255).

    Returns:
        `dict` with
        - `mean_iou` (`float`): mean of the per-class IoU over classes present in the prediction or the reference.
        - `per_category_iou` (`list[float]` of length `C`): TP / (TP + FP + FN); NaN for classes present in neither.
        - `pixel_accuracy` (`float`): correct pixels / scored pixels.
        - `mean_accuracy` (`float`), `per_category_accuracy` (`list[float]`): per-class recall (NaN for classes absent
          from the reference) and its mean.
    """
    preds, refs = as_list_of_arrays(predictions), as_list_of_arrays(references)
    if len(preds) != len(refs):
        raise ValueError(f"Got {len(preds)} predicted maps but {len(refs)} reference maps.")
    confusion = np.zeros((num_classes, num_classes), dtype=np.int64)
    for index, (pred, ref) in enumerate(zip(preds, refs)):
        if pred.shape != ref.shape:
            raise ValueError(f"Map {index}: prediction shape {pred.shape} != reference shape {ref.shape}.")
        confusion += segmentation_confusion_matrix(pred, ref, num_classes, ignore_index)
    return iou_from_confusion(confusion)


__all__ = ["iou_from_confusion", "mean_iou", "segmentation_confusion_matrix"]
