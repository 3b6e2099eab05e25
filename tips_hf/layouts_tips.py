# Copyright 2026 The tips-hf authors. Licensed under the Apache License, Version 2.0.
"""Weight layouts of TIPS checkpoints: one key table per foreign format, used for import *and* export.

A table is a list of `KeyRule`s. Each rule relates one or more of our keys to one or more foreign keys, with a
tensor transform for each direction (identity when both sides are single tensors of the same layout). Templates may
contain `{i}` (a block index of the tower the rule belongs to). The same table drives

- the command-line converters (`tips-convert official|scenic|to-transformers`), which stream tensors one by one, and
- `TipsModel.from_pretrained` on foreign folders (transformers-native `Tipsv2`, Hub `google/tipsv2-*` layout).

Self-contained (torch only) so that it travels with the remote-code files.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

import torch

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
    """A single released temperature initialises both heads (log-parameterised)."""
    return [torch.log(ts[0].float().reshape(())).repeat(2)]


def _scalar_from_log_temperature(ts: list[torch.Tensor], ctx: LayoutContext) -> list[torch.Tensor]:
    """Formats with one temperature keep the alt-text head's (the head the released models score with)."""
    return [ts[0].float().exp()[0].reshape(())]


def _split(n: int, dim: int = 0) -> Transform:
    return lambda ts, ctx: list(ts[0].chunk(n, dim=dim))


def _concat(dim: int = 0) -> Transform:
    return lambda ts, ctx: [torch.cat(ts, dim=dim)]


# ---------------------------------------------------------------------------------------------------------------------
# Official PyTorch layout (google-deepmind/tips pytorch/): `*_vision.npz`, `*_text.npz`; also the Hub layout.

V, T = "vision_model", "text_model"
_VB, _TB = f"{V}.encoder.layers.{{i}}", f"{T}.encoder.layers.{{i}}"

OFFICIAL_VISION_RULES: tuple[KeyRule, ...] = (
    _rule(f"{V}.embeddings.cls_token", "cls_token"),
    _rule(f"{V}.embeddings.register_tokens", "register_tokens"),
    _rule(f"{V}.embeddings.mask_token", "mask_token"),
    _rule(f"{V}.embeddings.position_embeddings", "pos_embed"),
    _rule(f"{V}.embeddings.patch_embedding.weight", "patch_embed.proj.weight"),
    _rule(f"{V}.embeddings.patch_embedding.bias", "patch_embed.proj.bias"),
    *(
        _rule(f"{_VB}.{ours}", f"blocks.{{i}}.{theirs}", tower="vision")
        for ours, theirs in (
            ("norm1.weight", "norm1.weight"),
            ("norm1.bias", "norm1.bias"),
            ("attention.qkv.weight", "attn.qkv.weight"),
            ("attention.qkv.bias", "attn.qkv.bias"),
            ("attention.out_proj.weight", "attn.proj.weight"),
            ("attention.out_proj.bias", "attn.proj.bias"),
            ("layer_scale1.lambda1", "ls1.gamma"),
            ("norm2.weight", "norm2.weight"),
            ("norm2.bias", "norm2.bias"),
            ("layer_scale2.lambda1", "ls2.gamma"),
        )
    ),
    *(
        _rule(f"{_VB}.mlp.{ours}", f"blocks.{{i}}.mlp.{theirs}", tower="vision", when=_is_mlp)
        for ours, theirs in (
            ("fc1.weight", "fc1.weight"),
            ("fc1.bias", "fc1.bias"),
            ("fc2.weight", "fc2.weight"),
            ("fc2.bias", "fc2.bias"),
        )
    ),
    *(
        _rule(f"{_VB}.mlp.{ours}", f"blocks.{{i}}.mlp.{theirs}", tower="vision", when=_is_swiglu)
        for ours, theirs in (
            ("gate_up.weight", "w12.weight"),
            ("gate_up.bias", "w12.bias"),
            ("down.weight", "w3.weight"),
            ("down.bias", "w3.bias"),
        )
    ),
    _rule(f"{V}.layernorm.weight", "norm.weight"),
    _rule(f"{V}.layernorm.bias", "norm.bias"),
)

