# Copyright 2026 The tips-hf authors. Licensed under the Apache License, Version 2.0.
"""Weight layouts of TIPS checkpoints: one key table per foreign format, used for import *and* export.

A table is a list of `KeyRule`s. Each rule relates one or more of our keys to one or more foreign keys, with a
tensor transform for each direction (identity when both sides are single tensors of the same layout). Templates may
contain `{i}` (a block index of the tower the rule belongs to). The same table drives

- the command-line converters (`tips-convert official|scenic|to-transformers`), which stream tensors one by one, and
- `TipsModel.from_pretrained` on foreign folders (transformers-native `Tipsv2`, Hub `google/tipsv2-*` layout; see
  `foreign.py`), installed by `import tips_hf`. None of it travels with a published model.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

import torch

from ..modeling.configuration_tips import HEADS_BY_WIDTH, PRESETS, TipsConfig, TipsTextConfig, TipsVisionConfig

Transform = Callable[[list[torch.Tensor], "LayoutContext"], list[torch.Tensor]]


@dataclass(frozen=True)
class LayoutContext:
    """Architecture facts a transform may need (head counts for per-head Scenic kernels, position grid...)."""

    vision_hidden_size: int
    vision_heads: int
    text_hidden_size: int
    text_heads: int
    grid_size: int


@dataclass(frozen=True)
class KeyRule:
    """`ours` ↔ `theirs`, with `to_ours(theirs_tensors)` and `to_theirs(our_tensors)`.

    `tower` selects which block count expands `{i}` ("vision", "text" or None for no index). `when` restricts the rule
    to some architectures (e.g. SwiGLU vs MLP). `optional_theirs` marks foreign keys that may be absent on import
    (our tensors then keep their initialisation, e.g. the mask token of a Scenic checkpoint).
    """

    ours: tuple[str, ...]
    theirs: tuple[str, ...]
    to_ours: Transform | None = None
    to_theirs: Transform | None = None
    tower: str | None = None
    when: Callable[[Mapping[str, object]], bool] | None = None
    optional_theirs: bool = False
    export: bool = True


@dataclass(frozen=True)
class Layout:
    """A named foreign checkpoint layout: its rules and a description used in error messages."""

    name: str
    description: str
    rules: tuple[KeyRule, ...]
    prefixes: Mapping[str, str] = field(default_factory=dict)  # tower -> prefix prepended to every foreign key
    aliases: tuple[tuple[str, str], ...] = ()  # (regex, replacement): other spellings of foreign keys, read on import


def _as_tuple(keys: str | Iterable[str]) -> tuple[str, ...]:
    return (keys,) if isinstance(keys, str) else tuple(keys)


def _rule(ours, theirs, to_ours=None, to_theirs=None, **kw) -> KeyRule:
    return KeyRule(_as_tuple(ours), _as_tuple(theirs), to_ours, to_theirs, **kw)


def _is_swiglu(arch: Mapping[str, object]) -> bool:
    return arch.get("ffn_type") == "swiglu"


def _is_mlp(arch: Mapping[str, object]) -> bool:
    return arch.get("ffn_type") != "swiglu"


# ---------------------------------------------------------------------------------------------------------------------
# Transforms shared by several tables


def _log_temperature_from_scalar(ts: list[torch.Tensor], ctx: LayoutContext) -> list[torch.Tensor]:
    """A single released temperature initialises both heads (log-parameterised). float64 arithmetic keeps
    export → import round trips bit-exact."""
    value = ts[0].reshape(()).double()
    return [torch.log(value).float().repeat(2)]


def _scalar_from_log_temperature(ts: list[torch.Tensor], ctx: LayoutContext) -> list[torch.Tensor]:
    """Formats with one temperature keep the alt-text head's (the head the released models score with)."""
    return [ts[0][0].double().exp().float().reshape(())]


def _split(n: int, dim: int = 0) -> Transform:
    return lambda ts, ctx: list(ts[0].chunk(n, dim=dim))


def _concat(dim: int = 0) -> Transform:
    return lambda ts, ctx: [torch.cat(ts, dim=dim)]


# ---------------------------------------------------------------------------------------------------------------------
# Official PyTorch layout (google-deepmind/tips pytorch/): `*_vision.npz`, `*_text.npz`; also the Hub layout.

V, T = "vision_model", "text_model"
_VB, _TB = f"{V}.encoder.layers.{{i}}", f"{T}.encoder.layers.{{i}}"

