# Copyright 2026 The tips-hf authors. Licensed under the Apache License, Version 2.0.
"""Depth scores: RMSE and absolute relative error, and ordinal (pairwise) depth accuracy (numpy only)."""

from __future__ import annotations

from typing import Any

import numpy as np

from ._arrays import as_list_of_arrays


def depth_errors(predictions: Any, references: Any, valid_mask: Any | None = None) -> dict[str, float]:
    """Depth errors pooled over the valid pixels of all images.

    Args:
        predictions: `(N, H, W)` array/tensor, one `(H, W)` map, or a list of `(H_i, W_i)` maps of depths.
        references: ground-truth depths, same layout; NaN or infinite pixels are invalid.
        valid_mask (*optional*): booleans in the same layout; only `True` pixels are scored.

    Returns:
        `dict` with `rmse` = sqrt(mean((pred - ref)^2)) over valid pixels and `abs_rel` = mean(|pred - ref| / ref)
        over the valid pixels whose reference is positive (it is undefined elsewhere), and `num_pixels`.
    """
    preds, refs = as_list_of_arrays(predictions), as_list_of_arrays(references)
    masks = as_list_of_arrays(valid_mask) if valid_mask is not None else [None] * len(refs)
    if not len(preds) == len(refs) == len(masks):
        raise ValueError(f"Got {len(preds)} predicted maps, {len(refs)} references and {len(masks)} valid masks.")
    squared = absolute_relative = 0.0
    count = count_positive = 0
    for index, (pred, ref, mask) in enumerate(zip(preds, refs, masks)):
        pred, ref = pred.astype(np.float64), ref.astype(np.float64)
        if pred.shape != ref.shape or (mask is not None and mask.shape != ref.shape):
            raise ValueError(
                f"Map {index}: shapes differ (prediction {pred.shape}, reference {ref.shape}"
                + (f", valid_mask {mask.shape})." if mask is not None else ").")
            )
        valid = np.isfinite(ref) if mask is None else np.isfinite(ref) & mask.astype(bool)
        diff = pred[valid] - ref[valid]
        squared += float(np.sum(diff**2))
        count += int(diff.size)
        positive = ref[valid] > 0
        absolute_relative += float(np.sum(np.abs(diff[positive]) / ref[valid][positive]))
        count_positive += int(positive.sum())
    return {
        "rmse": float(np.sqrt(squared / count)) if count else float("nan"),
        "abs_rel": absolute_relative / count_positive if count_positive else float("nan"),
        "num_pixels": count,
    }


def depth_order_accuracy(predictions: Any, references: Any, valid_mask: Any | None = None) -> dict[str, float]:
    """Ordinal depth accuracy: over all pairs of valid pixels of the same image whose reference depths differ, the
    fraction that the prediction orders the same way (a predicted tie counts one half). Scale- and shift-free, so it
    asks only "which is in front", which RMSE mixes with calibration.

    Args:
        predictions: `(N, H, W)` array/tensor, one `(H, W)` map, or a list of `(H_i, W_i)` maps of depths.
        references: ground-truth depths (or depth orders), same layout; NaN or infinite pixels are invalid.
        valid_mask (*optional*): booleans in the same layout; only `True` pixels take part (e.g. objects only).

    Returns:
        `dict` with `accuracy` (NaN when no image has two distinct valid depths) and `num_pairs`.
    """
    preds, refs = as_list_of_arrays(predictions), as_list_of_arrays(references)
    masks = as_list_of_arrays(valid_mask) if valid_mask is not None else [None] * len(refs)
    if not len(preds) == len(refs) == len(masks):
        raise ValueError(f"Got {len(preds)} predicted maps, {len(refs)} references and {len(masks)} valid masks.")
    concordant, pairs = 0.0, 0
    for index, (pred, ref, mask) in enumerate(zip(preds, refs, masks)):
        pred, ref = pred.astype(np.float64).reshape(-1), ref.astype(np.float64).reshape(-1)
        if pred.shape != ref.shape or (mask is not None and mask.size != ref.size):
            raise ValueError(f"Map {index}: predictions, references and valid_mask must have the same shape.")
        valid = np.isfinite(ref) & np.isfinite(pred)
        if mask is not None:
            valid &= mask.reshape(-1).astype(bool)
        pred, ref = pred[valid], ref[valid]
        levels = np.unique(ref)
        # Pairs (a, b) with ref_a < ref_b: count pred_a < pred_b by binary search, level by level (O(n log n)).
        for low in levels[:-1]:
            lower = np.sort(pred[ref == low])
            higher = pred[ref > low]
            below = np.searchsorted(lower, higher, side="left")  # pred_a < pred_b
            ties = np.searchsorted(lower, higher, side="right") - below
            concordant += float(below.sum()) + 0.5 * float(ties.sum())
            pairs += lower.size * higher.size
    return {"accuracy": concordant / pairs if pairs else float("nan"), "num_pairs": pairs}


__all__ = ["depth_errors", "depth_order_accuracy"]
