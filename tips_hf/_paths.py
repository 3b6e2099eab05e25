# Copyright 2026 The tips-hf authors. Licensed under the Apache License, Version 2.0.
"""Model paths that are neither a local folder nor a Hub id: a named error before transformers turns a missing
`outputs/tiny-cpu/final` into "Repo id must be in the form 'repo_name' or 'namespace/repo_name'"."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

# Settings of the training configs that name a model folder (or a checkpoint folder: local only).
MODEL_PATH_SETTINGS = ("model.init_from", "model.base", "objective.distillation_teacher")
CHECKPOINT_PATH_SETTINGS = ("model.init_heads_from",)
EARLIER_RUN = (
    "it is written by an earlier run (the main job, `accelerate launch training/pretrain.py --config "
    "training/configs/tiny-cpu.yaml`, writes outputs/tiny-cpu/final): run that job first, or pass a Hub model id "
    "(namespace/name)"
)


class MissingModelError(FileNotFoundError):
    """A model path that does not exist here and is no Hub id (the training scripts print it as one line)."""


def looks_like_hub_id(text: str) -> bool:
    """`name` or `namespace/name` as the Hub spells repo ids, and not a path whose first folder exists here."""
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    if text.startswith((".", "/", "~")) or "\\" in text:
        return False
    try:
        validate_repo_id(text)
    except HFValidationError:
        return False
    return not ("/" in text and Path(text.split("/")[0]).is_dir())  # outputs/final beside an outputs/ folder


def check_model_path(path: str | os.PathLike, what: str, hint: str = EARLIER_RUN, hub: bool = True,
                     error: type[Exception] = MissingModelError) -> str:
    """`path` as a string when it exists here (or, with `hub`, reads as a Hub model id); otherwise `error` naming
    `what` (the setting or option), the path, and `hint` (what writes it)."""
    text = str(path)
    if Path(text).expanduser().exists() or (hub and looks_like_hub_id(text)):
        return text
    where = "no such local folder" + (", and not a Hub model id" if hub else "")
    raise error(f"{what}: {text} does not exist ({where}); {hint}.")


def check_model_paths(config: Any) -> None:
    """The model and checkpoint folders a training config names (`MODEL_PATH_SETTINGS`, `CHECKPOINT_PATH_SETTINGS`),
    before anything is built; the error also names the file that set the path (`config.sources`)."""
    sections, sources = config.to_dict(), getattr(config, "sources", {})
    for key in (*MODEL_PATH_SETTINGS, *CHECKPOINT_PATH_SETTINGS):
        section, name = key.split(".")
        value = sections.get(section, {}).get(name)
        if value:
            what = f"{key} (set in {sources[key]})" if key in sources else key
            hint = EARLIER_RUN if key in MODEL_PATH_SETTINGS else "it is a checkpoint-<step> folder of an earlier run"
            check_model_path(value, what, hint, hub=key in MODEL_PATH_SETTINGS)