def _renames(ours: str, theirs: str, pairs: Iterable[tuple[str, ...]], **kw) -> tuple[KeyRule, ...]:
    """One-to-one rules `ours + a` ↔ `theirs + b` for each pair (a 1-tuple: the same name on both sides); names
    ending in `*` stand for a module's `weight` and `bias`."""
    rules = []
    for pair in pairs:
        mine, their = pair[0], pair[-1]
        for p in ("weight", "bias") if mine.endswith("*") else ("",):
            rules.append(_rule(ours + mine.replace("*", p), theirs + their.replace("*", p), **kw))
    return tuple(rules)


def _fused(ours: str, theirs: Iterable[str], **kw) -> tuple[KeyRule, ...]:
    """Our fused `ours.{weight,bias}` ↔ the foreign matrices it stacks (dim 0, in order), e.g. q/k/v."""
    theirs = tuple(theirs)
    return tuple(
        _rule(f"{ours}.{p}", tuple(f"{t}.{p}" for t in theirs), _concat(), _split(len(theirs)), **kw)
        for p in ("weight", "bias")
    )


OFFICIAL_VISION_RULES: tuple[KeyRule, ...] = (
    *_renames(
        f"{V}.embeddings.",
        "",
        [("cls_token",), ("register_tokens",), ("mask_token",), ("position_embeddings", "pos_embed")]
        + [("patch_embedding.*", "patch_embed.proj.*")],
    ),
    *_renames(
        f"{_VB}.",
        "blocks.{i}.",
        [("norm1.*",), ("attention.qkv.*", "attn.qkv.*"), ("attention.out_proj.*", "attn.proj.*")]
        + [("layer_scale1.lambda1", "ls1.gamma"), ("norm2.*",), ("layer_scale2.lambda1", "ls2.gamma")],
        tower="vision",
    ),
    *_renames(f"{_VB}.mlp.", "blocks.{i}.mlp.", [("fc1.*",), ("fc2.*",)], tower="vision", when=_is_mlp),
    *_renames(f"{_VB}.mlp.", "blocks.{i}.mlp.", [("gate_up.*", "w12.*"), ("down.*", "w3.*")], tower="vision",
              when=_is_swiglu),
    *_renames(f"{V}.", "", [("layernorm.*", "norm.*")]),
)

OFFICIAL_TEXT_RULES: tuple[KeyRule, ...] = (
    *_renames(f"{T}.embeddings.", "", [("token_embedding.weight",)]),
    *_renames(
        f"{_TB}.",
        "transformer.resblocks.{i}.",
        [("layer_norm1.*", "ln_1.*"), ("self_attn.qkv.weight", "attn.in_proj_weight")]
        + [("self_attn.qkv.bias", "attn.in_proj_bias"), ("self_attn.out_proj.*", "attn.out_proj.*")]
        + [("layer_norm2.*", "ln_2.*"), ("mlp.fc1.*", "mlp.c_fc.*"), ("mlp.fc2.*", "mlp.c_proj.*")],
        tower="text",
    ),
    *_renames(f"{T}.", "", [("final_layer_norm.*", "ln_final.*")]),
)


def _temperature_rule(theirs: str, tower: str) -> KeyRule:
    """The released single temperature (optional: not every export carries it)."""
    return _rule(
        "log_temperature",
        theirs,
        _log_temperature_from_scalar,
        _scalar_from_log_temperature,
        tower=tower,
        optional_theirs=True,
    )


OFFICIAL = Layout(
    "official",
    "official PyTorch TIPS checkpoint (google-deepmind/tips, pytorch/)",
    OFFICIAL_VISION_RULES + OFFICIAL_TEXT_RULES + (_temperature_rule("temperature", "text"),),
)
HUB = Layout(
    "hub",
    "Hub layout of google/tipsv2-* / google/tipsv1-* (official keys prefixed vision_encoder. / text_encoder.)",
    OFFICIAL_VISION_RULES + OFFICIAL_TEXT_RULES + (_temperature_rule("temperature", "model"),),
    prefixes={"vision": "vision_encoder.", "text": "text_encoder."},
    # transformers' Tipsv2Model.save_pretrained writes the vision MLP as c_fc/c_proj (its reverse renaming is shared
    # with the text tower); the released folders use the official fc1/fc2.
    aliases=(
        (r"^(vision_encoder\.blocks\.\d+\.mlp\.)c_fc\.", r"\1fc1."),
        (r"^(vision_encoder\.blocks\.\d+\.mlp\.)c_proj\.", r"\1fc2."),
    ),
)


