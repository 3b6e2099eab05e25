# Copyright 2026 The tips-hf authors. Licensed under the Apache License, Version 2.0.
"""PyTorch TIPS model: a ViT with two CLS tokens (alt-text head, synthetic-caption head) and a text transformer.

Self-contained: imports only torch, transformers and sibling `*_tips.py` modules, so that a saved folder loads with
`trust_remote_code=True` where `tips_hf` is not installed.

No `from __future__ import annotations` here: transformers reads the annotations at run time (the
`**kwargs: Unpack[TransformersKwargs]` of a `forward` tells its tooling which output flags the model accepts).
"""

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.masking_utils import create_bidirectional_mask
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import BaseModelOutputWithPooling
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.processing_utils import Unpack
from transformers.utils import ModelOutput, TransformersKwargs
from transformers.utils.generic import can_return_tuple
from transformers.utils.output_capturing import capture_outputs

from .configuration_tips import TipsConfig, TipsTextConfig, TipsVisionConfig

# ----------------------------------------------------------------------------------------------------------------------
# Outputs


@dataclass
class TipsVisionModelOutput(ModelOutput):
    r"""Output of [`TipsVisionModel`].

    Args:
        last_hidden_state (`torch.FloatTensor` of shape `(batch_size, 1 + num_register_tokens + h * w, hidden_size)`):
            All tokens after the final LayerNorm: [alt-text CLS, synthetic-caption CLS, patches in row-major order].
        pooler_output (`torch.FloatTensor` of shape `(batch_size, hidden_size)`):
            The alt-text CLS token (same tensor as `alt_text_embeds`); the image embedding used for zero-shot
            classification and retrieval.
        alt_text_embeds (`torch.FloatTensor` of shape `(batch_size, hidden_size)`):
            First CLS token, trained against noisy web alt-text.
        synthetic_embeds (`torch.FloatTensor` of shape `(batch_size, hidden_size)`):
            Second CLS token (the first register token), trained against dense synthetic captions.
        patch_embeds (`torch.FloatTensor` of shape `(batch_size, h, w, hidden_size)`):
            Patch tokens as a grid, `h = height // patch_size`, `w = width // patch_size`.
        hidden_states (`tuple(torch.FloatTensor)`, *optional*):
            Input of every block and the output of the last one (before the final LayerNorm), each
            `(batch_size, sequence_length, hidden_size)`; returned when `output_hidden_states=True`.
        attentions (`tuple(torch.FloatTensor)`, *optional*):
            Attention probabilities of every block, `(batch_size, num_heads, sequence_length, sequence_length)`;
            returned when `output_attentions=True` with the eager implementation.
    """

    last_hidden_state: torch.FloatTensor | None = None
    pooler_output: torch.FloatTensor | None = None
    alt_text_embeds: torch.FloatTensor | None = None
    synthetic_embeds: torch.FloatTensor | None = None
    patch_embeds: torch.FloatTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None


@dataclass
class TipsOutput(ModelOutput):
    r"""Output of [`TipsModel`].

    Args:
        loss (`torch.FloatTensor` of shape `()`, *optional*):
            Mean of the symmetric contrastive losses of the two heads (alt-text head against `input_ids`, synthetic
            head against `synthetic_input_ids` when given, else against `input_ids` too); returned when
            `return_loss=True`. Negatives are the other pairs of the local batch.
        logits_per_image (`torch.FloatTensor` of shape `(image_batch_size, text_batch_size)`):
            Alt-text head: cosine similarity of the alt-text CLS and the texts divided by its temperature.
        logits_per_text (`torch.FloatTensor` of shape `(text_batch_size, image_batch_size)`):
            Transpose of `logits_per_image`.
        synthetic_logits_per_image (`torch.FloatTensor` of shape `(image_batch_size, text_batch_size)`):
            Synthetic-caption head: the same with the second CLS token and its own temperature, against
            `synthetic_text_embeds` when `synthetic_input_ids` are given (else against `text_embeds`).
        synthetic_logits_per_text (`torch.FloatTensor` of shape `(text_batch_size, image_batch_size)`):
            Transpose of `synthetic_logits_per_image`.
        image_embeds (`torch.FloatTensor` of shape `(batch_size, hidden_size)`):
            L2-normalised alt-text CLS embeddings.
        synthetic_image_embeds (`torch.FloatTensor` of shape `(batch_size, hidden_size)`):
            L2-normalised synthetic-caption CLS embeddings.
        text_embeds (`torch.FloatTensor` of shape `(batch_size, hidden_size)`):
            L2-normalised text embeddings (masked mean of the text tokens).
        text_model_output (`BaseModelOutputWithPooling`): output of the [`TipsTextModel`].
        vision_model_output (`TipsVisionModelOutput`): output of the [`TipsVisionModel`].
        synthetic_text_embeds (`torch.FloatTensor` of shape `(synthetic_text_batch_size, hidden_size)`, *optional*):
            L2-normalised embeddings of `synthetic_input_ids`; returned when they are given.
        synthetic_text_model_output (`BaseModelOutputWithPooling`, *optional*): the text tower's output for
            `synthetic_input_ids`.
    """

    loss: torch.FloatTensor | None = None
    logits_per_image: torch.FloatTensor | None = None
    logits_per_text: torch.FloatTensor | None = None
    synthetic_logits_per_image: torch.FloatTensor | None = None
    synthetic_logits_per_text: torch.FloatTensor | None = None
    image_embeds: torch.FloatTensor | None = None
    synthetic_image_embeds: torch.FloatTensor | None = None
    text_embeds: torch.FloatTensor | None = None
    text_model_output: BaseModelOutputWithPooling | None = None
    vision_model_output: TipsVisionModelOutput | None = None
    # Last, so that positions in `to_tuple()` of the fields above do not move when they are set.
    synthetic_text_embeds: torch.FloatTensor | None = None
    synthetic_text_model_output: BaseModelOutputWithPooling | None = None

    def to_tuple(self) -> tuple[Any, ...]:
        return tuple(v.to_tuple() if isinstance(v, ModelOutput) else v for v in self.values())


