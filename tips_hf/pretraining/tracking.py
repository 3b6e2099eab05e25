"""Experiment trackers of the training loops (`training.report_to`): any tracker accelerate's `LoggerType` names
(tensorboard, wandb, mlflow, comet_ml, aim, clearml, dvclive, swanlab, trackio, or all), a list of them, or none;
and the configuration logged as flat typed hyperparameters (`optim.lr: 0.001`, not one string per section)."""

from __future__ import annotations

import difflib
import json
from collections.abc import Mapping, Sequence
from typing import Any

REPORT_TO_HELP = (
    "experiment tracker(s): a name accelerate's LoggerType knows (tensorboard, wandb, mlflow, comet_ml, aim, clearml, "
    "dvclive, swanlab, trackio; all: every one installed) or a list of them; none: no tracker. Each but tensorboard "
    "needs its package: pip install 'tips-hf[NAME]'")


def tracker_names(report_to: str | Sequence[str]) -> list[str]:
    """The trackers of a `training.report_to` value ([] for "none"), each a name the installed accelerate knows; a
    ValueError naming the unknown ones and listing the known ones otherwise."""
    names = [report_to] if isinstance(report_to, str) else list(report_to)
    if names == ["none"] or not names:
        return []
    if "none" in names:
        raise ValueError(f"training.report_to: none cannot be combined with trackers, got {names}.")
    try:
        from accelerate.utils import LoggerType
    except ImportError:  # the trainers need accelerate anyway and say so; a config still loads without it
        return names
    known = [kind.value for kind in LoggerType]
    for name in names:
        if name not in known:
            close = difflib.get_close_matches(name, known, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ValueError(f"training.report_to: unknown tracker {name!r}{hint}; accelerate knows "
                             f"{', '.join(known)} (or none).")
    return names


def log_with(report_to: str | Sequence[str]) -> list[str] | None:
    """`Accelerator(log_with=...)` for a `training.report_to` value: the tracker names, or None for none; a ValueError
    that says which extra to install when a tracker's package is missing (accelerate would drop it with a warning)."""
    from .._extras import install_hint, is_missing

    names = tracker_names(report_to)
    for name in names:
        if name != "all" and is_missing(name):
            raise ValueError(f"training.report_to: {name} needs the {name} package: {install_hint(name)}.")
    return names or None


def flat_hyperparameters(sections: Mapping[str, Any], prefix: str = "") -> dict[str, bool | int | float | str]:
    """A config's nested settings (`config.to_dict()`) as `section.key` → value: numbers, booleans and strings keep
    their type (what trackers compare and plot), a mapping setting is flattened further (`model.vision.hidden_size`),
    and lists, empty mappings and null become their JSON text (`[0.9, 0.98]`, `{}`, `null`)."""
    flat: dict[str, bool | int | float | str] = {}
    for key, value in sections.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(flat_hyperparameters(value, f"{name}."))
        elif isinstance(value, (bool, int, float, str)):
            flat[name] = value
        else:
            flat[name] = json.dumps(list(value) if isinstance(value, tuple) else value, default=str)
    return flat