# ---------------------------------------------------------------------------------------------------------------------
# transformers-native `Tipsv2Model` (model_type "tipsv2", transformers >= 5.14): separate q/k/v matrices; SwiGLU as
# gate/up/down projections since transformers 5.24, as one fused `weights_in` (gate first) + `weights_out` before.

_NV, _NT = f"{V}.encoder.layer.{{i}}", f"{T}.encoder.layers.{{i}}"


def _native_swiglu_rules(fused: bool) -> tuple[KeyRule, ...]:
    swiglu = dict(tower="vision", when=_is_swiglu)
    if fused:  # transformers 5.14-5.23 (Dinov2-style SwiGLU module)
        gate_up = _renames(f"{_VB}.mlp.", f"{_NV}.mlp.", [("gate_up.*", "weights_in.*")], **swiglu)
    else:
        gate_up = _fused(f"{_VB}.mlp.gate_up", (f"{_NV}.mlp.gate_proj", f"{_NV}.mlp.up_proj"), **swiglu)
    return gate_up + _renames(f"{_VB}.mlp.", f"{_NV}.mlp.", [("down.*", "down_proj.*")], **swiglu)


_NATIVE_COMMON_RULES: tuple[KeyRule, ...] = (
    *_renames(
        f"{V}.embeddings.",
        f"{V}.embeddings.",
        [("cls_token",), ("register_tokens",), ("mask_token",), ("position_embeddings",)]
        + [("patch_embedding.*", "patch_embeddings.projection.*")],
    ),
    *_renames(
        f"{_VB}.",
        f"{_NV}.",
        [("norm1.*",), ("attention.out_proj.*", "attention.o_proj.*"), ("layer_scale1.lambda1",), ("norm2.*",)]
        + [("layer_scale2.lambda1",)],
        tower="vision",
    ),
    *_fused(f"{_VB}.attention.qkv", (f"{_NV}.attention.{x}_proj" for x in "qkv"), tower="vision"),
    *_renames(f"{_VB}.mlp.", f"{_NV}.mlp.", [("fc1.*",), ("fc2.*",)], tower="vision", when=_is_mlp),
    *_renames(f"{V}.", f"{V}.", [("layernorm.*",)]),
    *_renames(f"{T}.", f"{T}.", [("embeddings.token_embedding.weight",)]),
    *_renames(
        f"{_TB}.",
        f"{_NT}.",
        [("layer_norm1.*",), ("self_attn.out_proj.*",), ("layer_norm2.*",), ("mlp.fc1.*",), ("mlp.fc2.*",)],
        tower="text",
    ),
    *_fused(f"{_TB}.self_attn.qkv", (f"{_NT}.self_attn.{x}_proj" for x in "qkv"), tower="text"),
    *_renames(f"{T}.", f"{T}.", [("final_layer_norm.*",)]),
    _temperature_rule("temperature", "model"),
)

# Module names of transformers 5.14-5.23 (in folders saved with `save_original_format=False`), read on import.
_NATIVE_ALIASES = (
    (r"(\.encoder\.layer\.\d+\.attention\.)attention\.query\.", r"\1q_proj."),
    (r"(\.encoder\.layer\.\d+\.attention\.)attention\.key\.", r"\1k_proj."),
    (r"(\.encoder\.layer\.\d+\.attention\.)attention\.value\.", r"\1v_proj."),
    (r"(\.encoder\.layer\.\d+\.attention\.)output\.dense\.", r"\1o_proj."),
    (r"(\.encoder\.layer\.\d+\.mlp\.)weights_out\.", r"\1down_proj."),
)
NATIVE = Layout(
    "native",
    "transformers-native Tipsv2Model folder (model_type 'tipsv2')",
    _NATIVE_COMMON_RULES + _native_swiglu_rules(fused=False),
    aliases=_NATIVE_ALIASES,
)
NATIVE_FUSED_SWIGLU = Layout(
    "native",
    "transformers-native Tipsv2Model folder (model_type 'tipsv2', SwiGLU module names of transformers < 5.24)",
    _NATIVE_COMMON_RULES + _native_swiglu_rules(fused=True),
    aliases=_NATIVE_ALIASES,
)


