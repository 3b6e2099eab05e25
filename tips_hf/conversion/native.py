"""Export to transformers' native `Tipsv2Model` (model_type "tipsv2", transformers >= 5.14, no remote code)."""

from __future__ import annotations

import collections
import json
import os
import shutil
import tempfile
from pathlib import Path

import torch

from ..modeling.modeling_tips import meta_model
from .foreign import HUB_PREFIXES
from .layouts import HUB, arch_from_config, canonical_key, context_from_config, export_tensors, native_layout_for
from .writer import DEFAULT_MAX_SHARD_SIZE, atomic_folder, open_checkpoint, write_safetensors

# What a native folder cannot hold (listed in its tips_hf_export.json).
CANNOT_CARRY = (
    "the synthetic-caption head's own temperature (Tipsv2Model has one `temperature`; the alt-text head's is kept)",
    "the temperature clamp range (temperature_min/max) and the `preset` name (the processor keeps the image size)",
    "interpolate_antialias=False (Tipsv2 always antialiases)",
    "bit-exact tokenization: transformers' Tipsv2Tokenizer (a `tokenizers` conversion of tokenizer.model) drops "
    "characters outside the vocabulary instead of emitting <unk>; token ids differ on such text",
)


def _native_mlp_ratio(hidden: int, width: int, swiglu: bool) -> float:
    """An `mlp_ratio` for which transformers' Tipsv2 rebuilds exactly our FFN width (it stores a ratio, not a width)."""

    def rebuilt(ratio: float) -> int:
        mlp = int(hidden * ratio)
        return (int(mlp * 2 / 3) + 7) // 8 * 8 if swiglu else mlp

    base = width * (1.5 if swiglu else 1.0)
    for candidate in (width / hidden if not swiglu else 4.0, base / hidden, (base + 0.5) / hidden):
        if rebuilt(candidate) == width:
            return candidate
    raise ValueError(
        f"transformers' Tipsv2 cannot express an FFN width of {width} for hidden size {hidden} "
        f"({'SwiGLU widths must be multiples of 8' if swiglu else 'no mlp_ratio gives it'})."
    )


def config_to_native(config) -> dict:
    """`Tipsv2Config` keyword arguments equivalent to a `TipsConfig` (see `CANNOT_CARRY` for what is lost)."""
    v, t = config.vision_config, config.text_config
    return {
        "vision_config": {
            "hidden_size": v.hidden_size,
            "num_hidden_layers": v.num_hidden_layers,
            "num_attention_heads": v.num_attention_heads,
            "mlp_ratio": _native_mlp_ratio(v.hidden_size, v.intermediate_size, v.ffn_type == "swiglu"),
            "use_swiglu_ffn": v.ffn_type == "swiglu",
            "hidden_act": v.hidden_act,
            "layer_norm_eps": v.layer_norm_eps,
            "image_size": v.image_size,
            "patch_size": v.patch_size,
            "num_channels": v.num_channels,
            "qkv_bias": v.qkv_bias,
            "layerscale_value": v.layerscale_value,
            "num_register_tokens": v.num_register_tokens,
            "drop_path_rate": v.drop_path_rate,
            "attention_probs_dropout_prob": v.attention_dropout,
            "initializer_range": v.initializer_range,
        },
        "text_config": {
            "vocab_size": t.vocab_size,
            "hidden_size": t.hidden_size,
            "intermediate_size": t.intermediate_size,
            "num_hidden_layers": t.num_hidden_layers,
            "num_attention_heads": t.num_attention_heads,
            "max_position_embeddings": t.max_position_embeddings,
            "hidden_act": t.hidden_act,
            "layer_norm_eps": t.layer_norm_eps,
            "attention_dropout": t.attention_dropout,
            "pad_token_id": t.pad_token_id,
            "scale_sqrt_depth": t.scale_sqrt_depth,
            "pooling_epsilon": t.pooling_epsilon,
            "initializer_range": t.initializer_range,
        },
        "temperature_init_value": config.temperature_init_value,
    }


