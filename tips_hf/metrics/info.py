# Copyright 2026 The tips-hf authors. Licensed under the Apache License, Version 2.0.
"""What the shipped `evaluate` module scripts (`<name>/<name>.py`) share: their `MetricInfo` and input features.

Imported by those scripts only (not by `tips_hf.metrics`), so `evaluate` and `datasets` load when a module does.
"""

from __future__ import annotations

from typing import Any

import datasets
import evaluate


def nested_value(dtype: str, depth: int) -> Any:
    """A `datasets` feature: one `dtype` value (`depth` 0), a list of them (1), a list of lists (2, e.g. a map)."""
    feature: Any = datasets.Value(dtype)
    for _ in range(depth):
        feature = datasets.Sequence(feature)
    return feature


def example_features(predictions: tuple[str, int], references: tuple[str, int]) -> datasets.Features:
    """Features of one example, each side given as `(dtype, depth)` (see [`nested_value`])."""
    return datasets.Features({"predictions": nested_value(*predictions), "references": nested_value(*references)})


def metric_info(description: str, inputs_description: str, features: Any) -> evaluate.MetricInfo:
    """The `MetricInfo` of a shipped module: its texts and its feature set(s); no citation (our own metrics)."""
    return evaluate.MetricInfo(
        description=description, citation="", inputs_description=inputs_description, features=features
    )


__all__ = ["example_features", "metric_info", "nested_value"]