def native_layout_for(keys: Iterable[str]) -> Layout:
    """The native layout whose SwiGLU names match these (module or saved) keys."""
    return NATIVE_FUSED_SWIGLU if any(".mlp.weights_in." in k for k in keys) else NATIVE


def config_from_native(native: Mapping) -> dict:
    """`TipsConfig` keyword arguments from a transformers-native `Tipsv2Config` dict (as in its config.json)."""
    v, t = dict(native.get("vision_config") or {}), dict(native.get("text_config") or {})
    hidden = v.get("hidden_size", 768)
    swiglu = bool(v.get("use_swiglu_ffn", False))
    mlp = int(hidden * v.get("mlp_ratio", 4))
    if swiglu:
        mlp = (int(mlp * 2 / 3) + 7) // 8 * 8
    image_size = v.get("image_size", 448)
    image_size = image_size[0] if isinstance(image_size, (list, tuple)) else image_size
    patch = v.get("patch_size", 14)
    patch = patch[0] if isinstance(patch, (list, tuple)) else patch
    vision = {
        "hidden_size": hidden,
        "num_hidden_layers": v.get("num_hidden_layers", 12),
        "num_attention_heads": v.get("num_attention_heads", 12),
        "intermediate_size": mlp,
        "ffn_type": "swiglu" if swiglu else "mlp",
        "hidden_act": v.get("hidden_act", "gelu"),
        "layer_norm_eps": v.get("layer_norm_eps", 1e-6),
        "image_size": image_size,
        "patch_size": patch,
        "num_channels": v.get("num_channels", 3),
        "qkv_bias": v.get("qkv_bias", True),
        "layerscale_value": v.get("layerscale_value", 1.0),
        "num_register_tokens": v.get("num_register_tokens", 1),
        "drop_path_rate": v.get("drop_path_rate", 0.0),
        "attention_dropout": v.get("attention_probs_dropout_prob", 0.0),
        "initializer_range": v.get("initializer_range", 0.02),
    }
    # Every field of our text config, read where the native one has it under the same name.
    fields = [k for k, hint in TipsTextConfig.__annotations__.items() if "ClassVar" not in str(hint)]
    text = {k: t[k] for k in fields if k in t}
    out = {"vision_config": vision, "text_config": text}
    if "temperature_init_value" in native:
        out["temperature_init_value"] = native["temperature_init_value"]
    return out


# ---------------------------------------------------------------------------------------------------------------------
# DPT models (`TipsFor{SemanticSegmentation,DepthEstimation,NormalEstimation}`) in the Hub layout of
# google/tipsv2-*-dpt, which transformers' native `Tipsv2Dpt*` classes read and `save_pretrained` writes
# (transformers >= 5.14): the vision tower under `vision_encoder.` in the official names (as HUB), the decoder of one
# task under `{task}_head.` in the official module names (`residual_unit` is our `skip_unit`), its per-pixel layer
# as `{task}_head.{task}_head`.

DPT_HEADS = {"segmentation": "segmentation_head", "depth": "depth_head", "normals": "normals_head"}


def _dpt_decoder_rules(head: str) -> tuple[KeyRule, ...]:
    pairs: list[tuple[str, ...]] = [("project.*",)]
    for i in range(4):
        pairs += [(f"reassemble.readout_projects.{i}.*",), (f"reassemble.out_projections.{i}.*",)]
        pairs += [(f"convs.{i}.weight",), (f"fusion_blocks.{i}.out_conv.*",)]
        pairs += [(f"fusion_blocks.{i}.main_unit.conv{c}.weight",) for c in (1, 2)]
        if i > 0:  # the coarsest level has no skip input
            pairs += [(f"fusion_blocks.{i}.skip_unit.conv{c}.weight", f"fusion_blocks.{i}.residual_unit.conv{c}.weight")
                      for c in (1, 2)]
        if i != 2:  # level 2 keeps its resolution (an Identity, no weights)
            pairs += [(f"reassemble.resize_layers.{i}.*",)]
    return _renames("decoder.", "", pairs, tower="decoder") + _renames("", "", [("head.*", f"{head}.*")],
                                                                        tower="decoder")


