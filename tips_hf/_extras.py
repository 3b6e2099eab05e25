# Copyright 2026 The tips-hf authors. Licensed under the Apache License, Version 2.0.
"""Which `pip install 'tips-hf[EXTRA]'` brings each optional package (pyproject.toml's optional dependencies;
tests/test_repository.py checks the two agree), and the one-line message a command prints when one is missing."""

from __future__ import annotations

import importlib.util

# import name → extra
EXTRA_OF = {
    "accelerate": "train", "datasets": "train", "evaluate": "train", "peft": "train", "yaml": "train",
    "tensorboard": "train",
    "onnx": "export", "onnxscript": "export", "onnxruntime": "export", "onnx_ir": "export",
    "gradio": "demo",
    # experiment trackers (training.report_to): one extra each, named as accelerate's LoggerType names it
    "wandb": "wandb", "mlflow": "mlflow", "comet_ml": "comet-ml", "aim": "aim", "clearml": "clearml",
    "dvclive": "dvclive", "swanlab": "swanlab", "trackio": "trackio",
}  # fmt: skip


def install_hint(module: str) -> str:
    """`pip install 'tips-hf[EXTRA]'` for an optional package's import name (its top-level module)."""
    name = module.split(".")[0]
    return f"pip install 'tips-hf[{EXTRA_OF[name]}]'" if name in EXTRA_OF else f"pip install {name}"


def is_missing(module: str) -> bool:
    return importlib.util.find_spec(module) is None


def missing_package_message(error: ImportError) -> str | None:
    """"needs X: pip install 'tips-hf[EXTRA]'" for an ImportError of an optional package that an extra installs;
    None for any other import error (a bug to show with its traceback)."""
    name = (getattr(error, "name", None) or "").split(".")[0]
    if name not in EXTRA_OF:
        return None
    return f"this needs {name}, which is not installed: {install_hint(name)}"
