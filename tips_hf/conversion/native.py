"""Export to transformers' native classes (no remote code, transformers >= 5.14): a `TipsModel` folder to
`Tipsv2Model` (model_type "tipsv2"), a DPT folder (`TipsFor{SemanticSegmentation,DepthEstimation,NormalEstimation}`)
to `Tipsv2DptFor{SemanticSegmentation,DepthEstimation,NormalEstimation}` (model_type "tipsv2_dpt")."""

from __future__ import annotations

import collections
import json
import os
import shutil
import tempfile
from pathlib import Path

import torch

from ..modeling.configuration_dense_tips import TipsDPTConfig
from ..modeling.modeling_tips import meta_model
from .foreign import HUB_PREFIXES
from .layouts import (
    DPT_HEADS,
    HUB,
    Layout,
    LayoutError,
    arch_from_config,
    canonical_key,
    context_from_config,
    export_tensors,
    hub_dpt_layout,
    native_layout_for,
)
from .writer import DEFAULT_MAX_SHARD_SIZE, atomic_folder, open_checkpoint, write_safetensors

# What a native folder cannot hold (listed in its tips_hf_export.json).
CANNOT_CARRY = (
    "the synthetic-caption head's own temperature (Tipsv2Model has one `temperature`; the alt-text head's is kept)",
    "the temperature clamp range (temperature_min/max) and the `preset` name (the processor keeps the image size)",
    "interpolate_antialias=False (Tipsv2 always antialiases)",
    "bit-exact tokenization: transformers' Tipsv2Tokenizer (a `tokenizers` conversion of tokenizer.model) drops "
    "characters outside the vocabulary instead of emitting <unk>; token ids differ on such text",
)
DPT_CANNOT_CARRY = (
    "interpolate_antialias=False (Tipsv2 always antialiases)",
    "the training losses: transformers' Tipsv2DptForDepthEstimation / ForNormalEstimation raise NotImplementedError "
    "when given labels (ours: SILog, 1 - cosine; segmentation keeps its cross-entropy)",
    "`hidden_states`: ours are the decoder features before the head, transformers' the vision tower's blocks",
)

# The native DPT class of each task, and the first transformers that ships them (with Tipsv2DptConfig).
NATIVE_DPT_CLASSES = {
    "segmentation": "Tipsv2DptForSemanticSegmentation",
    "depth": "Tipsv2DptForDepthEstimation",
    "normals": "Tipsv2DptForNormalEstimation",
}
NATIVE_DPT_SINCE = "5.14"


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


def vision_config_to_native(v) -> dict:
    """`Tipsv2VisionConfig` keyword arguments equivalent to a `TipsVisionConfig`."""
    return {
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
    }