OFFICIAL_TEXT_RULES: tuple[KeyRule, ...] = (
    _rule(f"{T}.embeddings.token_embedding.weight", "token_embedding.weight"),
    *(
        _rule(f"{_TB}.{ours}", f"transformer.resblocks.{{i}}.{theirs}", tower="text")
        for ours, theirs in (
            ("layer_norm1.weight", "ln_1.weight"),
            ("layer_norm1.bias", "ln_1.bias"),
            ("self_attn.qkv.weight", "attn.in_proj_weight"),
            ("self_attn.qkv.bias", "attn.in_proj_bias"),
            ("self_attn.out_proj.weight", "attn.out_proj.weight"),
            ("self_attn.out_proj.bias", "attn.out_proj.bias"),
            ("layer_norm2.weight", "ln_2.weight"),
            ("layer_norm2.bias", "ln_2.bias"),
            ("mlp.fc1.weight", "mlp.c_fc.weight"),
            ("mlp.fc1.bias", "mlp.c_fc.bias"),
            ("mlp.fc2.weight", "mlp.c_proj.weight"),
            ("mlp.fc2.bias", "mlp.c_proj.bias"),
        )
    ),
    _rule(f"{T}.final_layer_norm.weight", "ln_final.weight"),
    _rule(f"{T}.final_layer_norm.bias", "ln_final.bias"),
    _rule(
        "log_temperature",
        "temperature",
        _log_temperature_from_scalar,
        _scalar_from_log_temperature,
        optional_theirs=True,
    ),
)

OFFICIAL = Layout(
    "official",
    "official PyTorch TIPS checkpoint (google-deepmind/tips, pytorch/)",
    OFFICIAL_VISION_RULES + OFFICIAL_TEXT_RULES,
)
HUB = Layout(
    "hub",
    "Hub layout of google/tipsv2-* / google/tipsv1-* (official keys prefixed vision_encoder. / text_encoder.)",
    OFFICIAL_VISION_RULES + OFFICIAL_TEXT_RULES,
    prefixes={"vision": "vision_encoder.", "text": "text_encoder."},
)


# ---------------------------------------------------------------------------------------------------------------------
# transformers-native `Tipsv2Model` (model_type "tipsv2", transformers >= 5.14): separate q/k/v and gate/up matrices.

_NV, _NT = f"{V}.encoder.layer.{{i}}", f"{T}.encoder.layers.{{i}}"

NATIVE_RULES: tuple[KeyRule, ...] = (
    *(
        _rule(f"{V}.embeddings.{k}", f"{V}.embeddings.{k}")
        for k in ("cls_token", "register_tokens", "mask_token", "position_embeddings")
    ),
    _rule(f"{V}.embeddings.patch_embedding.weight", f"{V}.embeddings.patch_embeddings.projection.weight"),
    _rule(f"{V}.embeddings.patch_embedding.bias", f"{V}.embeddings.patch_embeddings.projection.bias"),
    *(
        _rule(f"{_VB}.{ours}", f"{_NV}.{theirs}", tower="vision")
        for ours, theirs in (
            ("norm1.weight", "norm1.weight"),
            ("norm1.bias", "norm1.bias"),
            ("attention.out_proj.weight", "attention.o_proj.weight"),
            ("attention.out_proj.bias", "attention.o_proj.bias"),
            ("layer_scale1.lambda1", "layer_scale1.lambda1"),
            ("norm2.weight", "norm2.weight"),
            ("norm2.bias", "norm2.bias"),
            ("layer_scale2.lambda1", "layer_scale2.lambda1"),
        )
    ),
    *(
        _rule(
            f"{_VB}.attention.qkv.{p}",
            tuple(f"{_NV}.attention.{x}_proj.{p}" for x in "qkv"),
            _concat(),
            _split(3),
            tower="vision",
        )
        for p in ("weight", "bias")
    ),
    *(
        _rule(f"{_VB}.mlp.{k}", f"{_NV}.mlp.{k}", tower="vision", when=_is_mlp)
        for k in ("fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias")
    ),
    *(
        _rule(
            f"{_VB}.mlp.gate_up.{p}",
            (f"{_NV}.mlp.gate_proj.{p}", f"{_NV}.mlp.up_proj.{p}"),
            _concat(),
            _split(2),
            tower="vision",
            when=_is_swiglu,
        )
        for p in ("weight", "bias")
    ),
    *(
        _rule(f"{_VB}.mlp.down.{p}", f"{_NV}.mlp.down_proj.{p}", tower="vision", when=_is_swiglu)
        for p in ("weight", "bias")
    ),
    _rule(f"{V}.layernorm.weight", f"{V}.layernorm.weight"),
    _rule(f"{V}.layernorm.bias", f"{V}.layernorm.bias"),
    _rule(f"{T}.embeddings.token_embedding.weight", f"{T}.embeddings.token_embedding.weight"),
    *(
        _rule(f"{_TB}.{k}", f"{_NT}.{k}", tower="text")
        for k in (
            "layer_norm1.weight",
            "layer_norm1.bias",
            "self_attn.out_proj.weight",
            "self_attn.out_proj.bias",
            "layer_norm2.weight",
            "layer_norm2.bias",
            "mlp.fc1.weight",
            "mlp.fc1.bias",
            "mlp.fc2.weight",
            "mlp.fc2.bias",
        )
    ),
    *(
        _rule(
            f"{_TB}.self_attn.qkv.{p}",
            tuple(f"{_NT}.self_attn.{x}_proj.{p}" for x in "qkv"),
            _concat(),
            _split(3),
            tower="text",
        )
        for p in ("weight", "bias")
    ),
    _rule(f"{T}.final_layer_norm.weight", f"{T}.final_layer_norm.weight"),
    _rule(f"{T}.final_layer_norm.bias", f"{T}.final_layer_norm.bias"),
    _rule(
        "log_temperature",
        "temperature",
        _log_temperature_from_scalar,
        _scalar_from_log_temperature,
        optional_theirs=True,
    ),
)

