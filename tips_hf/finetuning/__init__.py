"""Fine-tuning TIPS: LoRA presets per tower (`peft`), dense heads, and fine-tuning on `transformers.Trainer`.

- [`lora_config`], [`matching_modules`], [`PRESETS`]: LoRA on chosen towers.
- [`TipsForDenseTasks`]: a linear / MLP head on the patch grid.
- [`FinetuneConfig`], [`load_finetune_config`]: the settings of `training/finetune.py`.
- [`finetune`], [`evaluate_dense`], [`load_dense`], [`DenseTrainer`], [`ContrastiveTrainer`],
  [`StopOnSignalCallback`]: the run (`tips_hf.finetuning.trainer`), imported on first use.
"""

from typing import Any

from ..lora import PRESETS, lora_config, matching_modules, target_regex
from .config import FinetuneConfig, finetune_schema, load_finetune_config
from .dense import DenseHead, DenseOutput, TipsForDenseTasks

_RUN = ("ContrastiveTrainer", "DenseTrainer", "StopOnSignalCallback", "evaluate_dense", "finetune", "load_dense",
        "save_dense")

__all__ = ["PRESETS", "FinetuneConfig", "DenseHead", "DenseOutput", "TipsForDenseTasks", "finetune_schema",  # noqa: F822
           "load_finetune_config", "lora_config", "matching_modules", "target_regex", *_RUN]


def __getattr__(name: str) -> Any:
    if name in _RUN:
        from . import trainer

        return getattr(trainer, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