def config_to_native(config) -> dict:
    """`Tipsv2Config` keyword arguments equivalent to a `TipsConfig` (see `CANNOT_CARRY` for what is lost)."""
    t = config.text_config
    return {
        "vision_config": vision_config_to_native(config.vision_config),
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


def dpt_config_to_native(config: TipsDPTConfig) -> dict:
    """`Tipsv2DptConfig` keyword arguments equivalent to a `TipsDPTConfig` (see `DPT_CANNOT_CARRY` for what is lost).

    The native backbone's stage `k` is the output of block `k - 1` after the final LayerNorm, so our 0-based
    `backbone_out_indices` `i` are its `out_indices` `i + 1`; the readout is the first (alt-text) CLS token in both."""
    if config.task == "depth" and config.num_depth_bins < 2:
        raise LayoutError(
            f"TipsDPTConfig.num_depth_bins is {config.num_depth_bins}: a one-bin depth head regresses relu + min_depth, "
            "which Tipsv2DptForDepthEstimation (an expectation over >= 2 bins) cannot express."
        )
    layers = list(config.backbone_out_indices)
    if layers != sorted(set(layers)):
        raise LayoutError(
            f"TipsDPTConfig.backbone_out_indices is {layers}: transformers' Tipsv2 backbone returns its stages once "
            "each, in increasing order, so it cannot feed the decoder these blocks in this order."
        )
    native = {
        "backbone_config": {
            "model_type": "tipsv2_vision_model",
            **vision_config_to_native(config.vision_config),
            "out_indices": [i + 1 for i in config.backbone_out_indices],
            "apply_layernorm": True,
            "reshape_hidden_states": False,
        },
        "neck_hidden_sizes": list(config.post_process_channels),
        "fusion_hidden_size": config.dpt_channels,
        "reassemble_factors": [4, 2, 1, 0.5],  # TipsDPTReassemble: 4x, 2x, 1x, 1/2x
        "readout_activation": "gelu_pytorch_tanh",  # concat(patch, CLS) -> Linear -> GELU (tanh)
        # Our depth head is the official one: decoder.project -> Linear, no activation between them (checked against
        # the official decoder's outputs in tests/fixtures/reference/dense); transformers' default puts a ReLU there.
        "depth_decoder_activation": "linear",
        "num_depth_bins": config.num_depth_bins,
        "min_depth": config.min_depth,
        "max_depth": config.max_depth,
        "semantic_loss_ignore_index": config.semantic_loss_ignore_index,
    }
    if config.task == "segmentation":
        native["id2label"] = dict(config.id2label)
        native["label2id"] = dict(config.label2id)
    return native


def native_dpt_classes(task: str) -> tuple[type, type]:
    """(`Tipsv2DptConfig`, the task's `Tipsv2DptFor*` class) of the installed transformers; an ImportError naming the
    version needed where it has none."""
    import transformers

    name = NATIVE_DPT_CLASSES[task]
    config_class, model_class = (getattr(transformers, n, None) for n in ("Tipsv2DptConfig", name))
    if config_class is None or model_class is None:
        raise ImportError(
            f"exporting a {task} DPT folder needs transformers >= {NATIVE_DPT_SINCE} (it ships Tipsv2DptConfig and "
            f"{name}); the installed transformers {transformers.__version__} does not."
        )
    return config_class, model_class


def export_to_transformers(
    model_dir: str | os.PathLike,
    output_dir: str | os.PathLike,
    max_shard_size: int | str = DEFAULT_MAX_SHARD_SIZE,
    overwrite: bool = False,
    progress: bool = True,
) -> Path:
    """Write a folder that plain transformers loads with `Tipsv2Model.from_pretrained` (no tips-hf, no remote code),
    or, for a DPT folder, with the task's `Tipsv2DptFor*.from_pretrained` (see `export_dpt_to_transformers`).

    The tensors stream from `model_dir` to the shards one by one (memory stays near one shard). Their names are the
    ones transformers itself writes from a `Tipsv2Model`, taken from its weight-conversion mapping on a model built on
    the meta device: the Hub layout, through our `HUB` table. What cannot be carried is listed in `CANNOT_CARRY` and
    in `tips_hf_export.json` inside the folder.
    """
    import transformers

    model_dir = Path(model_dir)
    config, _, read = open_checkpoint(model_dir)
    if isinstance(config, TipsDPTConfig):
        return export_dpt_to_transformers(model_dir, output_dir, max_shard_size, overwrite, progress)
    native_config = transformers.Tipsv2Config(**config_to_native(config))
    native = meta_model(native_config, transformers.Tipsv2Model)
    saved = _saved_layout(native)
    arch, ctx = arch_from_config(config), context_from_config(config)
    with atomic_folder(output_dir, overwrite) as staging:
        if saved is None:  # a transformers whose saved names we cannot predict: let it save a materialised model
            native.load_state_dict(native_module_state(native, config, read), strict=True, assign=True)
            native.save_pretrained(staging, max_shard_size=max_shard_size)
        else:
            canonical = _hub_names(saved)
            tensors = ((canonical.get(key, key), tensor) for key, tensor in export_tensors(HUB, arch, ctx, read))
            _write_native(staging, saved, tensors, native_config, "Tipsv2Model", max_shard_size, progress, model_dir)
        _export_processor(model_dir, staging, config)
        _record_not_carried(staging, model_dir, CANNOT_CARRY, config)
    return Path(output_dir)


def _write_native(staging: Path, names, tensors, native_config, architecture: str, max_shard_size, progress: bool,
                  model_dir: Path) -> None:
    """Stream `tensors` ((saved name, tensor) pairs) into safetensors shards laid out as `names`, then the native
    config, with the dtype that most weights have (what `save_pretrained` records) and `architecture`."""
    dtypes = collections.Counter()

    def stream():
        for name, tensor in tensors:
            dtypes[tensor.dtype] += tensor.numel()
            yield name, tensor

    write_safetensors(staging, names, stream(), max_shard_size, progress=progress,
                      description="tips-convert to-transformers", source=str(model_dir))
    native_config.dtype = max(dtypes, key=dtypes.get)
    native_config.architectures = [architecture]
    native_config.save_pretrained(staging)


def _record_not_carried(staging: Path, model_dir: Path, items, config) -> None:
    """`tips_hf_export.json`: the source folder and what of it the native classes cannot carry."""
    lost = [item for item in items if _applies(item, config)]
    (staging / "tips_hf_export.json").write_text(
        json.dumps({"source": str(model_dir), "not_carried": lost}, indent=2) + "\n"
    )


def export_dpt_to_transformers(
    model_dir: str | os.PathLike,
    output_dir: str | os.PathLike,
    max_shard_size: int | str = DEFAULT_MAX_SHARD_SIZE,
    overwrite: bool = False,
    progress: bool = True,
) -> Path:
    """A DPT folder (`TipsFor{SemanticSegmentation,DepthEstimation,NormalEstimation}`) as a folder that plain
    transformers (>= 5.14) loads with `Tipsv2DptFor{SemanticSegmentation,DepthEstimation,NormalEstimation}`.

    The tensors stream one by one under the Hub names of google/tipsv2-*-dpt, which the native classes read and write
    (`hub_dpt_layout`, in the spelling transformers saves); the image processor is `Tipsv2DptImageProcessor` at our
    resolution. What cannot be carried is listed in `DPT_CANNOT_CARRY` and in `tips_hf_export.json`.
    """
    import transformers

    model_dir = Path(model_dir)
    config, _, read = open_checkpoint(model_dir)
    if not isinstance(config, TipsDPTConfig):
        raise LayoutError(f"{model_dir / 'config.json'}: model_type {config.model_type!r}, not a DPT folder ('tips_dpt').")
    config_class, model_class = native_dpt_classes(config.task)
    try:
        native_config = config_class(**dpt_config_to_native(config))
    except (LayoutError, ValueError, TypeError) as error:  # ours, or transformers' validation of the native config
        raise LayoutError(f"{model_dir / 'config.json'}: {error}") from None
    layout = hub_dpt_layout(config.task)
    names = _dpt_saved_names(meta_model(native_config, model_class), config, layout, model_dir)
    arch, ctx = arch_from_config(config), context_from_config(config)
    with atomic_folder(output_dir, overwrite) as staging:
        tensors = ((names[key][0], tensor)
                   for key, tensor in export_tensors(layout, arch, ctx, read, towers=("vision", "decoder")))
        _write_native(staging, dict(names.values()), tensors, native_config, model_class.__name__, max_shard_size,
                      progress, model_dir)
        size = config.image_resolution
        transformers.Tipsv2DptImageProcessor(size={"height": size, "width": size}).save_pretrained(staging)
        _record_not_carried(staging, model_dir, DPT_CANNOT_CARRY, config)
    return Path(output_dir)


def _dpt_saved_names(native, config, layout: Layout, model_dir: Path) -> dict[str, tuple[str, torch.Tensor]]:
    """{canonical Hub name of our table: (the name transformers saves, meta tensor of its shape)}.

    The shapes come from our model (the table renames one to one); where the installed transformers tells its saved
    names (`revert_weight_conversion`), both name sets must agree, else the table is out of date and we say which
    names differ rather than write a folder it would not load."""
    from ..modeling import modeling_dense_tips
    from .dpt import DPT_MODEL_CLASSES

    ours = meta_model(config, getattr(modeling_dense_tips, DPT_MODEL_CLASSES[config.task][0])).state_dict()
    arch, ctx = arch_from_config(config), context_from_config(config)
    canonical = dict(export_tensors(layout, arch, ctx, ours.__getitem__, towers=("vision", "decoder")))
    saved = _saved_layout(native, prefixes=("vision_encoder.", f"{DPT_HEADS[config.task]}."))
    if saved is None:  # a transformers whose saved names we cannot predict: the canonical ones, which it reads
        return {key: (key, tensor) for key, tensor in canonical.items()}
    spelled = {canonical_key(name, layout.aliases): name for name in saved}
    if spelled.keys() != canonical.keys():
        extra, missing = sorted(spelled.keys() - canonical.keys()), sorted(canonical.keys() - spelled.keys())
        raise LayoutError(
            f"{model_dir}: transformers' {type(native).__name__} saves other tensor names than the {layout.description} "
            f"table gives (only in transformers: {extra[:5]}; only in the table: {missing[:5]}); tips-hf's table "
            "needs an update for this transformers version."
        )
    for key, tensor in canonical.items():
        if tuple(saved[spelled[key]].shape) != tuple(tensor.shape):
            raise LayoutError(
                f"{model_dir}: {key!r} has shape {tuple(tensor.shape)} in our model, {tuple(saved[spelled[key]].shape)} "
                f"in transformers' {type(native).__name__}; the exported config does not match the folder."
            )
    return {key: (spelled[key], tensor) for key, tensor in canonical.items()}


def native_module_state(native, config, read) -> dict[str, torch.Tensor]:
    """Our model's tensors (`read(our_key)`) named as the installed transformers' `Tipsv2Model` names its modules
    (`attention.attention.query` in 5.14-5.23, `attention.q_proj` from 5.24): a state dict for `native`."""
    module_keys = list(native.state_dict())
    layout = native_layout_for(module_keys)
    spelled = {canonical_key(key, layout.aliases): key for key in module_keys}
    arch, ctx = arch_from_config(config), context_from_config(config)
    return {spelled.get(key, key): tensor for key, tensor in export_tensors(layout, arch, ctx, read)}


def _saved_layout(native, prefixes: tuple[str, ...] = HUB_PREFIXES + ("temperature",)) -> dict | None:
    """{name: meta tensor} as `native.save_pretrained` writes them, or None where transformers cannot tell us (or
    names something outside the Hub layout's `prefixes`)."""
    try:
        from transformers.core_model_loading import revert_weight_conversion

        saved = revert_weight_conversion(native, dict(native.state_dict()))
    except (ImportError, RuntimeError, NotImplementedError, TypeError, ValueError):  # older transformers, etc.
        return None
    return dict(saved) if all(k.startswith(prefixes) for k in saved) else None


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
