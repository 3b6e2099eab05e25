# Copyright 2026 The tips-hf authors. Licensed under the Apache License, Version 2.0.
"""Configuration classes for TIPS (Text-Image Pretraining with Spatial awareness).

This module is self-contained (it imports only `transformers`) so that it can be copied into a model folder
and loaded with `trust_remote_code=True` without `tips_hf` installed.

Constructing a configuration checks types only (transformers' strict dataclasses), as transformers' own configurations
do: its tooling builds placeholder configurations (a zero `hidden_size`, say) that never become models. The values are
checked where they would otherwise make a wrong model: each configuration's `check_buildable()`, which the models'
constructors call, raises a ValueError that names the field.
"""

import copy
import math
from dataclasses import dataclass
from typing import Any, ClassVar

from transformers import PretrainedConfig

FFN_TYPES = ("mlp", "swiglu")


def swiglu_hidden_size(hidden_size: int, mlp_ratio: float) -> int:
    """Hidden width of the fused SwiGLU FFN used by DINOv2 and TIPS g/14: 2/3 of the MLP width, rounded up to 8."""
    return (int(hidden_size * mlp_ratio * 2 / 3) + 7) // 8 * 8


def _check_positive(config: PretrainedConfig, *names: str) -> None:
    for name in names:
        value = getattr(config, name)
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise ValueError(f"{type(config).__name__}.{name} must be a positive integer, got {value!r}.")


def _check_tower(config: PretrainedConfig, *sizes: str) -> None:
    """A transformer tower's sizes and `sizes` are positive integers, and the width splits into the heads."""
    _check_positive(config, "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", *sizes)
    if config.hidden_size % config.num_attention_heads != 0:
        raise ValueError(
            f"{type(config).__name__}.hidden_size ({config.hidden_size}) must be divisible by "
            f"num_attention_heads ({config.num_attention_heads})."
        )


class TipsVisionConfig(PretrainedConfig):
    r"""Configuration of the TIPS vision tower: a DINOv2-style ViT with one register token that TIPS uses as a
    second CLS token (the synthetic-caption head).

    Args:
        hidden_size (`int`, defaults to 768): width of the tokens.
        num_hidden_layers (`int`, defaults to 12): number of transformer blocks.
        num_attention_heads (`int`, defaults to 12): attention heads per block.
        intermediate_size (`int`, defaults to 3072): hidden width of the FFN as stored in the weights (for SwiGLU,
            the width of each of the gate and up projections, see `swiglu_hidden_size`).
        ffn_type (`str`, defaults to `"mlp"`): `"mlp"` (fc1 → act → fc2) or `"swiglu"` (g/14).
        hidden_act (`str`, defaults to `"gelu"`): activation of the `"mlp"` FFN (`"gelu"` is exact GELU as in the
            official PyTorch code; the Scenic reference uses the tanh approximation, `"gelu_pytorch_tanh"`).
        layer_norm_eps (`float`, defaults to 1e-6): epsilon of every LayerNorm in the tower.
        image_size (`int`, defaults to 448): image size the learned position grid was made for
            (grid side = image_size // patch_size; 224 for TIPS v1, 448 for TIPSv2).
        patch_size (`int`, defaults to 14): side of the square patches.
        num_channels (`int`, defaults to 3): input channels.
        num_register_tokens (`int`, defaults to 1): register tokens; the first is the synthetic-caption CLS.
        layerscale_value (`float`, defaults to 1.0): initial value of the LayerScale vectors.
        qkv_bias (`bool`, defaults to `True`): whether the query/key/value projection has a bias.
        attention_dropout (`float`, defaults to 0.0): dropout on attention probabilities.
        drop_path_rate (`float`, defaults to 0.0): stochastic-depth rate of the last block (linear from 0).
        interpolate_antialias (`bool`, defaults to `True`): antialias when resizing the position grid (official
            inference setting).
        initializer_range (`float`, defaults to 0.02): std of the truncated-normal initialisation.
    """

    model_type: ClassVar[str] = "tips_vision_model"
    base_config_key: ClassVar[str] = "vision_config"

    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    ffn_type: str = "mlp"
    hidden_act: str = "gelu"
    layer_norm_eps: float = 1e-6
    image_size: int = 448
    patch_size: int = 14
    num_channels: int = 3
    num_register_tokens: int = 1
    layerscale_value: float = 1.0
    qkv_bias: bool = True
    attention_dropout: float = 0.0
    drop_path_rate: float = 0.0
    interpolate_antialias: bool = True
    initializer_range: float = 0.02

    def check_buildable(self) -> None:
        """Raise a ValueError naming the field unless a vision tower can be built from these values (called by the
        models' constructors)."""
        _check_tower(self, "patch_size", "image_size", "num_channels")
        if self.ffn_type not in FFN_TYPES:
            raise ValueError(f"TipsVisionConfig.ffn_type must be one of {FFN_TYPES}, got {self.ffn_type!r}.")
        if self.image_size % self.patch_size != 0:
            raise ValueError(
                f"TipsVisionConfig.image_size ({self.image_size}) must be a multiple of patch_size ({self.patch_size})."
            )
        if self.num_register_tokens < 1:
            raise ValueError(
                "TipsVisionConfig.num_register_tokens must be >= 1: the first register token is the "
                f"synthetic-caption CLS, got {self.num_register_tokens}."
            )

    @property
    def position_grid_size(self) -> int:
        """Side of the learned square position-embedding grid."""
        return self.image_size // self.patch_size


