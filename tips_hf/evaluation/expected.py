# Copyright 2026 The tips-hf authors. Licensed under the Apache License, Version 2.0.
"""Google's published numbers (official `google-deepmind/tips` README, v1 and v2 tables), keyed by preset.

`tips-eval` prints the matching value under its table when the evaluated model carries a released preset
(`config.preset`, set by `tips-convert --preset`) and the task is one of the README's columns. Percentages, as
published; NYU depth is RMSE in metres. The README does not say which CLS head its retrieval and k-NN numbers use.
"""

from __future__ import annotations

from typing import Any

COLUMNS = ("pascal_seg", "nyu_depth_rmse", "imagenet_knn", "flickr_i2t", "flickr_t2i", "ade150_zero_shot")

README_TABLE: dict[str, dict[str, float]] = {
    name: dict(zip(COLUMNS, values))
    for name, values in {
        "tips-v2-b14": (84.0, 0.374, 79.8, 92.6, 80.0, 17.4),
        "tips-v2-l14": (85.1, 0.339, 82.5, 95.4, 83.3, 24.7),
        "tips-v2-so400m14": (85.2, 0.339, 82.8, 94.8, 84.0, 23.3),
        "tips-v2-g14": (85.1, 0.334, 83.7, 95.1, 85.9, 17.8),
        # v1: no ADE150 zero-shot column (the v1 table's UnED k-NN column is not a tips-eval task)
        "tips-v1-s14-hr": (80.6, 0.425, 75.1, 86.3, 74.7, None),
        "tips-v1-b14-hr": (82.9, 0.379, 80.0, 91.3, 79.4, None),
        "tips-v1-l14-hr": (83.9, 0.372, 82.5, 93.6, 83.5, None),
        "tips-v1-so400m14-hr": (83.7, 0.362, 83.0, 94.2, 83.8, None),
        "tips-v1-g14-hr": (83.1, 0.363, 83.2, 93.8, 83.8, None),
        "tips-v1-g14-lr": (82.0, 0.390, 83.6, 93.4, 82.1, None),
    }.items()
}

# task -> (README column, our metric key(s) it corresponds to, how to read ours)
_TASK_COLUMNS = {
    "retrieval": (("flickr_i2t", "image_to_text_recall@1"), ("flickr_t2i", "text_to_image_recall@1")),
    "knn": (("imagenet_knn", "top1_accuracy"),),
    "zero-shot-segmentation": (("ade150_zero_shot", "mean_iou"),),
    "linear-probe-segmentation": (("pascal_seg", "mean_iou"),),
    "depth": (("nyu_depth_rmse", "rmse"),),
}


def expected_for(preset: str | None, task: str) -> dict[str, Any] | None:
    """`{"preset", "values": {our metric: Google's value}}` for a released preset and a README task, else None.
    Percent columns are returned as fractions, like our metrics."""
    row = README_TABLE.get(preset or "")
    if row is None or task not in _TASK_COLUMNS:
        return None
    values = {}
    for column, metric in _TASK_COLUMNS[task]:
        value = row[column]
        if value is not None:
            values[metric] = value if column == "nyu_depth_rmse" else value / 100.0
    return {"preset": preset, "source": "google-deepmind/tips README", "values": values} if values else None


__all__ = ["COLUMNS", "README_TABLE", "expected_for"]
