# Copyright 2026 The tips-hf authors. Licensed under the Apache License, Version 2.0.
"""`tips-eval`: the benchmarks of the official TIPS README table, with their published protocols.

One module per task, its protocol documented at the top of the module: `retrieval` (Flickr30k / COCO),
`zero_shot_classification` (ImageNet), `knn` (ImageNet, DINO's weighted k-NN), `zero_shot_segmentation` (ADE20K-150,
the official notebook's protocol), `probes` (PASCAL VOC linear probe, NYUv2 depth probe, DPT heads). The metric
maths is in `tips_hf.metrics` and `tips_hf.dense`; `tips_hf.pretraining.evaluation` is the in-loop evaluation on the
embedded scenes.

Library use: `evaluate(task, model, processor, data, EvalOptions(...))` returns the result dict that `tips-eval`
writes as JSON.
"""

from .cli import TASKS, evaluate, main
from .common import EvalError, EvalOptions, load_model, markdown_table, write_results

__all__ = ["TASKS", "EvalError", "EvalOptions", "evaluate", "load_model", "main", "markdown_table", "write_results"]
