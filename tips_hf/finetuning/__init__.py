"""Fine-tuning TIPS: LoRA presets per tower (`peft`), dense heads, and the dense fine-tuning loop."""

from .dense import DenseHead, DenseOutput, TipsForDenseTasks
from .lora import PRESETS, lora_config, matching_modules, target_regex

__all__ = ["PRESETS", "DenseHead", "DenseOutput", "TipsForDenseTasks", "lora_config", "matching_modules",
           "target_regex"]