def export_to_transformers(
    model_dir: str | os.PathLike,
    output_dir: str | os.PathLike,
    max_shard_size: int | str = DEFAULT_MAX_SHARD_SIZE,
    overwrite: bool = False,
    progress: bool = True,
) -> Path:
    """Write a folder that plain transformers loads with `Tipsv2Model.from_pretrained` (no tips-hf, no remote code).

    The tensors stream from `model_dir` to the shards one by one (memory stays near one shard). Their names are the
    ones transformers itself writes from a `Tipsv2Model`, taken from its weight-conversion mapping on a model built on
    the meta device: the Hub layout, through our `HUB` table. What cannot be carried is listed in `CANNOT_CARRY` and
    in `tips_hf_export.json` inside the folder.
    """
    import transformers

    model_dir = Path(model_dir)
    config, _, read = open_checkpoint(model_dir)
    native_config = transformers.Tipsv2Config(**config_to_native(config))
    native = meta_model(native_config, transformers.Tipsv2Model)
    saved = _saved_layout(native)
    arch, ctx = arch_from_config(config), context_from_config(config)
    with atomic_folder(output_dir, overwrite) as staging:
        if saved is None:  # a transformers whose saved names we cannot predict: let it save a materialised model
            native.load_state_dict(native_module_state(native, config, read), strict=True, assign=True)
            native.save_pretrained(staging, max_shard_size=max_shard_size)
        else:
            canonical, dtypes = _hub_names(saved), collections.Counter()

            def stream():
                for key, tensor in export_tensors(HUB, arch, ctx, read):
                    dtypes[tensor.dtype] += tensor.numel()
                    yield canonical.get(key, key), tensor

            write_safetensors(
                staging,
                saved,
                stream(),
                max_shard_size,
                progress=progress,
                description="tips-convert to-transformers",
                source=str(model_dir),
            )
            native_config.dtype = max(dtypes, key=dtypes.get)  # as save_pretrained records the model's dtype
            native_config.architectures = ["Tipsv2Model"]
            native_config.save_pretrained(staging)
        _export_processor(model_dir, staging, config)
        lost = [item for item in CANNOT_CARRY if _applies(item, config)]
        (staging / "tips_hf_export.json").write_text(
            json.dumps({"source": str(model_dir), "not_carried": lost}, indent=2) + "\n"
        )
    return Path(output_dir)


def native_module_state(native, config, read) -> dict[str, torch.Tensor]:
    """Our model's tensors (`read(our_key)`) named as the installed transformers' `Tipsv2Model` names its modules
    (`attention.attention.query` in 5.14-5.23, `attention.q_proj` from 5.24): a state dict for `native`."""
    module_keys = list(native.state_dict())
    layout = native_layout_for(module_keys)
    spelled = {canonical_key(key, layout.aliases): key for key in module_keys}
    arch, ctx = arch_from_config(config), context_from_config(config)
    return {spelled.get(key, key): tensor for key, tensor in export_tensors(layout, arch, ctx, read)}


def _saved_layout(native) -> dict[str, torch.Tensor] | None:
    """{name: meta tensor} as `native.save_pretrained` writes them, or None where transformers cannot tell us."""
    try:
        from transformers.core_model_loading import revert_weight_conversion

        saved = revert_weight_conversion(native, dict(native.state_dict()))
    except (ImportError, RuntimeError, NotImplementedError, TypeError, ValueError):  # older transformers, etc.
        return None
    return dict(saved) if all(k.startswith(HUB_PREFIXES + ("temperature",)) for k in saved) else None


def _hub_names(saved) -> dict[str, str]:
    """Our HUB export's canonical names -> the spelling transformers saves (it differs for the vision MLP)."""
    return {canonical_key(name, HUB.aliases): name for name in saved}


def _applies(item: str, config) -> bool:
    if item.startswith("the synthetic-caption head"):
        return True
    if item.startswith("interpolate_antialias"):
        return not config.vision_config.interpolate_antialias
    return True


def _export_processor(model_dir: Path, out: Path, config) -> None:
    """Tipsv2Processor = Tipsv2ImageProcessor at our resolution + Tipsv2Tokenizer from tokenizer.model (if any)."""
    import transformers

    size = config.image_resolution
    image_processor = transformers.Tipsv2ImageProcessor(size={"height": size, "width": size})
    spm = model_dir / "tokenizer.model"
    if not spm.is_file():
        image_processor.save_pretrained(out)
        return
    with tempfile.TemporaryDirectory() as tmp:
        shutil.copy(spm, Path(tmp) / "tokenizer.model")
        tokenizer = transformers.Tipsv2Tokenizer.from_pretrained(tmp)
    transformers.Tipsv2Processor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(out)
