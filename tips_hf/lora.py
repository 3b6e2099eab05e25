"""LoRA for TIPS with `peft`: named target-module presets per tower.

Module names (fused projections, see `modeling_tips.py`):
- vision attention: `vision_model.encoder.layers.<i>.attention.{qkv,out_proj}`
- vision FFN: `vision_model.encoder.layers.<i>.mlp.{fc1,fc2}` (MLP) or `.mlp.{gate_up,down}` (SwiGLU, g/14)
- text attention: `text_model.encoder.layers.<i>.self_attn.{qkv,out_proj}`
- text FFN: `text_model.encoder.layers.<i>.mlp.{fc1,fc2}`

Presets: `vision-attention`, `vision-mlp`, `vision` (both), `text-attention`, `text-mlp`, `text`, `all`. They are
regular expressions matched against full module names, so `vision*` presets never touch the text tower (and they
also match a bare `TipsVisionModel` or a `TipsForDenseTasks` backbone, whose names lack the `vision_model.` prefix
or carry another prefix).
"""

from __future__ import annotations

import re
from typing import Any

_LAYER = r"encoder\.layers\.\d+"
_PARTS = {
    "vision-attention": rf"(^|.*\.)vision_model\.{_LAYER}\.attention\.(qkv|out_proj)",
    "vision-mlp": rf"(^|.*\.)vision_model\.{_LAYER}\.mlp\.(fc1|fc2|gate_up|down)",
    "text-attention": rf"(^|.*\.)text_model\.{_LAYER}\.self_attn\.(qkv|out_proj)",
    "text-mlp": rf"(^|.*\.)text_model\.{_LAYER}\.mlp\.(fc1|fc2)",
}
PRESETS: dict[str, tuple[str, ...]] = {
    **{name: (name,) for name in _PARTS},
    "vision": ("vision-attention", "vision-mlp"),
    "text": ("text-attention", "text-mlp"),
    "all": tuple(_PARTS),
}


def target_regex(preset: str) -> str:
    """A regular expression (full match, as `peft` applies a string `target_modules`) for a preset."""
    if preset not in PRESETS:
        raise ValueError(f"unknown LoRA preset {preset!r}; presets: {', '.join(PRESETS)}.")
    return "(" + "|".join(f"(?:{_PARTS[part]})" for part in PRESETS[preset]) + ")"


def matching_modules(model, preset: str) -> list[str]:
    """Names of the modules a preset selects in `model` (to check a preset before training)."""
    pattern = re.compile(target_regex(preset))
    return [name for name, _ in model.named_modules() if pattern.fullmatch(name)]


def lora_config(
    preset: str = "vision",
    r: int = 8,
    alpha: int = 16,
    dropout: float = 0.0,
    modules_to_save: list[str] | None = None,
    target_modules: str | list[str] | None = None,
    **options: Any,
):
    """A `peft.LoraConfig` for TIPS: a preset (or explicit `target_modules`: a regex or module names), and the new
    heads to train and save with the adapter (`modules_to_save`); `options`: other `peft.LoraConfig` fields (e.g.
    `use_rslora`, `use_dora`, `bias`, default "none")."""
    from peft import LoraConfig

    return LoraConfig(
        r=r,
        lora_alpha=alpha,
        lora_dropout=dropout,
        target_modules=target_modules or target_regex(preset),
        modules_to_save=modules_to_save,
        **{"bias": "none", **options},
    )


__all__ = ["PRESETS", "lora_config", "matching_modules", "target_regex"]
