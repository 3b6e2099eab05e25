"""Import of the official PyTorch TIPS checkpoints (`*_vision.npz`, `*_text.npz`)."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from ..configuration_tips import HEADS_BY_WIDTH, PRESETS, TipsConfig, TipsTextConfig, TipsVisionConfig
from ..layouts_tips import (
    OFFICIAL,
    LayoutError,
    arch_from_config,
    context_from_config,
    grid_side,
    import_tensors,
)
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


def count_blocks(keys, pattern: str, source: str) -> int:
    """Number of blocks in `keys` whose names match `pattern` (with one `(\\d+)` group); indices must be 0..n-1."""
    indices = {int(m.group(1)) for k in keys if (m := re.match(pattern, k))}
    if not indices:
        raise LayoutError(f"{source}: no transformer blocks found (no key matches {pattern!r}).")
    if indices != set(range(len(indices))):
        missing = sorted(set(range(max(indices) + 1)) - indices)
        raise LayoutError(f"{source}: blocks {missing} are missing (found indices up to {max(indices)}).")
    return len(indices)


def require(reader: NpzReader, key: str, ndim: int) -> tuple[int, ...]:
    if key not in reader:
        raise LayoutError(f"{reader.path}: missing key {key!r}; is this an official TIPS checkpoint?")
    shape = reader.shape(key)
    if len(shape) != ndim:
        raise LayoutError(f"{reader.path}: key {key!r} has shape {shape}, expected {ndim} dimensions.")
    return shape


def resolve_heads(width: int, flag: int | None, tower: str, preset_heads: int | None) -> int:
    """Heads from the flag, the preset, or the released-width table, in that order."""
    heads = flag or preset_heads or HEADS_BY_WIDTH.get(width)
    if heads is None:
        raise LayoutError(
            f"{tower} width {width} is not a released TIPS width ({sorted(HEADS_BY_WIDTH)}); the number of attention "
            f"heads cannot be read from the weights: pass --{tower}-heads N (or --preset NAME)."
        )
    if width % heads:
        raise LayoutError(f"{tower} width {width} is not divisible by {heads} heads.")
    return heads


def infer_official_config(
    vision: NpzReader,
    text: NpzReader,
    preset: str | None = None,
    vision_heads: int | None = None,
    text_heads: int | None = None,
    image_resolution: int | None = None,
    max_text_length: int = 64,
) -> TipsConfig:
    """Read the architecture from the array shapes (depth, width, FFN type and width, position grid, vocabulary)."""
    src_v, src_t = str(vision.path), str(text.path)
    width = require(vision, "cls_token", 3)[-1]
    patch = require(vision, "patch_embed.proj.weight", 4)
    num_pos = require(vision, "pos_embed", 3)[1] - 1
    grid = grid_side(num_pos, f"{src_v}: 'pos_embed'")
    registers = require(vision, "register_tokens", 3)[1]
    depth = count_blocks(vision.keys(), r"blocks\.(\d+)\.", src_v)
    if "blocks.0.mlp.w12.weight" in vision:
        ffn_type, intermediate = "swiglu", require(vision, "blocks.0.mlp.w12.weight", 2)[0] // 2
    else:
        ffn_type, intermediate = "mlp", require(vision, "blocks.0.mlp.fc1.weight", 2)[0]
    vocab, text_width = require(text, "token_embedding.weight", 2)
    text_depth = count_blocks(text.keys(), r"transformer\.resblocks\.(\d+)\.", src_t)
    text_mlp = require(text, "transformer.resblocks.0.mlp.c_fc.weight", 2)[0]
    if text_width != width:
        raise LayoutError(
            f"vision width {width} ({src_v}) differs from text width {text_width} ({src_t}); the two files do not "
            "belong to the same TIPS model."
        )

    preset_heads: dict[str, int | None] = {"vision": None, "text": None}
    overrides = {}
    if preset is not None:
        reference = TipsConfig.from_preset(preset)
        found = dict(hidden_size=width, num_hidden_layers=depth, intermediate_size=intermediate, ffn_type=ffn_type)
        for name, value in found.items():
            if getattr(reference.vision_config, name) != value:
                raise LayoutError(
                    f"{src_v} does not match preset {preset!r}: vision {name} is {value}, the preset has "
                    f"{getattr(reference.vision_config, name)}."
                )
        if reference.text_config.num_hidden_layers != text_depth:
            raise LayoutError(
                f"{src_t} does not match preset {preset!r}: {text_depth} text layers, the preset has "
                f"{reference.text_config.num_hidden_layers}."
            )
        preset_heads = {
            "vision": reference.vision_config.num_attention_heads,
            "text": reference.text_config.num_attention_heads,
        }
        overrides = dict(preset=preset, image_resolution=PRESETS[preset][2])
    vision_config = TipsVisionConfig(
        hidden_size=width,
        num_hidden_layers=depth,
        num_attention_heads=resolve_heads(width, vision_heads, "vision", preset_heads["vision"]),
        intermediate_size=intermediate,
        ffn_type=ffn_type,
        patch_size=patch[-1],
        num_channels=patch[1],
        image_size=grid * patch[-1],
        num_register_tokens=registers,
    )
    text_config = TipsTextConfig(
        vocab_size=vocab,
        hidden_size=text_width,
        intermediate_size=text_mlp,
        num_hidden_layers=text_depth,
        num_attention_heads=resolve_heads(text_width, text_heads, "text", preset_heads["text"]),
        max_position_embeddings=max_text_length,
    )
    if image_resolution is not None:
        overrides["image_resolution"] = image_resolution
    if "temperature" in text:
        overrides.update(temperature_overrides(float(text.read("temperature").reshape(()))))
    return TipsConfig(vision_config=vision_config, text_config=text_config, **overrides)


def temperature_overrides(value: float) -> dict[str, float]:
    """Config fields that carry a checkpoint's softmax temperature exactly: the clamp range is widened to hold it."""
    if not value > 0:
        raise LayoutError(f"the checkpoint's temperature is {value}; it must be positive (logits = cosine / T).")
    return {"temperature_init_value": value, "temperature_min": min(1e-3, value), "temperature_max": max(1.0, value)}


