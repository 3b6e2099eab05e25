"""Import of the official JAX/Scenic TIPS checkpoints (flattened flax params in `*_vision.npz`, `*_text.npz`).

The Scenic model differs from the PyTorch one in ways the converted TipsModel reproduces exactly:
- its two CLS tokens get no position embedding (ours: a zero CLS position),
- no LayerScale (ours: LayerScale vectors of ones) and no mask token (ours: zeros, used only by MIM training),
- flax LayerNorm (eps 1e-6) in both towers and tanh-approximated GELU (`jax.nn.gelu` default) in the vision MLP,
- inputs whose sides are not multiples of 14 are centre-padded with zeros (TipsImageProcessor(do_resize=False)).
"""

from __future__ import annotations

import os

from ..layouts_tips import (
    SCENIC,
    LayoutError,
    infer_scenic_config,
    scenic_defaults,
)
from .official import ConversionResult, convert_pair
from .writer import DEFAULT_MAX_SHARD_SIZE


def convert_scenic(
    vision_path: str | os.PathLike,
    text_path: str | os.PathLike,
    output_dir: str | os.PathLike,
    tokenizer_path: str | os.PathLike | None = None,
    preset: str | None = None,
    vision_heads: int | None = None,
    text_heads: int | None = None,
    image_resolution: int | None = None,
    verify: str | os.PathLike | None = None,
    max_shard_size: int | str = DEFAULT_MAX_SHARD_SIZE,
    overwrite: bool = False,
    progress: bool = True,
) -> ConversionResult:
    """Convert an official Scenic TIPS checkpoint pair into a `TipsModel` folder (see the module docstring).

    With `verify`, the written model is re-run on the inputs stored in that Scenic expected-outputs `.npz` (NHWC,
    centre-padded like the reference) and the max abs differences are returned and saved as `parity.json`.
    """
    return convert_pair(
        vision_path,
        text_path,
        output_dir,
        SCENIC,
        "scenic",
        lambda vision, text: _check_heads(
            infer_scenic_config(vision, text, preset, image_resolution), vision_heads, text_heads
        ),
        tokenizer_path=tokenizer_path,
        defaults=scenic_defaults,
        verify=verify,
        max_shard_size=max_shard_size,
        overwrite=overwrite,
        progress=progress,
    )


def _check_heads(config, vision_heads: int | None, text_heads: int | None):
    """Scenic kernels carry the head counts; flags, when given, must agree with them (checked before any write)."""
    for tower, flag in (("vision", vision_heads), ("text", text_heads)):
        found = getattr(config, f"{tower}_config").num_attention_heads
        if flag is not None and flag != found:
            raise LayoutError(
                f"--{tower}-heads {flag} disagrees with the checkpoint's attention kernels ({found} heads)."
            )
    return config
