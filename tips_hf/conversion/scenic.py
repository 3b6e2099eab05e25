"""Import of the official JAX/Scenic TIPS checkpoints (flattened flax params in `*_vision.npz`, `*_text.npz`).

The Scenic model differs from the PyTorch one in ways the converted TipsModel reproduces exactly:
- its two CLS tokens get no position embedding (ours: a zero CLS position),
- no LayerScale (ours: LayerScale vectors of ones) and no mask token (ours: zeros, used only by MIM training),
- flax LayerNorm (eps 1e-6) in both towers and tanh-approximated GELU (`jax.nn.gelu` default) in the vision MLP,
- inputs whose sides are not multiples of 14 are centre-padded with zeros (TipsImageProcessor(do_resize=False)).
"""

from __future__ import annotations

import os

import torch

from ..modeling.configuration_tips import PRESETS, TipsConfig, TipsTextConfig, TipsVisionConfig
from .layouts import (
    _TB,
    _VB,
    KeyRule,
    Layout,
    LayoutError,
    T,
    TensorReader,
    V,
    _is_mlp,
    _is_swiglu,
    _log_temperature_from_scalar,
    _rule,
    count_blocks,
    require,
    temperature_overrides,
)
from .official import ConversionResult, convert_pair
from .writer import DEFAULT_MAX_SHARD_SIZE

# ---------------------------------------------------------------------------------------------------------------------
# Official JAX/Scenic layout (google-deepmind/tips scenic/): flattened flax params, `/`-separated. Dense kernels are
# (in, out); attention kernels are per head; the two CLS tokens carry no position embedding; no LayerScale, no mask
# token. Import only: LayerScale and the mask token have no Scenic counterpart.


def _dense_to_linear(ts, ctx):
    return [ts[0].t().contiguous()]


def _heads_in_to_linear(ts, ctx):
    """q/k/v kernels (D, heads, head_dim) ×3 and biases (heads, head_dim) ×3 → one fused (3D, D) / (3D,)."""
    if ts[0].ndim == 3:
        return [torch.cat([t.reshape(t.shape[0], -1).t() for t in ts], dim=0).contiguous()]
    return [torch.cat([t.reshape(-1) for t in ts], dim=0)]


def _heads_out_to_linear(ts, ctx):
    """out kernel (heads, head_dim, D) → (D, D) weight."""
    kernel = ts[0]
    return [kernel.reshape(-1, kernel.shape[-1]).t().contiguous()]


def _conv_to_torch(ts, ctx):
    """(kh, kw, in, out) → (out, in, kh, kw)."""
    return [ts[0].permute(3, 2, 0, 1).contiguous()]


def _scenic_tokens_to_ours(ts, ctx):
    """cls (1, 2, D) and posembed_input (1, gh, gw, D) → cls_token, register_tokens, position_embeddings with a zero
    CLS position (Scenic adds none)."""
    cls, grid = ts
    if grid.shape[1] != grid.shape[2]:
        raise LayoutError(f"posembed_input grid {tuple(grid.shape[1:3])} is not square; TIPS grids are square.")
    dim = grid.shape[-1]
    positions = torch.cat([grid.new_zeros(1, 1, dim), grid.reshape(1, -1, dim)], dim=1)
    return [cls[:, :1].contiguous(), cls[:, 1:].contiguous(), positions]


def _swiglu_to_ours(ts, ctx):
    """Dense_0 (gate) and Dense_1 (up), kernels (D, I) or biases (I,) → fused gate_up (2I, D) / (2I,)."""
    if ts[0].ndim == 2:
        return [torch.cat([t.t() for t in ts], dim=0).contiguous()]
    return [torch.cat(ts, dim=0)]


_SV, _SVB = "encoder/ToTokenSequence_0", "encoder/transformer/encoderblock_{i}"
_ST = "transformer/encoderblock_{i}"