# ----------------------------------------------------------------------------------------------------------------------
# Shared pieces


def eager_attention_forward(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float,
    dropout: float = 0.0,
    **kwargs: Any,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Reference attention. query/key/value: (B, heads, N, head_dim); returns ((B, N, heads, head_dim), weights)."""
    weights = torch.matmul(query, key.transpose(-1, -2)) * scaling
    if attention_mask is not None:
        if attention_mask.dtype == torch.bool:
            weights = weights.masked_fill(~attention_mask, torch.finfo(weights.dtype).min)
        else:
            weights = weights + attention_mask
    weights = F.softmax(weights, dim=-1, dtype=torch.float32).to(query.dtype)
    weights = F.dropout(weights, p=dropout, training=module.training)
    output = torch.matmul(weights, value).transpose(1, 2).contiguous()
    return output, weights


class TipsAttention(nn.Module):
    """Multi-head self-attention with one fused query/key/value projection (the official checkpoints' layout:
    rows [query; key; value]), dispatched through transformers' attention-function registry."""

    def __init__(self, config: TipsVisionConfig | TipsTextConfig, qkv_bias: bool = True):
        super().__init__()
        self.config = config
        self.num_heads = config.num_attention_heads
        self.head_dim = config.hidden_size // config.num_attention_heads
        self.scaling = self.head_dim**-0.5
        self.dropout = config.attention_dropout
        self.is_causal = False
        self.qkv = nn.Linear(config.hidden_size, 3 * config.hidden_size, bias=qkv_bias)
        self.out_proj = nn.Linear(config.hidden_size, config.hidden_size)

    def forward(
        self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None = None, **kwargs: Any
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        batch, length, _ = hidden_states.shape
        qkv = self.qkv(hidden_states).view(batch, length, 3, self.num_heads, self.head_dim)
        query, key, value = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (B, heads, N, head_dim)
        attention_interface: Callable = ALL_ATTENTION_FUNCTIONS.get_interface(
            self.config._attn_implementation, eager_attention_forward
        )
        output, weights = attention_interface(
            self,
            query,
            key,
            value,
            attention_mask,
            dropout=self.dropout if self.training else 0.0,
            scaling=self.scaling,
            is_causal=False,
            **kwargs,
        )
        output = output.reshape(batch, length, -1)
        return self.out_proj(output), weights


class TipsMLP(nn.Module):
    """fc1 → activation → fc2."""

    def __init__(self, hidden_size: int, intermediate_size: int, hidden_act: str):
        super().__init__()
        self.fc1 = nn.Linear(hidden_size, intermediate_size)
        self.act = ACT2FN[hidden_act]
        self.fc2 = nn.Linear(intermediate_size, hidden_size)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(hidden_states)))


class TipsSwiGLU(nn.Module):
    """SwiGLU FFN with the gate and up projections fused in one matrix (gate = first half), as DINOv2's `w12`."""

    def __init__(self, hidden_size: int, intermediate_size: int):
        super().__init__()
        self.gate_up = nn.Linear(hidden_size, 2 * intermediate_size)
        self.down = nn.Linear(intermediate_size, hidden_size)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        gate, up = self.gate_up(hidden_states).chunk(2, dim=-1)
        return self.down(F.silu(gate) * up)


class TipsLayerScale(nn.Module):
    def __init__(self, hidden_size: int, init_value: float):
        super().__init__()
        self.lambda1 = nn.Parameter(torch.full((hidden_size,), float(init_value)))

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return hidden_states * self.lambda1


class TipsDropPath(nn.Module):
    """Stochastic depth per sample; identity outside training or at rate 0."""

    def __init__(self, rate: float):
        super().__init__()
        self.rate = rate

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        if self.rate == 0.0 or not self.training:
            return hidden_states
        keep = 1.0 - self.rate
        shape = (hidden_states.shape[0],) + (1,) * (hidden_states.ndim - 1)
        return hidden_states * hidden_states.new_empty(shape).bernoulli_(keep).div_(keep)


# ----------------------------------------------------------------------------------------------------------------------
# Vision tower


