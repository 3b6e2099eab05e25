"""Every schedule is a plain function of the optimizer step (no hidden state), so a resumed run recomputes it."""

from __future__ import annotations

import math


def cosine(
    step: int, total_steps: int, start: float, end: float, warmup_steps: int = 0, warmup_start: float = 0.0
) -> float:
    """Linear warm-up from `warmup_start` to `start` over `warmup_steps`, then cosine from `start` to `end` at
    `total_steps` (held at `end` afterwards)."""
    if step < warmup_steps:
        return warmup_start + (start - warmup_start) * step / warmup_steps
    span = max(total_steps - warmup_steps, 1)
    progress = min(max(step - warmup_steps, 0) / span, 1.0)
    return end + 0.5 * (start - end) * (1.0 + math.cos(math.pi * progress))


def linear_warmup(step: int, warmup_steps: int, start: float, end: float) -> float:
    """Linear from `start` to `end` over `warmup_steps`, then `end` (teacher-temperature warm-up)."""
    if warmup_steps <= 0 or step >= warmup_steps:
        return end
    return start + (end - start) * step / warmup_steps


def step_values(config, step: int) -> dict[str, float]:
    """All scheduled values of a `PretrainConfig` at an optimizer step."""
    total, optim = config.training.max_steps, config.optim
    objective, teacher = config.objective, config.teacher
    return {
        "lr": cosine(step, total, optim.lr, optim.min_lr, optim.warmup_steps),
        "weight_decay": cosine(step, total, optim.weight_decay, optim.weight_decay_final),
        "teacher_momentum": cosine(step, total, teacher.momentum, teacher.momentum_final),
        "teacher_temperature": linear_warmup(
            step,
            objective.teacher_temperature_warmup_steps,
            objective.teacher_temperature_warmup,
            objective.teacher_temperature,
        ),
    }