NATIVE = Layout("native", "transformers-native Tipsv2Model folder (model_type 'tipsv2')", NATIVE_RULES)


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
    """`Tipsv2Config` keyword arguments equivalent to a `TipsConfig` (see `NATIVE_CANNOT_CARRY` for what is lost)."""
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
    text = {
        k: t[k]
        for k in (
            "vocab_size",
            "hidden_size",
            "intermediate_size",
            "num_hidden_layers",
            "num_attention_heads",
            "max_position_embeddings",
            "hidden_act",
            "layer_norm_eps",
            "attention_dropout",
            "pad_token_id",
            "scale_sqrt_depth",
            "pooling_epsilon",
            "initializer_range",
        )
        if k in t
    }
    out = {"vision_config": vision, "text_config": text}
    if "temperature_init_value" in native:
        out["temperature_init_value"] = native["temperature_init_value"]
    return out


NATIVE_CANNOT_CARRY = (
    "the synthetic-caption head's own temperature (Tipsv2Model has one `temperature`; the alt-text head's is kept)",
    "the temperature clamp range (temperature_min/max) and `preset`/`image_resolution` metadata",
    "interpolate_antialias=False (Tipsv2 always antialiases)",
)


# ---------------------------------------------------------------------------------------------------------------------
# Engine


def _tower_of(rule: KeyRule) -> str:
    if rule.tower is not None:
        return rule.tower
    return "vision" if rule.ours[0].startswith(V) else "text"


def expand_rules(
    layout: Layout, arch: Mapping[str, object], towers: Iterable[str] = ("vision", "text")
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
        indices = range(int(arch[f"{rule.tower}_layers"])) if rule.tower else [None]
        for i in indices:
            ours = tuple(k.format(i=i) if i is not None else k for k in rule.ours)
            theirs = tuple(prefix + (k.format(i=i) if i is not None else k) for k in rule.theirs)
            out.append((ours, theirs, rule))
    return out


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
    towers: Iterable[str] = ("vision", "text"),
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
        for key, tensor, foreign in zip(ours, outputs, theirs * len(ours) if len(theirs) == 1 else theirs):
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
    towers: Iterable[str] = ("vision", "text"),
) -> Iterable[tuple[str, torch.Tensor]]:
    """Yield (foreign key, tensor) pairs from our tensors, read lazily through `read`."""
    for ours, theirs, rule in expand_rules(layout, arch, towers):
        if not rule.export:
            continue
        inputs = [read(k) for k in ours]
        outputs = rule.to_theirs(inputs, ctx) if rule.to_theirs else inputs
        yield from zip(theirs, outputs)


def arch_from_config(config) -> dict[str, object]:
    """The `arch` mapping of `expand_rules` for a `TipsConfig`."""
    return {
        "vision_layers": config.vision_config.num_hidden_layers,
        "text_layers": config.text_config.num_hidden_layers,
        "ffn_type": config.vision_config.ffn_type,
    }


def context_from_config(config) -> LayoutContext:
    v, t = config.vision_config, config.text_config
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
    "HUB",
    "NATIVE",
    "NATIVE_CANNOT_CARRY",
    "config_from_native",
    "config_to_native",
    "OFFICIAL",
    "KeyRule",
    "Layout",
    "LayoutContext",
    "LayoutError",
    "arch_from_config",
    "context_from_config",
    "expand_rules",
    "export_tensors",
    "grid_side",
    "import_tensors",
]