class TipsTextConfig(PretrainedConfig):
    r"""Configuration of the TIPS text tower: a pre-norm transformer over SentencePiece ids with fixed sinusoidal
    position embeddings and masked mean pooling.

    Args:
        vocab_size (`int`, defaults to 32000): SentencePiece vocabulary size.
        hidden_size (`int`, defaults to 768): width of the tokens (equal to the vision width).
        intermediate_size (`int`, defaults to 3072): hidden width of the MLP.
        num_hidden_layers (`int`, defaults to 12): number of transformer blocks.
        num_attention_heads (`int`, defaults to 12): attention heads per block.
        max_position_embeddings (`int`, defaults to 64): maximum text length in tokens.
        hidden_act (`str`, defaults to `"relu"`): MLP activation.
        layer_norm_eps (`float`, defaults to 1e-5): LayerNorm epsilon (1e-5 in the PyTorch weights, 1e-6 in Scenic).
        attention_dropout (`float`, defaults to 0.0): dropout on attention probabilities.
        pad_token_id (`int`, defaults to 0): id of the padding token.
        scale_sqrt_depth (`bool`, defaults to `True`): multiply token embeddings by sqrt(hidden_size).
        pooling_epsilon (`float`, defaults to 1e-8): added to the token count of the masked mean.
        initializer_range (`float`, defaults to 0.02): std of the normal initialisation.
    """

    model_type: ClassVar[str] = "tips_text_model"
    base_config_key: ClassVar[str] = "text_config"

    vocab_size: int = 32000
    hidden_size: int = 768
    intermediate_size: int = 3072
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    max_position_embeddings: int = 64
    hidden_act: str = "relu"
    layer_norm_eps: float = 1e-5
    attention_dropout: float = 0.0
    pad_token_id: int | None = 0
    scale_sqrt_depth: bool = True
    pooling_epsilon: float = 1e-8
    initializer_range: float = 0.02

    def check_buildable(self) -> None:
        """Raise a ValueError naming the field unless a text tower can be built from these values (called by the
        models' constructors)."""
        _check_tower(self, "vocab_size", "max_position_embeddings")


# Released checkpoints (official `google-deepmind/tips` code). Text towers: 12 layers except So400m (27).
_VISION = {
    "s14": dict(hidden_size=384, num_hidden_layers=12, num_attention_heads=6, intermediate_size=1536),
    "b14": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072),
    "l14": dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096),
    "so400m14": dict(hidden_size=1152, num_hidden_layers=27, num_attention_heads=16, intermediate_size=4304),
    "g14": dict(
        hidden_size=1536,
        num_hidden_layers=40,
        num_attention_heads=24,
        ffn_type="swiglu",
        intermediate_size=swiglu_hidden_size(1536, 4),
    ),
}
_TEXT = {
    "s14": dict(hidden_size=384, intermediate_size=1536, num_attention_heads=6, num_hidden_layers=12),
    "b14": dict(hidden_size=768, intermediate_size=3072, num_attention_heads=12, num_hidden_layers=12),
    "l14": dict(hidden_size=1024, intermediate_size=4096, num_attention_heads=16, num_hidden_layers=12),
    "so400m14": dict(hidden_size=1152, intermediate_size=4304, num_attention_heads=16, num_hidden_layers=27),
    "g14": dict(hidden_size=1536, intermediate_size=6144, num_attention_heads=24, num_hidden_layers=12),
}
_SIZE_NAMES = {"s14": "S/14", "b14": "B/14", "l14": "L/14", "so400m14": "So400m/14", "g14": "g/14"}
# the `vision_fn` of the flat remote-code configs on the Hub (google/tipsv*-*)
_VISION_FNS = {"s14": "vit_small", "b14": "vit_base", "l14": "vit_large", "so400m14": "vit_so400m", "g14": "vit_giant2"}