def hub_dpt_layout(task: str) -> Layout:
    """The Hub / native DPT layout of one task's folder (`task` as `TipsDPTConfig.task`)."""
    if task not in DPT_HEADS:
        raise LayoutError(f"DPT task must be one of {tuple(DPT_HEADS)}, got {task!r}.")
    head = DPT_HEADS[task]
    return Layout(
        f"hub-dpt-{task}",
        f"Hub layout of google/tipsv2-*-dpt {task} weights (vision_encoder. + {head}.), as transformers' Tipsv2Dpt* "
        "classes save them",
        OFFICIAL_VISION_RULES + _dpt_decoder_rules(head),
        prefixes={"vision": "vision_encoder.", "decoder": f"{head}."},
        aliases=HUB.aliases,
    )


# ---------------------------------------------------------------------------------------------------------------------
# Architecture inference: read a TipsConfig from tensor shapes (+ head counts where the weights cannot tell them)


class TensorReader(Protocol):
    """What the inference and import functions need from a checkpoint: key names, shapes and lazy tensors."""

    path: object

    def keys(self) -> Iterable[str]: ...

    def __contains__(self, key: str) -> bool: ...

    def shape(self, key: str) -> tuple[int, ...]: ...

    def read(self, key: str) -> torch.Tensor: ...


def count_blocks(keys, pattern: str, source: str) -> int:
    """Number of blocks in `keys` whose names match `pattern` (with one `(\\d+)` group); indices must be 0..n-1."""
    indices = {int(m.group(1)) for k in keys if (m := re.match(pattern, k))}
    if not indices:
        raise LayoutError(f"{source}: no transformer blocks found (no key matches {pattern!r}).")
    if indices != set(range(len(indices))):
        missing = sorted(set(range(max(indices) + 1)) - indices)
        raise LayoutError(f"{source}: blocks {missing} are missing (found indices up to {max(indices)}).")
    return len(indices)


def require(reader: TensorReader, key: str, ndim: int) -> tuple[int, ...]:
    if key not in reader:
        raise LayoutError(f"{reader.path}: missing key {key!r}; is this an official TIPS checkpoint?")
    shape = reader.shape(key)
    if len(shape) != ndim:
        raise LayoutError(f"{reader.path}: key {key!r} has shape {shape}, expected {ndim} dimensions.")
    return shape


def resolve_heads(width: int, flag: int | None, tower: str, preset_heads: int | None) -> int:
    """Heads from the flag, the preset, or the released-width table, in that order; a flag and a preset must agree."""
    if flag is not None and preset_heads is not None and flag != preset_heads:
        raise LayoutError(f"--{tower}-heads {flag} disagrees with the preset ({preset_heads} {tower} heads).")
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
    vision: TensorReader,
    text: TensorReader | None,
    preset: str | None = None,
    vision_heads: int | None = None,
    text_heads: int | None = None,
    image_resolution: int | None = None,
    max_text_length: int = 64,
) -> TipsConfig:
    """Read the architecture from the array shapes (depth, width, FFN type and width, position grid, vocabulary).

    With `text=None` (a vision tower alone) the text config is a placeholder of the same width: use `.vision_config`.
    """
    src_v, src_t = str(vision.path), str(text.path) if text is not None else None
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
    if text is None:
        vocab, text_width, text_depth, text_mlp = 32000, width, None, 4 * width
    else:
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
        if text_depth is None:
            text_depth = reference.text_config.num_hidden_layers
        if reference.text_config.num_hidden_layers != text_depth:
            raise LayoutError(
                f"{src_t} does not match preset {preset!r}: {text_depth} text layers, the preset has "
                f"{reference.text_config.num_hidden_layers}."
            )
        preset_heads = {
            "vision": reference.vision_config.num_attention_heads,
            "text": reference.text_config.num_attention_heads,
        }
        overrides = dict(preset=preset, image_resolution=PRESETS[preset].resolution)
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
        num_hidden_layers=text_depth or 12,
        num_attention_heads=(
            resolve_heads(text_width, text_heads, "text", preset_heads["text"])
            if text is not None
            else preset_heads["text"] or vision_config.num_attention_heads
        ),
        max_position_embeddings=max_text_length,
    )
    if image_resolution is not None:
        overrides["image_resolution"] = image_resolution
    if text is not None and "temperature" in text:
        overrides.update(temperature_overrides(float(text.read("temperature").reshape(()))))
    config = TipsConfig(vision_config=vision_config, text_config=text_config, **overrides)
    return config if preset is not None else with_matched_preset(config, image_resolution)


