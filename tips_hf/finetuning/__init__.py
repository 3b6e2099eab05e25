"""Fine-tuning TIPS: LoRA presets per tower (`peft`), dense heads, and the dense fine-tuning loop."""

from ..lora import PRESETS, lora_config, matching_modules, target_regex
from .dense import DenseHead, DenseOutput, TipsForDenseTasks

__all__ = ["PRESETS", "DenseHead", "DenseOutput", "TipsForDenseTasks", "lora_config", "matching_modules",
           "target_regex"]
