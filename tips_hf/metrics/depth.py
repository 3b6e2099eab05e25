# Copyright 2026 The tips-hf authors. Licensed under the Apache License, Version 2.0.
"""Depth scores: RMSE and absolute relative error, and ordinal (pairwise) depth accuracy (numpy only)."""

from __future__ import annotations

from typing import Any

import numpy as np

from ._arrays import as_list_of_arrays


def depth_error_sums(predictions: Any, references: Any, valid_mask: Any | None = None) -> np.ndarray:
    """The sums that [`depth_errors`] pools, so that a caller can add them up batch by batch (e.g. a distributed
    evaluation that keeps no predictions) and score the total with [`depth_errors_from_sums`].

    Args: as [`depth_errors`].

    Returns:
        `np.ndarray` of shape `(4,)` (float64): sum of squared errors and number of valid pixels; sum of absolute
        relative errors and number of valid pixels with a positive reference.
    """
    preds, refs = as_list_of_arrays(predictions), as_list_of_arrays(references)
    masks = as_list_of_arrays(valid_mask) if valid_mask is not None else [None] * len(refs)
    if not len(preds) == len(refs) == len(masks):
        raise ValueError(f"Got {len(preds)} predicted maps, {len(refs)} references and {len(masks)} valid masks.")
    sums = np.zeros(4, dtype=np.float64)
    for index, (pred, ref, mask) in enumerate(zip(preds, refs, masks)):
        pred, ref = pred.astype(np.float64), ref.astype(np.float64)
        if pred.shape != ref.shape or (mask is not None and mask.shape != ref.shape):
            raise ValueError(
                f"Map {index}: shapes differ (prediction {pred.shape}, reference {ref.shape}"
                + (f", valid_mask {mask.shape})." if mask is not None else ").")
            )
        valid = np.isfinite(ref) if mask is None else np.isfinite(ref) & mask.astype(bool)
        diff = pred[valid] - ref[valid]
        positive = ref[valid] > 0
        sums += (float(np.sum(diff**2)), diff.size, float(np.sum(np.abs(diff[positive]) / ref[valid][positive])),
                 int(positive.sum()))
    return sums


def depth_errors_from_sums(sums: Any) -> dict[str, float]:
    """[`depth_errors`]' scores from the (possibly accumulated) output of [`depth_error_sums`]."""
    squared, count, absolute_relative, count_positive = (float(value) for value in np.asarray(sums))
    return {
        "rmse": float(np.sqrt(squared / count)) if count else float("nan"),
        "abs_rel": absolute_relative / count_positive if count_positive else float("nan"),
        "num_pixels": int(count),
    }


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
    return depth_errors_from_sums(depth_error_sums(predictions, references, valid_mask))


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


__all__ = ["depth_error_sums", "depth_errors", "depth_errors_from_sums", "depth_order_accuracy"]
