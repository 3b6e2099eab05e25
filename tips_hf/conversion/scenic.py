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
    arch_from_config,
    context_from_config,
    import_tensors,
    infer_scenic_config,
    scenic_defaults,
)
from .npz import NpzReader
from .official import ConversionResult, build_processor
from .writer import DEFAULT_MAX_SHARD_SIZE, expected_shapes, write_model_folder


def convert_scenic(
    vision_path: str | os.PathLike,
    text_path: str | os.PathLike,
    output_dir: str | os.PathLike,
    tokenizer_path: str | os.PathLike | None = None,
    preset: str | None = None,
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
    with NpzReader(vision_path) as vision, NpzReader(text_path) as text:
        config = infer_scenic_config(vision, text, preset, image_resolution)
        processor = build_processor(config, tokenizer_path)
        arch, ctx, shapes = arch_from_config(config), context_from_config(config), expected_shapes(config)

        def stream():
            yield from import_tensors(
                SCENIC, arch, ctx, vision.keys(), vision.read, shapes, str(vision.path), ("vision",)
            )
            yield from import_tensors(SCENIC, arch, ctx, text.keys(), text.read, shapes, str(text.path), ("text",))

        out = write_model_folder(
            output_dir,
            config,
            stream(),
            processor,
            max_shard_size,
            defaults=scenic_defaults(config),
            overwrite=overwrite,
            progress=progress,
            description="tips-convert scenic",
        )
    result = ConversionResult(out, config)
    if verify is not None:
        from .verify import record_parity, verify_model

        result.parity = verify_model(out, verify, layout="scenic")
        record_parity(out, result.parity, source="official JAX/Scenic reference", expected=verify)
    return result