def _architecture(config: TipsConfig) -> tuple:
    v, t = config.vision_config, config.text_config
    return (
        v.hidden_size, v.num_hidden_layers, v.num_attention_heads, v.intermediate_size, v.ffn_type, v.patch_size,
        v.position_grid_size, t.hidden_size, t.num_hidden_layers, t.num_attention_heads, t.intermediate_size,
        t.vocab_size,
    )


def with_matched_preset(config: TipsConfig, image_resolution: int | None = None) -> TipsConfig:
    """Name the released checkpoint a config's architecture belongs to (`config.preset`, and its image resolution
    unless one is given), so that converted folders carry their origin; left as is when none or several match."""
    matches = [
        name
        for name in PRESETS
        if _architecture(TipsConfig.from_preset(name)) == _architecture(config)
        and image_resolution in (None, PRESETS[name].resolution)
    ]
    if len(matches) == 1:
        config.preset = matches[0]
        config.image_resolution = image_resolution or PRESETS[matches[0]].resolution
    return config


def temperature_overrides(value: float) -> dict[str, float]:
    """Config fields that carry a checkpoint's softmax temperature exactly: the clamp range is widened to hold it."""
    if not value > 0:
        raise LayoutError(f"the checkpoint's temperature is {value}; it must be positive (logits = cosine / T).")
    return {"temperature_init_value": value, "temperature_min": min(1e-3, value), "temperature_max": max(1.0, value)}




# ---------------------------------------------------------------------------------------------------------------------
# Engine


def _tower_of(rule: KeyRule) -> str:
    if rule.tower is not None:
        return rule.tower
    return "vision" if rule.ours[0].startswith(V) else "text"


def expand_rules(
    layout: Layout, arch: Mapping[str, object], towers: Iterable[str] = ("vision", "text", "model")
) -> list[tuple[tuple[str, ...], tuple[str, ...], KeyRule]]:
    """Concrete (our keys, foreign keys, rule) triples for an architecture.

    `arch` holds `vision_layers`, `text_layers` and `ffn_type`.
    """
    towers = set(towers)
    out = []
    for rule in layout.rules:
        tower = _tower_of(rule)
        if tower not in towers or (rule.when is not None and not rule.when(arch)):
            continue
        prefix = layout.prefixes.get(tower, "")
        indexed = any("{i}" in k for k in rule.ours)
        indices = range(int(arch[f"{tower}_layers"])) if indexed else [None]
        for i in indices:
            ours = tuple(k.format(i=i) if i is not None else k for k in rule.ours)
            theirs = tuple(prefix + (k.format(i=i) if i is not None else k) for k in rule.theirs)
            out.append((ours, theirs, rule))
    return out


def canonical_key(key: str, aliases: Iterable[tuple[str, str]]) -> str:
    """A foreign key under its canonical spelling (each `(regex, replacement)` of a layout's aliases applied)."""
    for pattern, replacement in aliases:
        key = re.sub(pattern, replacement, key)
    return key


class LayoutError(ValueError):
    """A checkpoint does not match the layout it was read as; the message names the key."""


def import_tensors(
    layout: Layout,
    arch: Mapping[str, object],
    ctx: LayoutContext,
    available: Iterable[str],
    read: Callable[[str], torch.Tensor],
    expected_shapes: Mapping[str, tuple[int, ...]],
    source: str = "checkpoint",
    towers: Iterable[str] = ("vision", "text", "model"),
    ignore: Iterable[str] = (),
) -> Iterable[tuple[str, torch.Tensor]]:
    """Yield (our key, tensor) pairs, reading foreign tensors lazily through `read`.

    Checks before reading anything: every required foreign key is present and no foreign key is left unused
    (except `ignore`). Each produced tensor is checked against `expected_shapes` (our model's), and a mismatch is
    reported with the foreign key and the shape it should have had.
    """
    available = set(available)
    triples = expand_rules(layout, arch, towers)
    used = set(ignore)
    missing = []
    for _ours, theirs, rule in triples:
        present = [k in available for k in theirs]
        if not all(present) and not rule.optional_theirs:
            missing += [k for k, p in zip(theirs, present) if not p]
        used.update(theirs)
    if missing:
        raise LayoutError(
            f"{source}: missing key(s) for the {layout.description}: {', '.join(sorted(missing)[:8])}"
            + (f" (+{len(missing) - 8} more)" if len(missing) > 8 else "")
        )
    extra = sorted(available - used)
    if extra:
        raise LayoutError(
            f"{source}: unexpected key(s) for the {layout.description}: {', '.join(extra[:8])}"
            + (f" (+{len(extra) - 8} more)" if len(extra) > 8 else "")
            + ". Is this the right file, or a different architecture?"
        )
    for ours, theirs, rule in triples:
        if not all(k in available for k in theirs):
            continue  # optional and absent: our initialisation stays
        inputs = [read(k) for k in theirs]
        outputs = rule.to_ours(inputs, ctx) if rule.to_ours else inputs
        foreign_names = theirs if len(theirs) == len(ours) else (" + ".join(theirs),) * len(ours)
        for key, tensor, foreign in zip(ours, outputs, foreign_names):
            want = tuple(expected_shapes[key])
            if tuple(tensor.shape) != want:
                hint = _foreign_shape_hint(rule, ours, want, ctx, foreign, inputs)
                raise LayoutError(f"{source}: {hint}")
            yield key, tensor


