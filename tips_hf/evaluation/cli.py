# Copyright 2026 The tips-hf authors. Licensed under the Apache License, Version 2.0.
"""`tips-eval`: evaluate a TIPS model with the protocols of the official TIPS README table.

    tips-eval --model DIR --task retrieval --data flickr30k/ [--split test] [--output results.json]

Tasks: retrieval, zero-shot-classification, knn, zero-shot-segmentation, linear-probe-segmentation, depth (each
module of `tips_hf.evaluation` documents its protocol). `--data` is a local folder in the dataset's own layout, a
folder written by `datasets`' `save_to_disk`, or a Hub dataset id. Results are printed as a Markdown table and, with
`--output`, written as JSON (and the table beside it as `.md`). Input errors exit with code 2 and a one-line message.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import fields
from typing import Any

from .._cli import run_main
from .common import EvalError, EvalOptions, load_model, markdown_table, write_results
from .expected import expected_for

PROG = "tips-eval"
# Task-specific flags, passed to the tasks as `EvalOptions.extra[name]` (besides `eigen_crop` and `reduce_zero_label`).
EXTRA_FLAGS = (
    "image_root", "resize", "templates", "class_names", "knn_k", "knn_temperature", "mode", "seg_features", "window",
    "stride", "num_classes", "probe_method", "max_train_patches", "depth_scale", "dpt",
)  # fmt: skip


def _tasks() -> dict[str, Any]:
    from .knn import evaluate_knn
    from .probes import evaluate_depth, evaluate_linear_probe_segmentation
    from .retrieval import evaluate_retrieval
    from .zero_shot_classification import evaluate_zero_shot_classification
    from .zero_shot_segmentation import evaluate_zero_shot_segmentation

    return {
        "retrieval": evaluate_retrieval,
        "zero-shot-classification": evaluate_zero_shot_classification,
        "knn": evaluate_knn,
        "zero-shot-segmentation": evaluate_zero_shot_segmentation,
        "linear-probe-segmentation": evaluate_linear_probe_segmentation,
        "depth": evaluate_depth,
    }


TASKS = (
    "retrieval",
    "zero-shot-classification",
    "knn",
    "zero-shot-segmentation",
    "linear-probe-segmentation",
    "depth",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n")[0])
    add = parser.add_argument
    add("--model", required=True, help="folder (or Hub id) of a saved TipsModel + TipsProcessor")
    add("--task", required=True, choices=TASKS)
    add("--data", required=True, help="dataset folder in its own layout, a save_to_disk folder, or a Hub dataset id")
    add("--split", default=None, help="evaluation split (task default: test / val / validation)")
    add("--train-split", default=None, help="training split of knn and the probes (default train)")
    add("--batch-size", type=int, default=64)
    add("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    add("--dtype", default="float32", choices=("float32", "bfloat16", "float16"), help="model weights dtype")
    add("--limit", type=int, default=None, help="evaluate N examples of each split (evenly spaced) for a quick check")
    add("--train-limit", type=int, default=None, help="use N (evenly spaced) images of the training split")
    add("--output", default=None, help="results JSON path (a Markdown table is written beside it as .md)")
    add("--num-workers", type=int, default=0, help="DataLoader workers decoding images (default 0)")
    add("--image-size", type=int, default=None, help="input side (default: the processor's; ADE: the short side)")
    add(
        "--resize",
        choices=("square", "center-crop"),
        default=None,
        help="retrieval / zero-shot classification / knn preprocessing (default: square, square, center-crop)",
    )
    add("--streaming", action="store_true", help="stream a Hub dataset instead of downloading it")
    add("--where", action="append", default=[], metavar="COLUMN=VALUE", help="keep Hub rows with COLUMN == VALUE")
    add("--image-column", default=None)
    add("--text-column", default=None, help="caption column (retrieval)")
    add("--label-column", default=None, help="class / annotation / depth column")
    add("--image-root", default=None, help="retrieval: folder of the Karpathy JSON's images")
    add("--templates", default=None, help="clip80 | tcl | tips-hf | none | FILE (one template per line)")
    add("--class-names", default=None, help="class names file (text: one per line; JSON: list or {folder: name})")
    add("--knn-k", type=int, default=20)
    add("--knn-temperature", type=float, default=0.07)
    add("--mode", choices=("slide", "whole"), default="slide", help="zero-shot segmentation inference mode")
    add(
        "--seg-features",
        choices=("values", "patches"),
        default="values",
        help="zero-shot segmentation patch features: the values trick (official) or the final patch tokens",
    )
    add("--window", type=int, default=None, help="sliding window side (default 448)")
    add("--stride", type=int, default=None, help="sliding window stride (default 336)")
    add("--num-classes", type=int, default=None, help="linear-probe-segmentation classes (default 21, VOC)")
    add("--reduce-zero-label", action="store_true", help="Hub segmentation maps: 0 = ignore, k = class k - 1")
    add("--probe-method", choices=("logistic", "ridge"), default="logistic")
    add("--max-train-patches", type=int, default=None, help="fit the probe on a random subset of patches")
    add("--depth-scale", type=float, default=1000.0, help="integer depth maps are divided by this (mm -> m)")
    add("--no-eigen-crop", action="store_true", help="score every valid depth pixel (no Eigen crop)")
    add("--dpt", default=None, help="a TipsForSemanticSegmentation / TipsForDepthEstimation folder: score the head")
    add("--no-progress", action="store_true", help="no progress bars")
    return parser


def options_from_args(args: argparse.Namespace) -> EvalOptions:
    where = {}
    for item in args.where:
        column, sep, value = item.partition("=")
        if not sep or not column:
            raise EvalError(f"--where expects COLUMN=VALUE, got {item!r}")
        where[column] = value
    if args.batch_size < 1:
        raise EvalError(f"--batch-size must be at least 1, got {args.batch_size}")
    for flag, value in (("--limit", args.limit), ("--train-limit", args.train_limit)):
        if value is not None and value < 1:
            raise EvalError(f"{flag} must be at least 1, got {value}")
    extra = {name: getattr(args, name) for name in EXTRA_FLAGS}
    extra["eigen_crop"] = not args.no_eigen_crop
    if args.reduce_zero_label:
        extra["reduce_zero_label"] = True
    # The other flags are named like the EvalOptions fields they set.
    same = {f.name: getattr(args, f.name) for f in fields(EvalOptions) if f.name not in ("where", "progress", "extra")}
    return EvalOptions(**same, where=where, progress=not args.no_progress, extra=extra)


def evaluate(task: str, model: Any, processor: Any, data: Any, options: EvalOptions) -> dict[str, Any]:
    """Run one task on a loaded model (the library form of `tips-eval`); returns the result dict."""
    tasks = _tasks()
    if task not in tasks:
        raise EvalError(f"unknown task {task!r}; tasks: {', '.join(tasks)}")
    return tasks[task](model, processor, data, options)


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Do the work of `main`; raises [`EvalError`] for input problems."""
    options = options_from_args(args)
    model, processor = load_model(args.model, args.device, args.dtype)
    result = evaluate(args.task, model, processor, args.data, options)
    result = {"task": result.pop("task"), "model": str(args.model), "data": str(args.data), **result}
    # Google's number for this preset and column (a DPT segmentation head is ADE20K's, not the PASCAL column's).
    if not (args.dpt and args.task == "linear-probe-segmentation"):
        expected = expected_for(getattr(model.config, "preset", None), args.task)
        if expected is not None:
            result["expected"] = expected
    result["options"] = {"batch_size": args.batch_size, "dtype": args.dtype, "limit": args.limit,
                         "device": str(next(model.parameters()).device)}  # fmt: skip
    print(markdown_table(result))
    if args.output:
        json_path, md_path = write_results(result, args.output)
        print(f"wrote {json_path} and {md_path}")
    return result


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point; returns the exit code (0, or 2 for input errors)."""
    return run_main(build_parser(), run, EvalError, argv)


if __name__ == "__main__":
    sys.exit(main())
