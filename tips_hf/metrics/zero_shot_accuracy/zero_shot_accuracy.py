# Copyright 2026 The tips-hf authors. Licensed under the Apache License, Version 2.0.
"""`evaluate` module: top-k accuracy of zero-shot logits (maths in `tips_hf.metrics.topk_accuracy`)."""

import evaluate

from tips_hf.metrics import topk_accuracy
from tips_hf.metrics.info import example_features, metric_info

_DESCRIPTION = """
Top-1 and top-5 accuracy from class logits (e.g. `zero_shot_classify` or `logits_per_image`). A row is correct at k
when fewer than k other classes score at least as high as the true class (ties count against it). A k above the
number of classes counts as the number of classes.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`(N, K)` floats): class logits or probabilities.
    references (`(N,)` ints): true class index of each row.
    ks (`tuple[int]`, defaults to `(1, 5)`): the k values.

Returns:
    `top{k}_accuracy` (`float`) for each k.

Examples:
    >>> metric = tips_hf.metrics.load_metric("zero_shot_accuracy")
    >>> metric.compute(predictions=[[0.1, 0.9, 0.0], [0.8, 0.1, 0.1]], references=[1, 2], ks=(1, 2))
    {'top1_accuracy': 0.5, 'top2_accuracy': 0.5}
"""


class ZeroShotAccuracy(evaluate.Metric):
    def _info(self):
        # one row of K logits and the true class index per example
        return metric_info(_DESCRIPTION, _KWARGS_DESCRIPTION, example_features(("float32", 1), ("int64", 0)))

    def _compute(self, predictions, references, ks=(1, 5)):
        return topk_accuracy(predictions, references, ks=ks)
