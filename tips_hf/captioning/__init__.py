"""Synthetic captions for your own images: `tips-caption` runs a transformers captioner over a dataset and writes it
back, in resumable parquet shards, with caption column(s) that pretraining reads through `data.synthetic_columns`."""

from .captioner import PRESET_NAMES, PRESETS, Captioner, CaptionTask, model_family, preset_task
from .run import CaptionResult, build_tasks, caption_dataset, open_dataset

__all__ = [
    "PRESETS",
    "PRESET_NAMES",
    "CaptionResult",
    "CaptionTask",
    "Captioner",
    "build_tasks",
    "caption_dataset",
    "model_family",
    "open_dataset",
    "preset_task",
]
