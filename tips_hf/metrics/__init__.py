# Copyright 2026 The tips-hf authors. Licensed under the Apache License, Version 2.0.
"""Metrics for TIPS evaluations, as plain functions and as `evaluate` modules shipped with the package.

This module only registers them; the maths lives in one module per kind (arrays in, floats out):

- [`segmentation`]: `segmentation_confusion_matrix`, `iou_from_confusion`, `mean_iou` (numpy).
- [`classification`]: `topk_accuracy` (numpy).
- [`depth`]: `depth_errors` (RMSE, abs. rel.; `depth_error_sums` / `depth_errors_from_sums` batch by batch), `depth_order_accuracy` (numpy).
- [`retrieval`]: `retrieval_recall`, `retrieval_recall_from_similarity` (torch, chunked for large galleries).

The `evaluate` module scripts in `tips_hf/metrics/<name>/<name>.py` are thin wrappers that call these functions
(their shared `MetricInfo` set-up is in [`info`]), and the library tools (probes, k-NN, zero-shot, retrieval) call
them directly: there is one implementation of each metric.

Going through `evaluate` costs about a microsecond per value (its inputs are written to Arrow and read back as
Python lists), which is fine for logits and small maps but slow for full-resolution segmentation or depth maps;
the functions take arrays directly.

Modules (load with [`load_metric`]):

- `mean_iou`: per-class IoU, mean IoU over classes present in prediction or reference, pixel accuracy.
- `retrieval_recall`: image→text and text→image Recall@K.
- `zero_shot_accuracy`: top-1 / top-5 accuracy from logits.
- `depth_rmse`: RMSE and absolute relative error with an optional valid mask.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from .classification import topk_accuracy
from .depth import depth_error_sums, depth_errors, depth_errors_from_sums, depth_order_accuracy
from .retrieval import retrieval_recall, retrieval_recall_from_similarity
from .segmentation import iou_from_confusion, mean_iou, segmentation_confusion_matrix

if TYPE_CHECKING:  # evaluate is a train extra: imported lazily
    import evaluate

METRICS_DIR = Path(__file__).resolve().parent
METRIC_NAMES = ("depth_rmse", "mean_iou", "retrieval_recall", "zero_shot_accuracy")


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
    "depth_error_sums",
    "depth_errors",
    "depth_errors_from_sums",
    "depth_order_accuracy",
    "iou_from_confusion",
    "load_metric",
    "mean_iou",
    "metric_path",
    "retrieval_recall",
    "retrieval_recall_from_similarity",
    "segmentation_confusion_matrix",
    "topk_accuracy",
]