def _scenic_block_rules(ours_prefix: str, theirs_prefix: str, tower: str, norms: tuple[str, str]) -> list[KeyRule]:
    attn = f"{theirs_prefix}/MultiHeadDotProductAttention_0"
    attention = "attention" if tower == "vision" else "self_attn"
    rules = [
        _rule(f"{ours_prefix}.{norms[0]}.weight", f"{theirs_prefix}/LayerNorm_0/scale", tower=tower),
        _rule(f"{ours_prefix}.{norms[0]}.bias", f"{theirs_prefix}/LayerNorm_0/bias", tower=tower),
        _rule(f"{ours_prefix}.{norms[1]}.weight", f"{theirs_prefix}/LayerNorm_1/scale", tower=tower),
        _rule(f"{ours_prefix}.{norms[1]}.bias", f"{theirs_prefix}/LayerNorm_1/bias", tower=tower),
        _rule(
            f"{ours_prefix}.{attention}.qkv.weight",
            tuple(f"{attn}/{x}/kernel" for x in ("query", "key", "value")),
            _heads_in_to_linear,
            tower=tower,
        ),
        _rule(
            f"{ours_prefix}.{attention}.qkv.bias",
            tuple(f"{attn}/{x}/bias" for x in ("query", "key", "value")),
            _heads_in_to_linear,
            tower=tower,
        ),
        _rule(f"{ours_prefix}.{attention}.out_proj.weight", f"{attn}/out/kernel", _heads_out_to_linear, tower=tower),
        _rule(f"{ours_prefix}.{attention}.out_proj.bias", f"{attn}/out/bias", tower=tower),
    ]
    mlp = f"{theirs_prefix}/MlpBlock_0"
    when = _is_mlp if tower == "vision" else None
    rules += [
        _rule(f"{ours_prefix}.mlp.fc1.weight", f"{mlp}/Dense_0/kernel", _dense_to_linear, tower=tower, when=when),
        _rule(f"{ours_prefix}.mlp.fc1.bias", f"{mlp}/Dense_0/bias", tower=tower, when=when),
        _rule(f"{ours_prefix}.mlp.fc2.weight", f"{mlp}/Dense_1/kernel", _dense_to_linear, tower=tower, when=when),
        _rule(f"{ours_prefix}.mlp.fc2.bias", f"{mlp}/Dense_1/bias", tower=tower, when=when),
    ]
    return rules


SCENIC_RULES: tuple[KeyRule, ...] = tuple(
    KeyRule(r.ours, r.theirs, r.to_ours, None, r.tower, r.when, r.optional_theirs, export=False)
    for r in (
        _rule(
            (f"{V}.embeddings.cls_token", f"{V}.embeddings.register_tokens", f"{V}.embeddings.position_embeddings"),
            (f"{_SV}/cls", f"{_SV}/posembed_input"),
            _scenic_tokens_to_ours,
        ),
        _rule(f"{V}.embeddings.patch_embedding.weight", f"{_SV}/embedding/kernel", _conv_to_torch),
        _rule(f"{V}.embeddings.patch_embedding.bias", f"{_SV}/embedding/bias"),
        *_scenic_block_rules(_VB, _SVB, "vision", ("norm1", "norm2")),
        *(
            _rule(
                f"{_VB}.mlp.gate_up.{ours}",
                tuple(f"{_SVB}/FFNSwiGluFused_0/Dense_{j}/{theirs}" for j in (0, 1)),
                _swiglu_to_ours,
                tower="vision",
                when=_is_swiglu,
            )
            for ours, theirs in (("weight", "kernel"), ("bias", "bias"))
        ),
        _rule(
            f"{_VB}.mlp.down.weight",
            f"{_SVB}/FFNSwiGluFused_0/Dense_2/kernel",
            _dense_to_linear,
            tower="vision",
            when=_is_swiglu,
        ),
        _rule(f"{_VB}.mlp.down.bias", f"{_SVB}/FFNSwiGluFused_0/Dense_2/bias", tower="vision", when=_is_swiglu),
        _rule(f"{V}.layernorm.weight", "encoder/encoder_norm/scale"),
        _rule(f"{V}.layernorm.bias", "encoder/encoder_norm/bias"),
        _rule(f"{T}.embeddings.token_embedding.weight", "token_emb/emb_var"),
        *_scenic_block_rules(_TB, _ST, "text", ("layer_norm1", "layer_norm2")),
        _rule(f"{T}.final_layer_norm.weight", "text_encoder_norm/scale"),
        _rule(f"{T}.final_layer_norm.bias", "text_encoder_norm/bias"),
        _rule(
            "log_temperature",
            "temperature_contrastive",
            _log_temperature_from_scalar,
            tower="text",
            optional_theirs=True,
        ),
    )
)

SCENIC = Layout("scenic", "official JAX/Scenic TIPS checkpoint (google-deepmind/tips, scenic/)", SCENIC_RULES)




_TOKENS = "encoder/ToTokenSequence_0"
_VBLOCK = r"encoder/transformer/encoderblock_(\d+)/"
_TBLOCK = r"transformer/encoderblock_(\d+)/"



def _heads(reader: TensorReader, kernel_key: str, width: int) -> int:
    shape = require(reader, kernel_key, 3)
    if shape[0] != width or shape[1] * shape[2] != width:
        raise LayoutError(
            f"{reader.path}: key {kernel_key!r} has shape {shape}, expected ({width}, heads, {width} // heads)."
        )
    return shape[1]


