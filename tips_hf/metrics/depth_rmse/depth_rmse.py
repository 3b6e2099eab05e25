# Copyright 2026 The tips-hf authors. Licensed under the Apache License, Version 2.0.
"""`evaluate` module: depth RMSE and absolute relative error (maths in `tips_hf.metrics.depth_errors`)."""

import evaluate

from tips_hf.metrics import depth_errors
from tips_hf.metrics.info import example_features, metric_info

_DESCRIPTION = """
Depth errors pooled over the valid pixels of all images: RMSE = sqrt(mean((pred - ref)^2)) and
abs_rel = mean(|pred - ref| / ref) (over valid pixels with a positive reference). A pixel is valid when its reference
is finite (NaN marks missing depth, which also works with `add_batch`) and, when given, `valid_mask` is true.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `(H, W)` float maps, or an `(N, H, W)` array): predicted depth.
    references (same layout and sizes): ground-truth depth; NaN = missing.
    valid_mask (same layout, booleans, *optional*): pixels to score. A compute-time argument: it must cover every
        example added so far (with `add_batch`, prefer NaN references).

Returns:
    rmse (`float`), abs_rel (`float`), num_pixels (`int`).

Examples:
    >>> metric = tips_hf.metrics.load_metric("depth_rmse")
    >>> metric.compute(predictions=[[[1.0, 2.0]]], references=[[[2.0, 2.0]]])
    {'rmse': 0.7071067811865476, 'abs_rel': 0.25, 'num_pixels': 2}
"""


class DepthRMSE(evaluate.Metric):
    def _info(self):
        maps = ("float32", 2)  # one (H, W) map per example
        return metric_info(_DESCRIPTION, _KWARGS_DESCRIPTION, example_features(maps, maps))

    def _compute(self, predictions, references, valid_mask=None):
        return depth_errors(predictions, references, valid_mask=valid_mask)