def build_processor(config: TipsConfig, tokenizer_path: str | os.PathLike | None):
    """Image processor at the config's resolution, plus the tokenizer when a `tokenizer.model` is given."""
    from ..image_processing_tips import TipsImageProcessor
    from ..processing_tips import TipsProcessor
    from ..tokenization_tips import TipsTokenizer

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
    """Convert an official PyTorch TIPS checkpoint pair into a `TipsModel` folder.

    With `verify`, the written model is re-run on the inputs stored in that expected-outputs `.npz` and the max abs
    differences are returned (and saved as `parity.json` in the folder).
    """
    with NpzReader(vision_path) as vision, NpzReader(text_path) as text:
        config = infer_official_config(vision, text, preset, vision_heads, text_heads, image_resolution)
        processor = build_processor(config, tokenizer_path)
        arch, ctx, shapes = arch_from_config(config), context_from_config(config), expected_shapes(config)
        tensors = _chain(
            import_tensors(OFFICIAL, arch, ctx, vision.keys(), vision.read, shapes, str(vision.path), ("vision",)),
            import_tensors(OFFICIAL, arch, ctx, text.keys(), text.read, shapes, str(text.path), ("text",)),
        )
        out = write_model_folder(
            output_dir,
            config,
            tensors,
            processor,
            max_shard_size,
            overwrite=overwrite,
            progress=progress,
            description="tips-convert official",
        )
    result = ConversionResult(out, config)
    if verify is not None:
        from .verify import record_parity, verify_model

        result.parity = verify_model(out, verify, layout="official")
        record_parity(out, result.parity, source="official PyTorch reference", expected=verify)
    return result


def _chain(*iterables):
    for iterable in iterables:
        yield from iterable