def infer_scenic_config(
    vision: TensorReader,
    text: TensorReader,
    preset: str | None = None,
    image_resolution: int | None = None,
    max_text_length: int = 64,
) -> TipsConfig:
    """Architecture from the array shapes; Scenic's per-head attention kernels also give the head counts."""
    cls = require(vision, f"{_TOKENS}/cls", 3)
    width = cls[-1]
    if cls[1] != 2:
        raise LayoutError(f"{vision.path}: key '{_TOKENS}/cls' holds {cls[1]} CLS tokens; TIPS has 2.")
    kernel = require(vision, f"{_TOKENS}/embedding/kernel", 4)
    grid = require(vision, f"{_TOKENS}/posembed_input", 4)
    if grid[1] != grid[2]:
        raise LayoutError(f"{vision.path}: posembed_input grid {grid[1]}x{grid[2]} is not square.")
    depth = count_blocks(vision.keys(), _VBLOCK, str(vision.path))
    block0 = "encoder/transformer/encoderblock_0"
    if f"{block0}/FFNSwiGluFused_0/Dense_0/kernel" in vision:
        ffn_type, mlp = "swiglu", require(vision, f"{block0}/FFNSwiGluFused_0/Dense_0/kernel", 2)[1]
    else:
        ffn_type, mlp = "mlp", require(vision, f"{block0}/MlpBlock_0/Dense_0/kernel", 2)[1]
    vocab, text_width = require(text, "token_emb/emb_var", 2)
    if text_width != width:
        raise LayoutError(
            f"vision width {width} ({vision.path}) differs from text width {text_width} ({text.path}); the two files "
            "do not belong to the same TIPS model."
        )
    text_depth = count_blocks(text.keys(), _TBLOCK, str(text.path))
    text_mlp = require(text, "transformer/encoderblock_0/MlpBlock_0/Dense_0/kernel", 2)[1]
    overrides = {}
    if preset is not None:
        reference = TipsConfig.from_preset(preset).vision_config
        if (reference.hidden_size, reference.num_hidden_layers, reference.ffn_type) != (width, depth, ffn_type):
            raise LayoutError(
                f"{vision.path} does not match preset {preset!r}: found width {width}, {depth} layers, {ffn_type}."
            )
        overrides = dict(preset=preset, image_resolution=PRESETS[preset].resolution)
    if image_resolution is not None:
        overrides["image_resolution"] = image_resolution
    if "temperature_contrastive" in text:
        overrides.update(temperature_overrides(float(text.read("temperature_contrastive").reshape(()))))
    vision_config = TipsVisionConfig(
        hidden_size=width,
        num_hidden_layers=depth,
        num_attention_heads=_heads(vision, f"{block0}/MultiHeadDotProductAttention_0/query/kernel", width),
        intermediate_size=mlp,
        ffn_type=ffn_type,
        hidden_act="gelu_pytorch_tanh",  # flax.linen.gelu defaults to the tanh approximation
        layer_norm_eps=1e-6,
        patch_size=kernel[0],
        num_channels=kernel[2],
        image_size=grid[1] * kernel[0],
        num_register_tokens=1,
        layerscale_value=1.0,
    )
    text_config = TipsTextConfig(
        vocab_size=vocab,
        hidden_size=text_width,
        intermediate_size=text_mlp,
        num_hidden_layers=text_depth,
        num_attention_heads=_heads(
            text, "transformer/encoderblock_0/MultiHeadDotProductAttention_0/query/kernel", text_width
        ),
        max_position_embeddings=max_text_length,
        layer_norm_eps=1e-6,  # flax LayerNorm
    )
    return TipsConfig(vision_config=vision_config, text_config=text_config, **overrides)


def scenic_defaults(config: TipsConfig) -> dict[str, torch.Tensor]:
    """Our tensors that Scenic lacks, set to the values that reproduce Scenic's computation."""
    v = config.vision_config
    defaults = {"vision_model.embeddings.mask_token": torch.zeros(1, v.hidden_size)}
    for i in range(v.num_hidden_layers):
        for j in (1, 2):
            defaults[f"vision_model.encoder.layers.{i}.layer_scale{j}.lambda1"] = torch.ones(v.hidden_size)
    return defaults


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
    # The same call as convert_official's, with Scenic's table, config inference and defaults.
    return convert_pair(
        vision_path, text_path, output_dir, SCENIC, "scenic",
        lambda vision, text: _check_heads(infer_scenic_config(vision, text, preset, image_resolution), vision_heads,
                                          text_heads),
        tokenizer_path=tokenizer_path, defaults=scenic_defaults, verify=verify, max_shard_size=max_shard_size,
        overwrite=overwrite, progress=progress,
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