def official_dpt_layers(num_hidden_layers: int) -> list[int]:
    """The blocks the released DPT decoders read: ceil(k * depth / 4) - 1 for k = 1..4, which gives the official
    choices B [2, 5, 8, 11], L [5, 11, 17, 23], So400m [6, 13, 20, 26] and g [9, 19, 29, 39]."""
    return [math.ceil(k * num_hidden_layers / 4) - 1 for k in range(1, 5)]


@dataclass(frozen=True)
class Preset:
    """Everything we know about one released TIPS variant, in one record.

    Attributes:
        name (`str`): our preset name, e.g. `"tips-v2-b14"` (`TipsConfig.preset`).
        size (`str`): architecture key (`"s14"`, `"b14"`, `"l14"`, `"so400m14"`, `"g14"`).
        grid_image_size (`int`): image size of the learned position grid (224: 16x16 for v1, 448: 32x32 for v2).
        resolution (`int`): the processor's default input size.
        official_stem (`str`): stem of the official checkpoint files (`<stem>_vision.npz`, `<stem>_text.npz`).
        hub_id (`str`): Google's Hub repository of the release (a published card's `base_model`).
    """

    name: str
    size: str
    grid_image_size: int
    resolution: int
    official_stem: str
    hub_id: str

    @property
    def display_name(self) -> str:
        """`"TIPSv2 B/14"`, `"TIPS (v1) g/14 low-res"`."""
        size = _SIZE_NAMES[self.size]
        if self.name.startswith("tips-v2"):
            return f"TIPSv2 {size}"
        return f"TIPS (v1) {size} {'low-res' if self.name.endswith('-lr') else 'high-res'}"

    @property
    def vision_fn(self) -> str:
        return _VISION_FNS[self.size]

    @property
    def vision_heads(self) -> int:
        return _VISION[self.size]["num_attention_heads"]

    @property
    def dpt_layers(self) -> list[int]:
        """The blocks Google's released DPT decoders of this size read."""
        return official_dpt_layers(_VISION[self.size]["num_hidden_layers"])


PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        Preset("tips-v1-s14-hr", "s14", 224, 448, "tips_oss_s14_highres_distilled", "google/tipsv1-s14"),
        Preset("tips-v1-b14-hr", "b14", 224, 448, "tips_oss_b14_highres_distilled", "google/tipsv1-b14"),
        Preset("tips-v1-l14-hr", "l14", 224, 448, "tips_oss_l14_highres_distilled", "google/tipsv1-l14"),
        Preset(
            "tips-v1-so400m14-hr",
            "so400m14",
            224,
            448,
            "tips_oss_so400m14_highres_largetext_distilled",
            "google/tipsv1-so400m14",
        ),
        Preset("tips-v1-g14-hr", "g14", 224, 448, "tips_oss_g14_highres", "google/tipsv1-g14"),
        Preset("tips-v1-g14-lr", "g14", 224, 224, "tips_oss_g14_lowres", "google/tipsv1-g14-lowres"),
        Preset("tips-v2-b14", "b14", 448, 448, "tips_v2_b14", "google/tipsv2-b14"),
        Preset("tips-v2-l14", "l14", 448, 448, "tips_v2_l14", "google/tipsv2-l14"),
        Preset("tips-v2-so400m14", "so400m14", 448, 448, "tips_v2_so14", "google/tipsv2-so400m14"),
        Preset("tips-v2-g14", "g14", 448, 448, "tips_v2_g14", "google/tipsv2-g14"),
    )
}
# Released widths -> attention heads, used by the converters when only arrays are given.
HEADS_BY_WIDTH = {v["hidden_size"]: v["num_attention_heads"] for v in _VISION.values()}


