# Copyright 2026 The tips-hf authors. Licensed under the Apache License, Version 2.0.
"""`evaluate` module: mean IoU of semantic segmentation maps (maths in `tips_hf.metrics.mean_iou`)."""

import evaluate

from tips_hf.metrics import mean_iou
from tips_hf.metrics.info import example_features, metric_info

_DESCRIPTION = """
Intersection over union of semantic segmentation maps, accumulated over all pixels of all images. The IoU of a
class is TP / (TP + FP + FN); the mean IoU averages it over the classes present in the prediction or the reference
(other classes are NaN in `per_category_iou`). Pixels whose reference equals `ignore_index` are not scored.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `(H, W)` integer maps, or an `(N, H, W)` array): predicted class ids.
    references (same layout and sizes): ground-truth class ids.
    num_classes (`int`): number of classes C; every scored id must lie in [0, C).
    ignore_index (`int`, *optional*): reference value to skip (e.g. 255).

Returns:
    mean_iou (`float`), per_category_iou (`list[float]`, length C, NaN for absent classes), pixel_accuracy (`float`),
    mean_accuracy (`float`), per_category_accuracy (`list[float]`).

Examples:
    >>> metric = tips_hf.metrics.load_metric("mean_iou")
    >>> metric.compute(predictions=[[[0, 1], [1, 1]]], references=[[[0, 1], [0, 1]]], num_classes=2)["mean_iou"]
    0.5833333333333333
"""


class MeanIou(evaluate.Metric):
    def _info(self):
        maps = ("int64", 2)  # one (H, W) map of class ids per example
        return metric_info(_DESCRIPTION, _KWARGS_DESCRIPTION, example_features(maps, maps))

    def _compute(self, predictions, references, num_classes=None, ignore_index=None):
        if num_classes is None:
            raise ValueError("mean_iou needs num_classes=C.")
        return mean_iou(predictions, references, num_classes=int(num_classes), ignore_index=ignore_index)