def _foreign_shape_hint(rule, ours, want, ctx, foreign, inputs) -> str:
    """Describe a shape mismatch in the foreign file's terms: which key, which shape it has, which it should have."""
    if rule.to_theirs is None and len(rule.theirs) == 1:
        return f"key {foreign!r} has shape {tuple(inputs[0].shape)}, expected {want}"
    try:
        wanted = rule.to_theirs([torch.empty(want, device="meta")], ctx) if len(ours) == 1 else None
    except Exception:  # noqa: BLE001 - the hint is best effort; the error below still names the key
        wanted = None
    shapes = ", ".join(f"{k!r} {tuple(t.shape)}" for k, t in zip(rule.theirs, inputs))
    if wanted is not None:
        return f"wrong shape for {shapes}; expected {', '.join(str(tuple(t.shape)) for t in wanted)} (from {ours[0]})"
    return f"wrong shape for {shapes}; they must produce {ours[0]} of shape {want}"


def export_tensors(
    layout: Layout,
    arch: Mapping[str, object],
    ctx: LayoutContext,
    read: Callable[[str], torch.Tensor],
    towers: Iterable[str] = ("vision", "text", "model"),
) -> Iterable[tuple[str, torch.Tensor]]:
    """Yield (foreign key, tensor) pairs from our tensors, read lazily through `read`."""
    for ours, theirs, rule in expand_rules(layout, arch, towers):
        if not rule.export:
            continue
        inputs = [read(k) for k in ours]
        outputs = rule.to_theirs(inputs, ctx) if rule.to_theirs else inputs
        yield from zip(theirs, outputs)


def arch_from_config(config) -> dict[str, object]:
    """The `arch` mapping of `expand_rules` for a `TipsConfig` (or a `TipsDPTConfig`: a vision tower, no text)."""
    text = getattr(config, "text_config", None)
    return {
        "vision_layers": config.vision_config.num_hidden_layers,
        "text_layers": text.num_hidden_layers if text is not None else 0,
        "ffn_type": config.vision_config.ffn_type,
    }


def context_from_config(config) -> LayoutContext:
    v = config.vision_config
    t = getattr(config, "text_config", None) or v  # no text tower (DPT): its fields are never read
    return LayoutContext(
        v.hidden_size, v.num_attention_heads, t.hidden_size, t.num_attention_heads, v.position_grid_size
    )


def grid_side(num_positions: int, key: str) -> int:
    """Side of a square position grid with `num_positions` entries; a clear error if it is not square."""
    side = math.isqrt(num_positions)
    if side * side != num_positions:
        raise LayoutError(f"{key}: {num_positions} patch positions do not form a square grid.")
    return side


__all__ = [
    "DPT_HEADS",
    "HUB",
    "NATIVE",
    "NATIVE_FUSED_SWIGLU",
    "OFFICIAL",
    "KeyRule",
    "Layout",
    "LayoutContext",
    "LayoutError",
    "TensorReader",
    "arch_from_config",
    "canonical_key",
    "config_from_native",
    "context_from_config",
    "count_blocks",
    "expand_rules",
    "export_tensors",
    "grid_side",
    "hub_dpt_layout",
    "import_tensors",
    "infer_official_config",
    "temperature_overrides",
]
