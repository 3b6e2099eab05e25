# Copyright 2026 The tips-hf authors. Licensed under the Apache License, Version 2.0.
"""Metrics for TIPS evaluations, as plain functions and as `evaluate` modules shipped with the package.

The maths lives here (numpy only) and in [`tips_hf.dense.retrieval`] (retrieval recall); the `evaluate` module
scripts in `tips_hf/metrics/<name>/<name>.py` are thin wrappers that call these functions, and the library tools
(probes, k-NN, zero-shot) call them directly. There is one implementation of each metric.

Going through `evaluate` costs about a microsecond per value (its inputs are written to Arrow and read back as
Python lists), which is fine for logits and small maps but slow for full-resolution segmentation or depth maps;
the functions below take arrays directly.

Modules (load with [`load_metric`]):

- `mean_iou`: per-class IoU, mean IoU over classes present in prediction or reference, pixel accuracy.
- `retrieval_recall`: image→text and text→image Recall@K.
- `zero_shot_accuracy`: top-1 / top-5 accuracy from logits.
- `depth_rmse`: RMSE and absolute relative error with an optional valid mask.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # evaluate is a train extra: imported lazily
    import evaluate

METRICS_DIR = Path(__file__).resolve().parent
METRIC_NAMES = ("depth_rmse", "mean_iou", "retrieval_recall", "zero_shot_accuracy")


def _to_numpy(array: Any) -> np.ndarray:
    if hasattr(array, "detach"):  # torch tensor (any device or dtype)
        array = array.detach().cpu()
        if array.dtype.is_floating_point:
            array = array.float()
        return array.numpy()
    return np.asarray(array)


def _as_list_of_arrays(maps: Any) -> list[np.ndarray]:
    """One array per image: a (N, H, W) array/tensor or a list of (H_i, W_i) maps (sizes may differ)."""
    if not isinstance(maps, np.ndarray) and not hasattr(maps, "detach"):
        # a list, or whatever sequence `evaluate` hands over (a `datasets` Column with evaluate 0.4.0)
        return [_to_numpy(m) for m in maps]
    array = _to_numpy(maps)
    return [array] if array.ndim < 3 else list(array)


# ----------------------------------------------------------------------------------------------------------------------
# Segmentation


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
    pred = _to_numpy(predictions).reshape(-1).astype(np.int64, copy=False)
    ref = _to_numpy(references).reshape(-1).astype(np.int64, copy=False)
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
    preds, refs = _as_list_of_arrays(predictions), _as_list_of_arrays(references)
    if len(preds) != len(refs):
        raise ValueError(f"Got {len(preds)} predicted maps but {len(refs)} reference maps.")
    confusion = np.zeros((num_classes, num_classes), dtype=np.int64)
    for index, (pred, ref) in enumerate(zip(preds, refs)):
        if pred.shape != ref.shape:
            raise ValueError(f"Map {index}: prediction shape {pred.shape} != reference shape {ref.shape}.")
        confusion += segmentation_confusion_matrix(pred, ref, num_classes, ignore_index)
    return iou_from_confusion(confusion)


# ----------------------------------------------------------------------------------------------------------------------
# Classification


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
    logits = _to_numpy(logits).astype(np.float64, copy=False)
    labels = _to_numpy(labels).astype(np.int64).reshape(-1)
    if logits.ndim != 2 or logits.shape[0] != labels.shape[0]:
        raise ValueError(f"logits must be (N, K) with N = len(labels) = {labels.shape[0]}, got {logits.shape}.")
    if labels.size and (labels.min() < 0 or labels.max() >= logits.shape[1]):
        raise ValueError(f"labels must lie in [0, {logits.shape[1]}), got min {labels.min()}, max {labels.max()}.")
    true_scores = logits[np.arange(labels.shape[0]), labels]
    rank = (logits >= true_scores[:, None]).sum(axis=1) - 1  # other classes at least as high
    return {f"top{k}_accuracy": float(np.mean(rank < k)) if labels.size else float("nan") for k in ks}


# ----------------------------------------------------------------------------------------------------------------------
# Depth


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
    preds, refs = _as_list_of_arrays(predictions), _as_list_of_arrays(references)
    masks = _as_list_of_arrays(valid_mask) if valid_mask is not None else [None] * len(refs)
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
    preds, refs = _as_list_of_arrays(predictions), _as_list_of_arrays(references)
    masks = _as_list_of_arrays(valid_mask) if valid_mask is not None else [None] * len(refs)
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


# ----------------------------------------------------------------------------------------------------------------------
# evaluate modules


def metric_path(name: str) -> Path:
    """Directory of the shipped `evaluate` module `name` (it holds `<name>.py`)."""
    if name not in METRIC_NAMES:
        raise ValueError(f"Unknown tips_hf metric {name!r}; available: {', '.join(METRIC_NAMES)}.")
    return METRICS_DIR / name


def load_metric(name: str, **load_kwargs: Any) -> evaluate.EvaluationModule:
    """Load one of the shipped metrics with `evaluate.load(<local directory>)`; nothing is fetched from the Hub, so it
    works with `HF_HUB_OFFLINE=1`.

    `evaluate` imports a local module by copying its script into `$HF_MODULES_CACHE/evaluate_modules/metrics/<name>/
    <content hash>/` (default `~/.cache/huggingface/modules`) and importing it from there. That directory is read from
    the `HF_MODULES_CACHE` environment variable when `evaluate` is first imported: set it before then to put the
    copies elsewhere (e.g. a temporary directory when the home directory is read-only). Use one directory per process:
    the copies are imported as the package `evaluate_modules`, which Python resolves from a single location.

    Args:
        name (`str`): one of `"mean_iou"`, `"retrieval_recall"`, `"zero_shot_accuracy"`, `"depth_rmse"`.
        load_kwargs: passed to `evaluate.load` (`experiment_id`, `num_process`, `process_id`, `cache_dir`, ...).
            `keep_in_memory` defaults to `True` for single-process use (no Arrow files written under
            `~/.cache/huggingface/evaluate`); distributed evaluation (`num_process > 1`) needs `False`.

    Returns:
        [`evaluate.EvaluationModule`]: call `.compute(predictions=..., references=..., **kwargs)`.
    """
    import evaluate

    path = metric_path(name)
    load_kwargs.setdefault("keep_in_memory", load_kwargs.get("num_process", 1) == 1)
    return evaluate.load(str(path), **load_kwargs)


__all__ = [
    "METRIC_NAMES",
    "depth_errors",
    "depth_order_accuracy",
    "iou_from_confusion",
    "load_metric",
    "mean_iou",
    "metric_path",
    "segmentation_confusion_matrix",
    "topk_accuracy",
]