def check_image_size(height: int, width: int, patch_size: int) -> None:
    """Raise a ValueError unless both sides are positive multiples of the patch size."""
    if height % patch_size or width % patch_size or height <= 0 or width <= 0:
        raise ValueError(
            f"TIPS needs image sides that are multiples of the patch size {patch_size}, got {height}x{width}. "
            f"Use TipsImageProcessor (it resizes, or with `do_resize=False` centre-pads to a multiple), or resize to e.g. "
            f"{max(1, round(height / patch_size)) * patch_size}x{max(1, round(width / patch_size)) * patch_size}."
        )


class TipsVisionEmbeddings(nn.Module):
    """Patch embedding, mask token (MIM), CLS token with its position embedding, interpolated patch position
    embeddings, and register tokens (no position embedding) inserted after the CLS token."""

    def __init__(self, config: TipsVisionConfig):
        super().__init__()
        self.config = config
        dim = config.hidden_size
        self.patch_size = config.patch_size
        self.grid_size = config.position_grid_size
        self.patch_embedding = nn.Conv2d(config.num_channels, dim, kernel_size=self.patch_size, stride=self.patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.register_tokens = nn.Parameter(torch.zeros(1, config.num_register_tokens, dim))
        self.mask_token = nn.Parameter(torch.zeros(1, dim))
        self.position_embeddings = nn.Parameter(torch.zeros(1, 1 + self.grid_size**2, dim))

    def patch_position_embeddings(self, grid_h: int, grid_w: int, interpolate: bool = True) -> torch.Tensor:
        """Position embeddings of a (grid_h, grid_w) patch grid: (1, grid_h * grid_w, D).

        The learned square grid is resized bilinearly with antialiasing to the explicit output size (the official
        inference settings), in float32.
        """
        patch_pos = self.position_embeddings[:, 1:]
        if grid_h == self.grid_size and grid_w == self.grid_size:
            return patch_pos
        if not interpolate:
            raise ValueError(
                f"The position grid is {self.grid_size}x{self.grid_size} patches but the input has {grid_h}x{grid_w}; "
                "pass interpolate_pos_encoding=True to resize it."
            )
        dim = patch_pos.shape[-1]
        grid = patch_pos.float().reshape(1, self.grid_size, self.grid_size, dim).permute(0, 3, 1, 2)
        grid = F.interpolate(
            grid,
            size=(grid_h, grid_w),
            mode="bilinear",
            align_corners=False,
            antialias=self.config.interpolate_antialias,
        )
        return grid.permute(0, 2, 3, 1).reshape(1, grid_h * grid_w, dim).to(patch_pos.dtype)

    def forward(
        self,
        pixel_values: torch.Tensor,
        bool_masked_pos: torch.Tensor | None = None,
        interpolate_pos_encoding: bool = True,
    ) -> torch.Tensor:
        if pixel_values.ndim != 4 or pixel_values.shape[1] != self.config.num_channels:
            raise ValueError(
                f"pixel_values must have shape (batch, {self.config.num_channels}, height, width), "
                f"got {tuple(pixel_values.shape)}."
            )
        batch, _, height, width = pixel_values.shape
        check_image_size(height, width, self.patch_size)
        weight = self.patch_embedding.weight
        patches = self.patch_embedding(pixel_values.to(weight.dtype)).flatten(2).transpose(1, 2)  # (B, N, D)
        if bool_masked_pos is not None:
            if bool_masked_pos.shape != patches.shape[:2]:
                raise ValueError(
                    f"bool_masked_pos must have shape (batch, num_patches) = {tuple(patches.shape[:2])}, "
                    f"got {tuple(bool_masked_pos.shape)}."
                )
            patches = torch.where(bool_masked_pos.unsqueeze(-1), self.mask_token.to(patches.dtype), patches)
        grid_h, grid_w = height // self.patch_size, width // self.patch_size
        patches = patches + self.patch_position_embeddings(grid_h, grid_w, interpolate_pos_encoding)
        cls = self.cls_token + self.position_embeddings[:, :1]
        return torch.cat(
            (cls.expand(batch, -1, -1), self.register_tokens.expand(batch, -1, -1), patches.to(cls.dtype)), dim=1
        )


class TipsVisionLayer(GradientCheckpointingLayer):
    """Pre-norm block: x + LS1(Attn(LN1(x))); x + LS2(FFN(LN2(x)))."""

    def __init__(self, config: TipsVisionConfig, drop_path: float = 0.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.attention = TipsAttention(config, qkv_bias=config.qkv_bias)
        self.layer_scale1 = TipsLayerScale(config.hidden_size, config.layerscale_value)
        self.norm2 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        if config.ffn_type == "swiglu":
            self.mlp = TipsSwiGLU(config.hidden_size, config.intermediate_size)
        else:
            self.mlp = TipsMLP(config.hidden_size, config.intermediate_size, config.hidden_act)
        self.layer_scale2 = TipsLayerScale(config.hidden_size, config.layerscale_value)
        self.drop_path = TipsDropPath(drop_path)

    def forward(
        self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None = None, **kwargs: Any
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        attn, weights = self.attention(self.norm1(hidden_states), attention_mask, **kwargs)
        hidden_states = hidden_states + self.drop_path(self.layer_scale1(attn))
        hidden_states = hidden_states + self.drop_path(self.layer_scale2(self.mlp(self.norm2(hidden_states))))
        return hidden_states, weights


class TipsEncoder(nn.Module):
    """A stack of blocks. Per-block outputs and attention weights are recorded by `capture_outputs` hooks (see
    `TipsPreTrainedModel._can_record_outputs`), not threaded through here."""

    def __init__(self, layers: Sequence[nn.Module]):
        super().__init__()
        self.layers = nn.ModuleList(layers)
        # The stack's checkpointing state, as siglip's and tipsv2's encoders keep it: `gradient_checkpointing_enable`
        # sets it together with the blocks' flags (the blocks, `GradientCheckpointingLayer`s, do the recomputing).
        self.gradient_checkpointing = False

    def forward(
        self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None = None, **kwargs: Any
    ) -> torch.Tensor:
        for layer in self.layers:
            hidden_states = layer(hidden_states, attention_mask, **kwargs)[0]
        return hidden_states


def vision_encoder(config: TipsVisionConfig) -> TipsEncoder:
    """The vision blocks, with stochastic depth rising linearly from 0 to `drop_path_rate` at the last block."""
    depth = config.num_hidden_layers
    return TipsEncoder([TipsVisionLayer(config, config.drop_path_rate * i / max(depth - 1, 1)) for i in range(depth)])


# ----------------------------------------------------------------------------------------------------------------------
# Text tower


def sinusoidal_position_embeddings(length: int, dim: int) -> torch.Tensor:
    """Fixed [sin | cos] position embeddings with timescales 1 … 1e4 (the TIPS/PAX text encoder), (length, dim)."""
    num_timescales = dim // 2
    increment = math.log(1e4) / max(num_timescales - 1, 1)
    inv_timescales = torch.exp(torch.arange(num_timescales, dtype=torch.float32) * -increment)
    scaled = torch.arange(length, dtype=torch.float32)[:, None] * inv_timescales[None, :]
    signal = torch.cat((torch.sin(scaled), torch.cos(scaled)), dim=1)
    return F.pad(signal, (0, dim % 2))


class TipsTextEmbeddings(nn.Module):
    def __init__(self, config: TipsTextConfig):
        super().__init__()
        self.config = config
        self.token_embedding = nn.Embedding(config.vocab_size, config.hidden_size)
        self.scale = config.hidden_size**0.5 if config.scale_sqrt_depth else 1.0
        self.register_buffer(
            "position_embedding",
            sinusoidal_position_embeddings(config.max_position_embeddings, config.hidden_size),
            persistent=False,
        )

    def forward(self, input_ids: torch.LongTensor) -> torch.Tensor:
        length = input_ids.shape[-1]
        if length > self.config.max_position_embeddings:
            raise ValueError(
                f"input_ids has {length} tokens but TIPS text supports at most "
                f"{self.config.max_position_embeddings} (max_position_embeddings); tokenize with truncation=True."
            )
        embeds = self.token_embedding(input_ids) * self.scale
        return embeds + self.position_embedding[:length].to(embeds.dtype)


class TipsTextLayer(GradientCheckpointingLayer):
    """Pre-norm block without LayerScale: x + Attn(LN1(x)); x + MLP(LN2(x))."""

    def __init__(self, config: TipsTextConfig):
        super().__init__()
        self.layer_norm1 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.self_attn = TipsAttention(config)
        self.layer_norm2 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.mlp = TipsMLP(config.hidden_size, config.intermediate_size, config.hidden_act)

    def forward(
        self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None = None, **kwargs: Any
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        attn, weights = self.self_attn(self.layer_norm1(hidden_states), attention_mask, **kwargs)
        hidden_states = hidden_states + attn
        hidden_states = hidden_states + self.mlp(self.layer_norm2(hidden_states))
        return hidden_states, weights


# ----------------------------------------------------------------------------------------------------------------------
# Pretrained models


_HUB_KWARGS = ("cache_dir", "force_download", "local_files_only", "token", "revision", "subfolder")


class TipsPreTrainedModel(PreTrainedModel):
    config: TipsConfig
    config_class = TipsConfig
    base_model_prefix = "tips"
    main_input_name = "input_ids"  # the first argument of `TipsModel.forward`; the vision models override it
    input_modalities = ("image", "text")
    supports_gradient_checkpointing = True
    # Modules that `device_map="auto"` keeps whole on one device (each class lists those it holds).
    _no_split_modules = ["TipsVisionEmbeddings", "TipsVisionLayer", "TipsTextEmbeddings", "TipsTextLayer"]
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_flex_attn = True
    _supports_attention_backend = True
    # Our losses are batch means, not sums over Trainer's `num_items_in_batch`: without this, forward's **kwargs make
    # Trainer skip its division by the gradient-accumulation steps (tests/test_trainer.py).
    accepts_loss_kwargs = False
    # `capture_outputs` records `hidden_states` (each block's input, then the last block's output, before the final
    # LayerNorm) and `attentions` (eager attention probabilities) with hooks on these modules.
    _can_record_outputs = {"hidden_states": [TipsVisionLayer, TipsTextLayer], "attentions": TipsAttention}

    # Reader of foreign folders, `(path, shapes_for, **hub_kwargs) -> (config, state dict) | None`: installed by
    # `import tips_hf` (tips_hf/conversion/foreign.py). Remote code runs without one: it loads TipsModel folders, and
    # the published files carry no conversion tables.
    foreign_checkpoint_loader: Callable[..., tuple[TipsConfig, dict[str, torch.Tensor]] | None] | None = None

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *model_args: Any, **kwargs: Any):
        """`PreTrainedModel.from_pretrained`; with tips-hf installed it also reads a transformers-native `Tipsv2Model`
        folder and the Hub layout of `google/tipsv2-*` / `google/tipsv1-*` (prefixed official keys) directly."""
        load_foreign = cls.foreign_checkpoint_loader
        if (
            load_foreign is not None
            and pretrained_model_name_or_path is not None
            and kwargs.get("config") is None
            and "state_dict" not in kwargs
        ):
            hub_kwargs = {k: kwargs[k] for k in _HUB_KWARGS if kwargs.get(k) is not None}
            foreign = load_foreign(str(pretrained_model_name_or_path), state_shapes, **hub_kwargs)
            if foreign is not None:
                config, state_dict = foreign
                prefix = {TipsVisionModel: "vision_model.", TipsTextModel: "text_model."}.get(cls)
                if prefix is not None:
                    config = getattr(config, f"{prefix[: -len('_model.')]}_config")
                    state_dict = {k[len(prefix) :]: v for k, v in state_dict.items() if k.startswith(prefix)}
                for key in _HUB_KWARGS:
                    kwargs.pop(key, None)
                return super().from_pretrained(None, *model_args, config=config, state_dict=state_dict, **kwargs)
        return super().from_pretrained(pretrained_model_name_or_path, *model_args, **kwargs)

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        config = self.config
        std = getattr(config, "initializer_range", None)
        if std is None:
            std = config.vision_config.initializer_range
        if isinstance(module, (nn.Linear, nn.Conv2d)):
            init.trunc_normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            # Token embeddings are multiplied by sqrt(width) (`scale_sqrt_depth`): start them at std 1/sqrt(width),
            # as the JAX reference (flax `Embed`) does, so that tokens and the unit-scale sinusoidal positions are
            # of equal size. With std 0.02 the positions dominate and every caption pools to nearly the same vector.
            text = getattr(config, "text_config", config)
            scaled = getattr(text, "scale_sqrt_depth", False)
            init.normal_(module.weight, mean=0.0, std=module.embedding_dim**-0.5 if scaled else std)
        elif isinstance(module, nn.LayerNorm):
            init.ones_(module.weight)
            init.zeros_(module.bias)
        elif isinstance(module, TipsVisionEmbeddings):
            init.trunc_normal_(module.position_embeddings, mean=0.0, std=std)
            init.normal_(module.cls_token, mean=0.0, std=1e-6)
            init.normal_(module.register_tokens, mean=0.0, std=1e-6)
            init.zeros_(module.mask_token)
        elif isinstance(module, TipsLayerScale):
            init.constant_(module.lambda1, _layerscale_value(config))
        elif isinstance(module, TipsTextEmbeddings):
            init.copy_(
                module.position_embedding,
                sinusoidal_position_embeddings(*module.position_embedding.shape),
            )
        elif isinstance(module, TipsModel):
            init.constant_(module.log_temperature, math.log(config.temperature_init_value))


def _layerscale_value(config: TipsConfig | TipsVisionConfig) -> float:
    vision = getattr(config, "vision_config", config)
    return vision.layerscale_value


class TipsVisionModel(TipsPreTrainedModel):
    """The TIPS vision tower. Input: `pixel_values` (B, 3, H, W) in [0, 1], H and W multiples of 14."""

    config: TipsVisionConfig
    config_class = TipsVisionConfig
    base_model_prefix = "vision_model"
    main_input_name = "pixel_values"
    input_modalities = ("image",)
    _no_split_modules = ["TipsVisionEmbeddings", "TipsVisionLayer"]

    def __init__(self, config: TipsVisionConfig):
        config.check_buildable()
        super().__init__(config)
        self.embeddings = TipsVisionEmbeddings(config)
        self.encoder = vision_encoder(config)
        self.layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.embeddings.patch_embedding

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.embeddings.patch_embedding = value

    def get_intermediate_layers(
        self,
        pixel_values: torch.Tensor,
        layers: int | Sequence[int] = 1,
        norm: bool = True,
        interpolate_pos_encoding: bool = True,
    ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        r"""Outputs of chosen blocks, as the official `get_intermediate_layers(x, n, reshape=True,
        return_class_token=True, norm)` returns them (the DPT decoders' input).

        Args:
            pixel_values (`torch.FloatTensor` of shape `(batch_size, 3, height, width)`): images in [0, 1].
            layers (`int` or `Sequence[int]`): 0-based block indices, or an int `n` for the last `n` blocks.
            norm (`bool`, defaults to `True`): apply the tower's final LayerNorm to each block output.

        Returns:
            One `(patch_maps, cls)` per requested block, in the order requested: `patch_maps` of shape
            `(batch_size, hidden_size, height // patch_size, width // patch_size)` and `cls` (the alt-text CLS token)
            of shape `(batch_size, hidden_size)`.
        """
        depth = len(self.encoder.layers)
        wanted = list(range(depth - layers, depth)) if isinstance(layers, int) else [int(i) for i in layers]
        if not wanted or any(not 0 <= i < depth for i in wanted):
            raise ValueError(f"layers must be block indices in [0, {depth}) or a count <= {depth}, got {layers!r}.")
        hidden = self.embeddings(pixel_values, None, interpolate_pos_encoding)
        kept = {}
        for index, layer in enumerate(self.encoder.layers[: max(wanted) + 1]):  # later blocks are not needed
            hidden = layer(hidden, None)[0]
            if index in wanted:
                kept[index] = self.layernorm(hidden) if norm else hidden
        batch, _, height, width = pixel_values.shape
        grid = (height // self.config.patch_size, width // self.config.patch_size)
        first_patch = 1 + self.config.num_register_tokens
        return [
            (kept[i][:, first_patch:].transpose(1, 2).reshape(batch, -1, *grid), kept[i][:, 0]) for i in wanted
        ]

    @capture_outputs(tie_last_hidden_states=False)
    def forward(
        self,
        pixel_values: torch.Tensor,
        bool_masked_pos: torch.Tensor | None = None,
        interpolate_pos_encoding: bool = True,
        **kwargs: Unpack[TransformersKwargs],
    ) -> TipsVisionModelOutput | tuple:
        r"""
        Args:
            pixel_values (`torch.FloatTensor` of shape `(batch_size, 3, height, width)`): RGB in [0, 1] (no mean/std
                normalisation); height and width must be multiples of the patch size.
            bool_masked_pos (`torch.BoolTensor` of shape `(batch_size, num_patches)`, *optional*): patches whose
                embedding is replaced by the learned mask token (masked image modeling).
            interpolate_pos_encoding (`bool`, defaults to `True`): resize the position grid to the input grid (TIPS
                always does); with `False` the input grid must equal the learned one.
            output_hidden_states, output_attentions, return_dict (`bool`, *optional*): as for every transformers
                model (recorded by `capture_outputs`).
        """
        embeddings = self.embeddings(pixel_values, bool_masked_pos, interpolate_pos_encoding)
        tokens = self.layernorm(self.encoder(embeddings, None, **kwargs))
        batch, _, height, width = pixel_values.shape
        patch = self.config.patch_size
        first_patch = 1 + self.config.num_register_tokens
        patch_embeds = tokens[:, first_patch:].reshape(batch, height // patch, width // patch, -1)
        return TipsVisionModelOutput(
            last_hidden_state=tokens,
            pooler_output=tokens[:, 0],
            alt_text_embeds=tokens[:, 0],
            synthetic_embeds=tokens[:, 1],
            patch_embeds=patch_embeds,
        )


class TipsTextModel(TipsPreTrainedModel):
    """The TIPS text tower. Input: SentencePiece `input_ids` (B, L ≤ 64) and `attention_mask` (1 = token)."""

    config: TipsTextConfig
    config_class = TipsTextConfig
    base_model_prefix = "text_model"
    main_input_name = "input_ids"
    input_modalities = ("text",)
    _no_split_modules = ["TipsTextEmbeddings", "TipsTextLayer"]

    def __init__(self, config: TipsTextConfig):
        config.check_buildable()
        super().__init__(config)
        self.embeddings = TipsTextEmbeddings(config)
        self.encoder = TipsEncoder([TipsTextLayer(config) for _ in range(config.num_hidden_layers)])
        self.final_layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.embeddings.token_embedding

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.embeddings.token_embedding = value

    @capture_outputs(tie_last_hidden_states=False)
    def forward(
        self,
        input_ids: torch.LongTensor,
        attention_mask: torch.Tensor | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> BaseModelOutputWithPooling | tuple:
        r"""
        Args:
            input_ids (`torch.LongTensor` of shape `(batch_size, length)`): token ids, `length <= 64`.
            attention_mask (`torch.Tensor` of shape `(batch_size, length)`, *optional*): 1 for tokens, 0 for
                padding. If omitted, it is derived from `input_ids != pad_token_id` (the official convention,
                where id 0 is always padding).

        Returns:
            `pooler_output` (B, D) is the mean of the final-LayerNorm tokens over the non-padding positions.
        """
        if input_ids.ndim != 2:
            raise ValueError(f"input_ids must have shape (batch, length), got {tuple(input_ids.shape)}.")
        if attention_mask is None:
            pad = self.config.pad_token_id
            attention_mask = input_ids != pad if pad is not None else torch.ones_like(input_ids, dtype=torch.bool)
        elif attention_mask.shape != input_ids.shape:
            raise ValueError(
                f"attention_mask shape {tuple(attention_mask.shape)} must equal input_ids shape "
                f"{tuple(input_ids.shape)}."
            )
        keep = attention_mask.to(torch.bool)
        hidden = self.embeddings(input_ids)
        # A row with no token would make every attention score -inf (NaN); let it attend everywhere instead: its
        # pooled embedding is zero whatever its tokens hold.
        attend = keep | ~keep.any(dim=-1, keepdim=True)
        if self.config._attn_implementation in ("eager", "sdpa"):
            # A (batch, 1, 1, length) boolean mask that both kernels broadcast, built without asking the device
            # whether it is all ones: transformers' helper does (`padding_mask.all()`), a host sync in every step.
            mask = attend[:, None, None, :]
        else:
            mask = create_bidirectional_mask(config=self.config, inputs_embeds=hidden, attention_mask=attend)
        hidden = self.final_layer_norm(self.encoder(hidden, mask, **kwargs))
        weights = keep.to(hidden.dtype).unsqueeze(-1)
        pooled = (hidden * weights).sum(dim=1) / (weights.sum(dim=1) + self.config.pooling_epsilon)
        return BaseModelOutputWithPooling(last_hidden_state=hidden, pooler_output=pooled)


def contrastive_loss(
    logits_per_image: torch.Tensor,
    logits_per_text: torch.Tensor | None = None,
    targets: torch.Tensor | None = None,
) -> torch.Tensor:
    """Symmetric softmax cross-entropy (InfoNCE) of image→text and text→image logits.

    With one square (images, texts) matrix the pairs are on the diagonal. For global negatives across processes,
    pass each direction's (local rows, global columns) logits and the global column index of every row's pair.
    """
    if logits_per_text is None:
        logits_per_text = logits_per_image.t()
    if targets is None:
        targets = torch.arange(logits_per_image.shape[0], device=logits_per_image.device)
    return 0.5 * (F.cross_entropy(logits_per_image, targets) + F.cross_entropy(logits_per_text, targets))


class TipsModel(TipsPreTrainedModel):
    """TIPS dual encoder: `.vision_model` ([`TipsVisionModel`]), `.text_model` ([`TipsTextModel`]) and two
    learnable temperatures (`log_temperature[0]`: alt-text head, `[1]`: synthetic-caption head)."""

    def __init__(self, config: TipsConfig):
        config.check_buildable()
        super().__init__(config)
        self.vision_model = TipsVisionModel._from_config(config.vision_config)
        self.text_model = TipsTextModel._from_config(config.text_config)
        self.log_temperature = nn.Parameter(torch.full((2,), math.log(config.temperature_init_value)))
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.text_model.get_input_embeddings()

    def save_pretrained(self, save_directory, *args: Any, **kwargs: Any):
        if self._auto_class is not None:
            # Remote code: pipelines load zero-shot classifiers through this Auto class.
            auto_map = dict(getattr(self.config, "auto_map", None) or {})
            auto_map["AutoModelForZeroShotImageClassification"] = f"modeling_tips.{type(self).__name__}"
            self.config.auto_map = auto_map
        return super().save_pretrained(save_directory, *args, **kwargs)

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.text_model.set_input_embeddings(value)

    @property
    def temperature(self) -> torch.Tensor:
        """The two softmax temperatures (alt-text, synthetic), clamped to the configured range: (2,)."""
        return self.log_temperature.exp().clamp(self.config.temperature_min, self.config.temperature_max)

    @can_return_tuple
    def get_text_features(
        self,
        input_ids: torch.LongTensor,
        attention_mask: torch.Tensor | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> BaseModelOutputWithPooling | tuple:
        """Text tower output; `pooler_output` (B, D) is the (un-normalised) text embedding. With `return_dict=False`
        (argument or `config.return_dict`) its `to_tuple()`, as for every transformers model."""
        return self.text_model(input_ids=input_ids, attention_mask=attention_mask, **kwargs, return_dict=True)

    @can_return_tuple
    def get_image_features(
        self,
        pixel_values: torch.Tensor,
        bool_masked_pos: torch.Tensor | None = None,
        interpolate_pos_encoding: bool = True,
        **kwargs: Unpack[TransformersKwargs],
    ) -> TipsVisionModelOutput | tuple:
        """Vision tower output; `pooler_output` (B, D) is the (un-normalised) alt-text CLS embedding,
        `synthetic_embeds` the second CLS, `patch_embeds` (B, h, w, D) the patch grid. With `return_dict=False`
        (argument or `config.return_dict`) its `to_tuple()`."""
        return self.vision_model(
            pixel_values=pixel_values,
            bool_masked_pos=bool_masked_pos,
            interpolate_pos_encoding=interpolate_pos_encoding,
            **kwargs,
            return_dict=True,
        )

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        pixel_values: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        bool_masked_pos: torch.Tensor | None = None,
        return_loss: bool | None = None,
        interpolate_pos_encoding: bool = True,
        synthetic_input_ids: torch.LongTensor | None = None,
        synthetic_attention_mask: torch.Tensor | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> TipsOutput | tuple:
        r"""
        Args:
            input_ids (`torch.LongTensor` of shape `(text_batch_size, length)`, *optional*): token ids (alt-text
                captions when training; scored by both heads unless `synthetic_input_ids` are given).
            pixel_values (`torch.FloatTensor` of shape `(image_batch_size, 3, height, width)`, *optional*): images in
                [0, 1].
            attention_mask (`torch.Tensor` of shape `(text_batch_size, length)`, *optional*): 1 = token, 0 = pad.
            return_loss (`bool`, *optional*): return the mean of the two heads' symmetric contrastive losses
                (needs as many texts as images, pairs on the diagonal).
            synthetic_input_ids (`torch.LongTensor` of shape `(synthetic_text_batch_size, length)`, *optional*):
                token ids of the synthetic captions, scored by the synthetic-caption head (CLS-2) only; with them the
                two heads train on their own caption streams, as in TIPS pretraining.
            synthetic_attention_mask (`torch.Tensor` of shape `(synthetic_text_batch_size, length)`, *optional*):
                1 = token, 0 = pad, for `synthetic_input_ids`.
            output_hidden_states, output_attentions (`bool`, *optional*): passed to the towers, whose outputs carry
                them; return_dict (`bool`, *optional*): as for every transformers model.
        """
        if pixel_values is None and input_ids is None and synthetic_input_ids is None:
            raise ValueError("TipsModel needs pixel_values, input_ids (or synthetic_input_ids), or both.")
        vision = text = synthetic_text = image_embeds = synthetic_image_embeds = None
        text_embeds = synthetic_text_embeds = logits = synthetic_logits = loss = None
        if pixel_values is not None:
            vision = self.vision_model(
                pixel_values=pixel_values,
                bool_masked_pos=bool_masked_pos,
                interpolate_pos_encoding=interpolate_pos_encoding,
                **kwargs,
                return_dict=True,
            )
            image_embeds = F.normalize(vision.alt_text_embeds, dim=-1)
            synthetic_image_embeds = F.normalize(vision.synthetic_embeds, dim=-1)
        if input_ids is not None:
            text = self.text_model(input_ids=input_ids, attention_mask=attention_mask, **kwargs, return_dict=True)
            text_embeds = F.normalize(text.pooler_output, dim=-1)
        if synthetic_input_ids is not None:
            synthetic_text = self.text_model(
                input_ids=synthetic_input_ids, attention_mask=synthetic_attention_mask, **kwargs, return_dict=True
            )
            synthetic_text_embeds = F.normalize(synthetic_text.pooler_output, dim=-1)
        # The synthetic head scores its own captions when given, else the same texts as the alt-text head.
        synthetic_targets = synthetic_text_embeds if synthetic_text_embeds is not None else text_embeds
        if vision is not None and synthetic_targets is not None:
            temperature = self.temperature.to(image_embeds.dtype)
            if text_embeds is not None:
                logits = image_embeds @ text_embeds.to(image_embeds.dtype).t() / temperature[0]
            synthetic_logits = synthetic_image_embeds @ synthetic_targets.to(image_embeds.dtype).t() / temperature[1]
            if return_loss:
                heads = [head for head in (logits, synthetic_logits) if head is not None]
                for head in heads:
                    if head.shape[0] != head.shape[1]:
                        raise ValueError(
                            "return_loss=True needs one text per image (pairs on the diagonal), got "
                            f"{head.shape[0]} images and {head.shape[1]} texts."
                        )
                # Same objective as pretraining's DualCaptionContrastiveLoss (which calls this function), with
                # local negatives: the mean of the heads' symmetric InfoNCE losses.
                loss = sum(contrastive_loss(head) for head in heads) / len(heads)
        elif return_loss:
            raise ValueError("return_loss=True needs both pixel_values and input_ids (or synthetic_input_ids).")
        return TipsOutput(
            loss=loss,
            logits_per_image=logits,
            logits_per_text=logits.t() if logits is not None else None,
            synthetic_logits_per_image=synthetic_logits,
            synthetic_logits_per_text=synthetic_logits.t() if synthetic_logits is not None else None,
            image_embeds=image_embeds,
            synthetic_image_embeds=synthetic_image_embeds,
            text_embeds=text_embeds,
            text_model_output=text,
            vision_model_output=vision,
            synthetic_text_embeds=synthetic_text_embeds,
            synthetic_text_model_output=synthetic_text,
        )


def meta_model(config: Any, model_class: type[nn.Module] | None = None) -> nn.Module:
    """`model_class(config)` (default `TipsModel`) with every tensor on the meta device: key names and shapes at no
    memory cost (a g/14 included)."""
    with torch.device("meta"):
        return (model_class or TipsModel)(config)


def state_shapes(config: Any, model_class: type[nn.Module] | None = None) -> dict[str, tuple[int, ...]]:
    """{state-dict key: shape} of `model_class(config)` (default `TipsModel`), without allocating it."""
    return {k: tuple(v.shape) for k, v in meta_model(config, model_class).state_dict().items()}


__all__ = [
    "TipsModel",
    "TipsOutput",
    "TipsPreTrainedModel",
    "TipsTextModel",
    "TipsVisionModel",
    "TipsVisionModelOutput",
    "contrastive_loss",
    "meta_model",
    "state_shapes",
]
