"""Import of the official PyTorch TIPS checkpoints (`*_vision.npz`, `*_text.npz`)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from ..modeling.configuration_tips import TipsConfig
from .layouts import OFFICIAL, LayoutError, arch_from_config, context_from_config, import_tensors, infer_official_config
from .npz import NpzReader
from .writer import DEFAULT_MAX_SHARD_SIZE, expected_shapes, write_model_folder


@dataclass
class ConversionResult:
    """What a conversion wrote and measured."""

    output_dir: Path
    config: TipsConfig
    parity: dict[str, float] = field(default_factory=dict)  # "<output>@<HxW>" -> max abs difference

    @property
    def max_abs_diff(self) -> float | None:
        return max(self.parity.values()) if self.parity else None


def build_processor(config: TipsConfig, tokenizer_path: str | os.PathLike | None):
    """Image processor at the config's resolution, plus the tokenizer when a `tokenizer.model` is given."""
    from ..processing.image_processing_tips import TipsImageProcessor
    from ..processing.processing_tips import TipsProcessor
    from ..processing.tokenization_tips import TipsTokenizer

    size = config.image_resolution
    image_processor = TipsImageProcessor(size={"height": size, "width": size})
    if tokenizer_path is None:
        return image_processor
    if not Path(tokenizer_path).is_file():
        raise LayoutError(f"{tokenizer_path}: no such tokenizer file.")
    try:
        tokenizer = TipsTokenizer(str(tokenizer_path), model_max_length=config.text_config.max_position_embeddings)
    except (RuntimeError, OSError, TypeError, ValueError) as error:  # sentencepiece's C++ errors
        raise LayoutError(f"{tokenizer_path}: not a SentencePiece model ({error}).") from None
    if len(tokenizer) != config.text_config.vocab_size:
        raise LayoutError(
            f"{tokenizer_path} has {len(tokenizer)} pieces but the text embedding has {config.text_config.vocab_size} "
            "rows; the tokenizer does not belong to this checkpoint."
        )
    return TipsProcessor(image_processor=image_processor, tokenizer=tokenizer)


def convert_official(
    vision_path: str | os.PathLike,
    text_path: str | os.PathLike | None,
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
    """Convert an official PyTorch TIPS checkpoint pair into a `TipsModel` folder.

    With `verify`, the written model is re-run on the inputs stored in that expected-outputs `.npz` and the max abs
    differences are returned (and saved as `parity.json` in the folder).

    With `text_path=None` the vision tower alone is written as a `TipsVisionModel` folder (see
    [`convert_official_vision`]; `tokenizer_path`, `text_heads` and `verify` need the text tower).
    """
    if text_path is None:
        from .dpt import convert_official_vision

        for name, value in (("tokenizer_path", tokenizer_path), ("text_heads", text_heads), ("verify", verify)):
            if value is not None:
                raise LayoutError(f"{name} needs the text tower; a vision tower alone is converted without it.")
        return convert_official_vision(
            vision_path, output_dir, preset=preset, vision_heads=vision_heads, image_resolution=image_resolution,
            max_shard_size=max_shard_size, overwrite=overwrite, progress=progress,
        )
    return convert_pair(
        vision_path, text_path, output_dir, OFFICIAL, "official",
        lambda vision, text: infer_official_config(vision, text, preset, vision_heads, text_heads, image_resolution),
        tokenizer_path=tokenizer_path, verify=verify, max_shard_size=max_shard_size, overwrite=overwrite,
        progress=progress,
    )


_REFERENCES = {"official": "official PyTorch reference", "scenic": "official JAX/Scenic reference"}


def convert_pair(
    vision_path, text_path, output_dir, layout, verify_layout: str, infer_config, tokenizer_path=None, defaults=None,
    verify=None, max_shard_size: int | str = DEFAULT_MAX_SHARD_SIZE, overwrite: bool = False, progress: bool = True,
) -> ConversionResult:
    """Shared by the npz converters: infer the config, stream both towers through `layout` into a model folder, and
    optionally verify against stored reference outputs (`verify_layout` names their conventions)."""
    with NpzReader(vision_path) as vision, NpzReader(text_path) as text:
        config = infer_config(vision, text)
        processor = build_processor(config, tokenizer_path)
        arch, ctx, shapes = arch_from_config(config), context_from_config(config), expected_shapes(config)

        def stream():
            for reader, tower in ((vision, "vision"), (text, "text")):
                yield from import_tensors(layout, arch, ctx, reader.keys(), reader.read, shapes, str(reader.path),
                                          (tower,))

        out = write_model_folder(
            output_dir, config, stream(), processor, max_shard_size, defaults=defaults(config) if defaults else None,
            overwrite=overwrite, progress=progress, description=f"tips-convert {verify_layout}",
        )
    result = ConversionResult(out, config)
    if verify is not None:
        from .verify import record_parity, verify_model

        result.parity = verify_model(out, verify, layout=verify_layout)
        record_parity(out, result.parity, source=_REFERENCES[verify_layout], expected=verify)
    return result