class TipsConfig(PretrainedConfig):
    r"""Configuration of a TIPS dual encoder: a [`TipsVisionConfig`] and a [`TipsTextConfig`] of equal width, plus
    the two contrastive temperatures (alt-text head, synthetic-caption head).

    Args:
        text_config (`dict` or `TipsTextConfig`, *optional*): text tower configuration.
        vision_config (`dict` or `TipsVisionConfig`, *optional*): vision tower configuration.
        temperature_init_value (`float`, defaults to 0.00507): initial softmax temperature of both heads
            (logits = cosine / temperature; the released value).
        temperature_min (`float`, defaults to 1e-3): lower clamp of the learnable temperatures.
        temperature_max (`float`, defaults to 1.0): upper clamp of the learnable temperatures.
        image_resolution (`int`, defaults to 448): the image side the processor resizes to by default.
        preset (`str`, *optional*): name of the released variant this configuration reproduces, if any.

    Example:

    ```python
    >>> from tips_hf import TipsConfig, TipsModel
    >>> config = TipsConfig.from_preset("tips-v2-b14")
    >>> model = TipsModel(config)
    ```
    """

    model_type: ClassVar[str] = "tips"
    sub_configs: ClassVar[dict] = {"text_config": TipsTextConfig, "vision_config": TipsVisionConfig}
    sub_configs_defaults: ClassVar[dict] = {"text_config": TipsTextConfig, "vision_config": TipsVisionConfig}

    text_config: dict | TipsTextConfig | None = None
    vision_config: dict | TipsVisionConfig | None = None
    temperature_init_value: float = 0.005065968260169029
    temperature_min: float = 1e-3
    temperature_max: float = 1.0
    image_resolution: int = 448
    preset: str | None = None

    def __post_init__(self, **kwargs):
        # Built here (not only by the base class) so that transformers versions with either sub-config API work.
        for key, cls in (("text_config", TipsTextConfig), ("vision_config", TipsVisionConfig)):
            value = getattr(self, key)
            if value is None:
                setattr(self, key, cls())
            elif isinstance(value, dict):
                value = {k: v for k, v in value.items() if k != "model_type"}
                setattr(self, key, cls(**value))
            elif not isinstance(value, cls):
                raise ValueError(f"TipsConfig.{key} must be a dict or {cls.__name__}, got {type(value).__name__}.")
        super().__post_init__(**kwargs)

    def check_buildable(self) -> None:
        """Raise a ValueError naming the field unless a dual encoder can be built from these values (called by
        [`TipsModel`]'s constructor): both towers buildable, of equal width, and an initial temperature in range."""
        self.vision_config.check_buildable()
        self.text_config.check_buildable()
        if self.text_config.hidden_size != self.vision_config.hidden_size:
            raise ValueError(
                f"TipsConfig: text_config.hidden_size ({self.text_config.hidden_size}) must equal "
                f"vision_config.hidden_size ({self.vision_config.hidden_size}); the towers share one embedding space."
            )
        if not 0 < self.temperature_min <= self.temperature_init_value <= self.temperature_max:
            raise ValueError(
                "TipsConfig.temperature_init_value must lie in [temperature_min, temperature_max], got "
                f"{self.temperature_init_value} not in [{self.temperature_min}, {self.temperature_max}]."
            )

    @classmethod
    def preset_names(cls) -> list[str]:
        """Names accepted by [`TipsConfig.from_preset`]."""
        return list(PRESETS)

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> "TipsConfig":
        """Configuration of a released TIPS checkpoint, e.g. `"tips-v2-b14"` (see `TipsConfig.preset_names()`).

        Keyword overrides apply to the top-level config; pass `vision_config={...}` / `text_config={...}` dicts to
        override tower fields.
        """
        if name not in PRESETS:
            raise ValueError(f"Unknown TIPS preset {name!r}; known presets: {', '.join(PRESETS)}.")
        preset = PRESETS[name]
        size, grid_image_size, resolution = preset.size, preset.grid_image_size, preset.resolution
        vision = dict(_VISION[size], image_size=grid_image_size)
        vision.update(overrides.pop("vision_config", None) or {})
        text = dict(_TEXT[size])
        text.update(overrides.pop("text_config", None) or {})
        kwargs = dict(image_resolution=resolution, preset=name)
        kwargs.update(overrides)
        return cls(vision_config=TipsVisionConfig(**vision), text_config=TipsTextConfig(**text), **kwargs)

    def to_dict(self) -> dict[str, Any]:
        output = super().to_dict()
        for key in ("text_config", "vision_config"):
            sub = getattr(self, key)
            if isinstance(sub, PretrainedConfig):
                output[key] = sub.to_dict()
        return copy.deepcopy(output)


__all__ = [
    "TipsConfig",
    "TipsTextConfig",
    "TipsVisionConfig",
    "PRESETS",
    "Preset",
    "HEADS_BY_WIDTH",
    "official_dpt_layers",
    "swiglu_hidden_size",
]
