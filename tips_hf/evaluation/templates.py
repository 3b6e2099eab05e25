# Copyright 2026 The tips-hf authors. Licensed under the Apache License, Version 2.0.
"""Prompt ensembles and class-name lists of the evaluation protocols.

- `CLIP_IMAGENET_TEMPLATES`: the 80 ImageNet prompt templates of CLIP (Radford et al. 2021, openai/CLIP
  `notebooks/Prompt_Engineering_for_ImageNet.ipynb`), the standard zero-shot ImageNet ensemble.
- `TCL_TEMPLATES` (= `tips_hf.dense.SEGMENTATION_TEMPLATES`): the 9 templates of TCL (Cha et al. 2023) that the
  official TIPS zero-shot segmentation notebook (`pytorch/TIPS_zeroshot_segmentation.ipynb`) uses for the published
  ADE150 numbers.
- `ADE20K_CLASS_NAMES` (= `tips_hf.conversion.dpt.ADE20K_CLASSES`): the 150 class names of that notebook (label `k`
  of the ADE20K annotation PNGs is `ADE20K_CLASS_NAMES[k - 1]`; 0 is "other" and is ignored).
"""

from __future__ import annotations

from pathlib import Path

from ..conversion.dpt import ADE20K_CLASSES
from ..dense.zero_shot import SEGMENTATION_TEMPLATES
from .common import EvalError

CLIP_IMAGENET_TEMPLATES: tuple[str, ...] = (
    "a bad photo of a {}.", "a photo of many {}.", "a sculpture of a {}.", "a photo of the hard to see {}.",
    "a low resolution photo of the {}.", "a rendering of a {}.", "graffiti of a {}.", "a bad photo of the {}.",
    "a cropped photo of the {}.", "a tattoo of a {}.", "the embroidered {}.", "a photo of a hard to see {}.",
    "a bright photo of a {}.", "a photo of a clean {}.", "a photo of a dirty {}.", "a dark photo of the {}.",
    "a drawing of a {}.", "a photo of my {}.", "the plastic {}.", "a photo of the cool {}.",
    "a close-up photo of a {}.", "a black and white photo of the {}.", "a painting of the {}.",
    "a painting of a {}.", "a pixelated photo of the {}.", "a sculpture of the {}.", "a bright photo of the {}.",
    "a cropped photo of a {}.", "a plastic {}.", "a photo of the dirty {}.", "a jpeg corrupted photo of a {}.",
    "a blurry photo of the {}.", "a photo of the {}.", "a good photo of the {}.", "a rendering of the {}.",
    "a {} in a video game.", "a photo of one {}.", "a doodle of a {}.", "a close-up photo of the {}.",
    "a photo of a {}.", "the origami {}.", "the {} in a video game.", "a sketch of a {}.", "a doodle of the {}.",
    "a origami {}.", "a low resolution photo of a {}.", "the toy {}.", "a rendition of the {}.",
    "a photo of the clean {}.", "a photo of a large {}.", "a rendition of a {}.", "a photo of a nice {}.",
    "a photo of a weird {}.", "a blurry photo of a {}.", "a cartoon {}.", "art of a {}.", "a sketch of the {}.",
    "a embroidered {}.", "a pixelated photo of a {}.", "itap of the {}.", "a jpeg corrupted photo of the {}.",
    "a good photo of a {}.", "a plushie {}.", "a photo of the nice {}.", "a photo of the small {}.",
    "a photo of the weird {}.", "the cartoon {}.", "art of the {}.", "a drawing of the {}.",
    "a photo of the large {}.", "a black and white photo of a {}.", "the plushie {}.", "a dark photo of a {}.",
    "itap of a {}.", "graffiti of the {}.", "a toy {}.", "itap of my {}.", "a photo of a cool {}.",
    "a photo of a small {}.", "a tattoo of the {}.",
)  # fmt: skip

# One place for each: the zero-shot segmentation templates live with `zero_shot_segment`, the ADE20K names with the
# DPT conversion (the released segmentation head's labels).
TCL_TEMPLATES: tuple[str, ...] = SEGMENTATION_TEMPLATES
ADE20K_CLASS_NAMES: tuple[str, ...] = ADE20K_CLASSES

NAMED_TEMPLATES = {"clip80": CLIP_IMAGENET_TEMPLATES, "tcl": TCL_TEMPLATES, "none": ("{}",)}


def resolve_templates(spec: str | None, default: str) -> tuple[str, tuple[str, ...]]:
    """(name, templates) from a preset name (`clip80`, `tcl`, `none`, `tips-hf`), or a text file with one template
    per line (each with a `{}` slot)."""
    spec = spec or default
    if spec == "tips-hf":
        from ..dense.zero_shot import PROMPT_TEMPLATES

        return spec, tuple(PROMPT_TEMPLATES)
    if spec in NAMED_TEMPLATES:
        return spec, NAMED_TEMPLATES[spec]
    path = Path(spec)
    if not path.is_file():
        raise EvalError(
            f"--templates: {spec!r} is neither a preset ({', '.join([*NAMED_TEMPLATES, 'tips-hf'])}) nor a file"
        )
    lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    for number, line in enumerate(lines, 1):
        if "{}" not in line:
            raise EvalError(f"{path}:{number}: template {line!r} has no '{{}}' slot for the class name")
    if not lines:
        raise EvalError(f"{path}: no template")
    return str(path), tuple(lines)


__all__ = ["ADE20K_CLASS_NAMES", "CLIP_IMAGENET_TEMPLATES", "TCL_TEMPLATES", "resolve_templates"]
