# Copyright 2026 The tips-hf authors. Licensed under the Apache License, Version 2.0.
"""Configurations of the TIPS dense-prediction models (official DPT decoders) and of the TIPS backbone.

Self-contained (imports only `transformers` and sibling `*_tips.py` modules) so that it travels with the remote-code
files of a saved folder. As in `configuration_tips.py`, construction checks types only; `check_buildable()`, called by
the models' constructors, checks the values.
"""

import copy
from typing import Any, ClassVar

from transformers import PretrainedConfig
from transformers.backbone_utils import BackboneConfigMixin

from .configuration_tips import TipsVisionConfig, official_dpt_layers

DPT_TASKS = ("segmentation", "depth", "normals")
READOUT_TYPES = ("project",)


class TipsDPTConfig(PretrainedConfig):
    r"""Configuration of a TIPS vision tower with the official DPT decoder (google-deepmind/tips `pytorch/decoders.py`):
    [`TipsForSemanticSegmentation`], [`TipsForDepthEstimation`] and [`TipsForNormalEstimation`].

    Args:
        vision_config (`dict` or `TipsVisionConfig`, *optional*): the vision tower.
        task (`str`, defaults to `"segmentation"`): `"segmentation"`, `"depth"` or `"normals"` (which head the
            weights hold; the model classes read their own head size from the fields below).
        backbone_out_indices (`list[int]`, *optional*): the four 0-based blocks whose outputs (after the final
            LayerNorm, with the alt-text CLS as readout) feed the decoder; default [`official_dpt_layers`].
        dpt_channels (`int`, defaults to 256): width of the fusion blocks (256 in the released decoders).
        post_process_channels (`list[int]`, *optional*): widths of the four reassembled levels; default
            `(D/8, D/4, D/2, D)` for vision width D, the official choice.
        readout_type (`str`, defaults to `"project"`): how the CLS token enters the patches (only `"project"`:
            concat → Linear → GELU).
        num_depth_bins (`int`, defaults to 256): depth bins of [`TipsForDepthEstimation`].
        min_depth (`float`, defaults to 0.001), max_depth (`float`, defaults to 10.0): depth range in metres; the bin
            centres are `linspace(min_depth, max_depth, num_depth_bins)`.
        semantic_loss_ignore_index (`int`, defaults to 255): label ignored by the segmentation loss.
        silog_lambda (`float`, defaults to 0.85): variance weight of the scale-invariant log depth loss.
        image_resolution (`int`, defaults to 448): the image side the processor resizes to by default.
        num_labels / id2label / label2id: segmentation classes (the standard `PretrainedConfig` fields).
    """

    model_type: ClassVar[str] = "tips_dpt"
    sub_configs: ClassVar[dict] = {"vision_config": TipsVisionConfig}

    vision_config: dict | TipsVisionConfig | None = None
    task: str = "segmentation"
    backbone_out_indices: list[int] | None = None
    dpt_channels: int = 256
    post_process_channels: list[int] | None = None
    readout_type: str = "project"
    num_depth_bins: int = 256
    min_depth: float = 0.001
    max_depth: float = 10.0
    semantic_loss_ignore_index: int = 255
    silog_lambda: float = 0.85
    image_resolution: int = 448

    def __post_init__(self, **kwargs):
        value = self.vision_config
        if value is None:
            self.vision_config = TipsVisionConfig()
        elif isinstance(value, dict):
            self.vision_config = TipsVisionConfig(**{k: v for k, v in value.items() if k != "model_type"})
        elif not isinstance(value, TipsVisionConfig):
            raise ValueError(f"TipsDPTConfig.vision_config must be a dict or TipsVisionConfig, got {type(value).__name__}.")
        super().__post_init__(**kwargs)
        vision = self.vision_config
        if self.backbone_out_indices is None:
            self.backbone_out_indices = official_dpt_layers(vision.num_hidden_layers)
        self.backbone_out_indices = [int(i) for i in self.backbone_out_indices]
        if self.post_process_channels is None:
            width = vision.hidden_size
            self.post_process_channels = [width // 8, width // 4, width // 2, width]
        self.post_process_channels = [int(c) for c in self.post_process_channels]

    def check_buildable(self) -> None:
        """Raise a ValueError naming the field unless a DPT model can be built from these values (called by the
        models' constructors)."""
        vision = self.vision_config
        vision.check_buildable()
        if self.task not in DPT_TASKS:
            raise ValueError(f"TipsDPTConfig.task must be one of {DPT_TASKS}, got {self.task!r}.")
        if self.readout_type not in READOUT_TYPES:
            raise ValueError(f"TipsDPTConfig.readout_type must be one of {READOUT_TYPES}, got {self.readout_type!r}.")
        if len(self.backbone_out_indices) != 4 or any(
            not 0 <= i < vision.num_hidden_layers for i in self.backbone_out_indices
        ):
            raise ValueError(
                "TipsDPTConfig.backbone_out_indices must be 4 block indices in "
                f"[0, {vision.num_hidden_layers}), got {self.backbone_out_indices}."
            )
        if len(self.post_process_channels) != 4 or min(self.post_process_channels) <= 0:
            raise ValueError(
                f"TipsDPTConfig.post_process_channels must be 4 positive widths, got {self.post_process_channels}."
            )
        if self.dpt_channels <= 0:
            raise ValueError(f"TipsDPTConfig.dpt_channels must be a positive integer, got {self.dpt_channels}.")
        if self.num_depth_bins < 1 or not 0 < self.min_depth < self.max_depth:
            raise ValueError(
                "TipsDPTConfig needs num_depth_bins >= 1 and 0 < min_depth < max_depth, got "
                f"{self.num_depth_bins}, {self.min_depth}, {self.max_depth}."
            )

    def to_dict(self) -> dict[str, Any]:
        output = super().to_dict()
        if isinstance(self.vision_config, PretrainedConfig):
            output["vision_config"] = self.vision_config.to_dict()
        return copy.deepcopy(output)


class TipsBackboneConfig(BackboneConfigMixin, TipsVisionConfig):
    r"""A [`TipsVisionConfig`] with `out_features` / `out_indices` for [`TipsBackbone`] (`AutoBackbone`).

    Stages follow transformers' ViT backbones: `stem` (index 0) is the embedding output and `stage{k}` (index k) the
    output of block k - 1, so the official 0-based block `i` is `out_indices` entry `i + 1`.
    """

    model_type: ClassVar[str] = "tips_backbone"
    _out_features: list[str] | None = None
    _out_indices: list[int] | None = None

    def __post_init__(self, **kwargs):
        self.stage_names = ["stem"] + [f"stage{idx}" for idx in range(1, self.num_hidden_layers + 1)]
        self.set_output_features_output_indices(
            out_indices=kwargs.pop("out_indices", None), out_features=kwargs.pop("out_features", None)
        )
        super().__post_init__(**kwargs)


__all__ = ["DPT_TASKS", "TipsBackboneConfig", "TipsDPTConfig", "official_dpt_layers"]
