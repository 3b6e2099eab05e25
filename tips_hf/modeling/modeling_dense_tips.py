# Copyright 2026 The tips-hf authors. Licensed under the Apache License, Version 2.0.
"""Dense prediction with TIPS: the official DPT decoder (google-deepmind/tips `pytorch/decoders.py`) on a TIPS vision
tower, for semantic segmentation, monocular depth and surface normals, plus a `TipsBackbone` for `AutoBackbone`.

Self-contained: imports only torch, transformers and sibling `*_tips.py` modules, so that a saved folder loads with
`trust_remote_code=True` where `tips_hf` is not installed.

Losses (when `labels` are given), each computed at the label resolution after bilinear upsampling of the output:
- segmentation: cross-entropy, `config.semantic_loss_ignore_index` (255) ignored;
- depth: the scale-invariant log loss (SILog, Eigen et al. 2014, as AdaBins/BinsFormer train bin-expectation heads):
  `sqrt(mean(g²) - λ·mean(g)²)`, `g = log(pred) - log(target)` over valid pixels (finite, > 0), λ =
  `config.silog_lambda`. It trains the official bins + expectation head end to end on metric depth, where a bin
  classification loss would need targets quantised to the bins and would ignore how far off a wrong bin is;
- normals: mean `1 - cos(pred, target)` over valid pixels (finite targets of non-zero length), the angular error that
  normal estimation reports, insensitive to the (unconstrained) length of the raw prediction.
"""

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import initialization as init
from transformers.backbone_utils import BackboneMixin
from transformers.modeling_outputs import BackboneOutput, DepthEstimatorOutput, SemanticSegmenterOutput
from transformers.processing_utils import Unpack
from transformers.utils import ModelOutput, TransformersKwargs
from transformers.utils.generic import can_return_tuple
from transformers.utils.output_capturing import capture_outputs

from .configuration_dense_tips import TipsBackboneConfig, TipsDPTConfig
from .modeling_tips import TipsPreTrainedModel, TipsVisionModel

# ----------------------------------------------------------------------------------------------------------------------
# Outputs


@dataclass
class TipsNormalEstimatorOutput(ModelOutput):
    r"""Output of [`TipsForNormalEstimation`].

    Args:
        loss (`torch.FloatTensor` of shape `()`, *optional*): mean `1 - cosine` to `labels`, when given.
        predicted_normals (`torch.FloatTensor` of shape `(batch_size, 3, height', width')`): raw normal vectors at the
            decoder's resolution `(16⌈h/2⌉, 16⌈w/2⌉)` for an (h, w) patch grid, not normalised (as the official
            decoder returns them).
        hidden_states (`tuple(torch.FloatTensor)`, *optional*): one tensor, the decoder features before the head,
            `(batch_size, dpt_channels, height', width')`; returned with `output_hidden_states=True` (as for the
            segmentation and depth models).
    """

    loss: torch.FloatTensor | None = None
    predicted_normals: torch.FloatTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None


# ----------------------------------------------------------------------------------------------------------------------
# DPT decoder (module layout and arithmetic of the official `Decoder`)


class TipsDPTResidualUnit(nn.Module):
    """Pre-activation residual unit: x + conv(relu(conv(relu(x)))), 3×3 convolutions without bias."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return hidden + self.conv2(F.relu(self.conv1(F.relu(hidden))))


class TipsDPTFusionBlock(nn.Module):
    """(+ residual unit of the skip input) → residual unit → 2× bilinear upsampling (align_corners=True) → 1×1 conv."""

    def __init__(self, channels: int, has_skip: bool):
        super().__init__()
        self.skip_unit = TipsDPTResidualUnit(channels) if has_skip else None
        self.main_unit = TipsDPTResidualUnit(channels)
        self.out_conv = nn.Conv2d(channels, channels, 1)

    def forward(self, hidden: torch.Tensor, skip: torch.Tensor | None = None) -> torch.Tensor:
        if self.skip_unit is not None and skip is not None:
            if skip.shape != hidden.shape:
                skip = F.interpolate(skip, size=hidden.shape[2:], mode="bilinear", align_corners=False)
            hidden = hidden + self.skip_unit(skip)
        hidden = self.main_unit(hidden)
        hidden = F.interpolate(hidden, scale_factor=2, mode="bilinear", align_corners=True)
        return self.out_conv(hidden)


class TipsDPTReassemble(nn.Module):
    """Per level: readout projection of concat(patch, CLS) → GELU (tanh) → 1×1 conv → resize (4×, 2×, 1×, ½×)."""

    def __init__(self, hidden_size: int, channels: list[int]):
        super().__init__()
        self.readout_projects = nn.ModuleList([nn.Linear(2 * hidden_size, hidden_size) for _ in channels])
        self.out_projections = nn.ModuleList([nn.Conv2d(hidden_size, c, 1) for c in channels])
        self.resize_layers = nn.ModuleList(
            [
                nn.ConvTranspose2d(channels[0], channels[0], kernel_size=4, stride=4),
                nn.ConvTranspose2d(channels[1], channels[1], kernel_size=2, stride=2),
                nn.Identity(),
                nn.Conv2d(channels[3], channels[3], 3, stride=2, padding=1),
            ]
        )

    def forward(self, features: list[tuple[torch.Tensor, torch.Tensor]]) -> list[torch.Tensor]:
        out = []
        for index, (patches, cls) in enumerate(features):
            batch, dim, height, width = patches.shape
            tokens = patches.flatten(2).transpose(1, 2)
            tokens = torch.cat([tokens, cls[:, None].expand(-1, tokens.shape[1], -1)], dim=-1)
            tokens = F.gelu(self.readout_projects[index](tokens), approximate="tanh")
            hidden = tokens.transpose(1, 2).reshape(batch, dim, height, width)
            out.append(self.resize_layers[index](self.out_projections[index](hidden)))
        return out


class TipsDPTDecoder(nn.Module):
    """The official DPT head without its task layer: four block outputs on an (h, w) patch grid →
    (B, dpt_channels, 16⌈h/2⌉, 16⌈w/2⌉) (the coarsest level is the grid at stride 2, doubled four times)."""

    def __init__(self, config: TipsDPTConfig):
        super().__init__()
        channels = config.dpt_channels
        self.reassemble = TipsDPTReassemble(config.vision_config.hidden_size, config.post_process_channels)
        self.convs = nn.ModuleList(
            [nn.Conv2d(c, channels, 3, padding=1, bias=False) for c in config.post_process_channels]
        )
        self.fusion_blocks = nn.ModuleList([TipsDPTFusionBlock(channels, has_skip=i > 0) for i in range(4)])
        self.project = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, features: list[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
        levels = [conv(level) for conv, level in zip(self.convs, self.reassemble(features))]
        hidden = self.fusion_blocks[0](levels[-1])
        for index in range(1, 4):
            hidden = self.fusion_blocks[index](hidden, levels[-(index + 1)])
        return self.project(hidden)


def depth_from_bins(logits: torch.Tensor, min_depth: float, max_depth: float) -> torch.Tensor:
    """Official depth head: weights `relu(logits) + min_depth` normalised over the bins, expectation over the bin
    centres `linspace(min_depth, max_depth, bins)`. (B, bins, h, w) → (B, h, w); one bin: `relu + min_depth`."""
    if logits.shape[1] == 1:
        return F.relu(logits[:, 0]) + min_depth
    weights = F.relu(logits) + min_depth
    weights = weights / weights.sum(dim=1, keepdim=True)
    centres = torch.linspace(min_depth, max_depth, logits.shape[1], device=logits.device, dtype=logits.dtype)
    return torch.einsum("bkhw,k->bhw", weights, centres)


def _upsample(maps: torch.Tensor, size: tuple[int, ...]) -> torch.Tensor:
    return F.interpolate(maps, size=tuple(size), mode="bilinear", align_corners=False)


def segmentation_loss(logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = 255) -> torch.Tensor:
    """Cross-entropy of (B, K, h, w) logits upsampled to the (B, H, W) labels; `ignore_index` pixels do not count."""
    return F.cross_entropy(_upsample(logits, labels.shape[-2:]), labels.long(), ignore_index=ignore_index)


def silog_loss(depth: torch.Tensor, labels: torch.Tensor, variance_weight: float = 0.85) -> torch.Tensor:
    """Scale-invariant log loss of (B, h, w) depth upsampled to the (B, H, W) labels, over valid (finite, > 0) pixels:
    `sqrt(mean(g²) - λ mean(g)²)` with `g = log(pred) - log(target)`."""
    depth = _upsample(depth[:, None], labels.shape[-2:])[:, 0]
    valid = torch.isfinite(labels) & (labels > 0)
    if not valid.any():
        return depth.sum() * 0.0
    diff = torch.log(depth[valid].clamp_min(1e-6)) - torch.log(labels[valid])
    return torch.sqrt((diff.pow(2).mean() - variance_weight * diff.mean().pow(2)).clamp_min(1e-12))


def normals_loss(normals: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean `1 - cos` between (B, 3, h, w) predictions upsampled to the (B, 3, H, W) labels, over pixels whose label is
    finite and of non-zero length (zero vectors mark missing ground truth)."""
    normals = _upsample(normals, labels.shape[-2:])
    valid = torch.isfinite(labels).all(dim=1) & (labels.nan_to_num(0.0).norm(dim=1) > 1e-6)
    if not valid.any():
        return normals.sum() * 0.0
    cosine = F.cosine_similarity(normals, labels.nan_to_num(0.0), dim=1, eps=1e-6)
    return (1.0 - cosine[valid]).mean()


# ----------------------------------------------------------------------------------------------------------------------
# Models


class TipsDPTPreTrainedModel(TipsPreTrainedModel):
    config: TipsDPTConfig
    config_class = TipsDPTConfig
    base_model_prefix = "vision_model"  # a TipsVisionModel folder initialises the tower (decoder freshly initialised)
    main_input_name = "pixel_values"
    input_modalities = ("image",)
    _no_split_modules = ["TipsVisionEmbeddings", "TipsVisionLayer"]

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, nn.ConvTranspose2d):
            init.trunc_normal_(module.weight, mean=0.0, std=self.config.vision_config.initializer_range)
            if module.bias is not None:
                init.zeros_(module.bias)
        else:
            super()._init_weights(module)


class _TipsDPTModel(TipsDPTPreTrainedModel):
    """Vision tower + DPT decoder + a per-pixel linear task head of `_head_size(config)` outputs."""

    _auto_class_name = "AutoModel"

    def __init__(self, config: TipsDPTConfig):
        config.check_buildable()
        super().__init__(config)
        self.vision_model = TipsVisionModel._from_config(config.vision_config)
        self.decoder = TipsDPTDecoder(config)
        self.head = nn.Linear(config.dpt_channels, self._head_size(config))
        self.post_init()

    @staticmethod
    def _head_size(config: TipsDPTConfig) -> int:
        raise NotImplementedError

    def get_input_embeddings(self) -> nn.Module:
        return self.vision_model.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.vision_model.set_input_embeddings(value)

    def decode(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(head output (B, out, H', W'), decoder features (B, dpt_channels, H', W')) for images (B, 3, 14h, 14w), with
        (H', W') = (16⌈h/2⌉, 16⌈w/2⌉)."""
        features = self.vision_model.get_intermediate_layers(
            pixel_values, self.config.backbone_out_indices, norm=True
        )
        hidden = self.decoder(features)
        return self.head(hidden.permute(0, 2, 3, 1)).permute(0, 3, 1, 2), hidden

    def save_pretrained(self, save_directory, *args: Any, **kwargs: Any):
        if self._auto_class is not None:
            # Remote code: one folder holds one task; the Auto class of that task (and AutoModel) load it.
            auto_map = dict(getattr(self.config, "auto_map", None) or {})
            auto_map[self._auto_class_name] = f"modeling_dense_tips.{type(self).__name__}"
            auto_map["AutoModel"] = f"modeling_dense_tips.{type(self).__name__}"
            self.config.auto_map = auto_map
        return super().save_pretrained(save_directory, *args, **kwargs)

    @can_return_tuple
    def forward(
        self,
        pixel_values: torch.Tensor,
        labels: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        **kwargs: Any,
    ) -> ModelOutput | tuple:
        r"""
        Args:
            pixel_values (`torch.FloatTensor` of shape `(batch_size, 3, height, width)`): RGB in [0, 1], sides multiples
                of the patch size (448×448 as released).
            labels (`torch.Tensor`, *optional*): targets at any resolution, giving `loss` (see the task's class).
            output_hidden_states (`bool`, *optional*): also return the decoder features before the head,
                `(batch_size, dpt_channels, H', W')`; defaults to `config.output_hidden_states`.

        Returns:
            The task's output at the decoder resolution H' = 16⌈height/28⌉, W' = 16⌈width/28⌉ (upsample bilinearly
            with align_corners=False to the image, as the official decoder does).
        """
        if output_hidden_states is None:
            output_hidden_states = self.config.output_hidden_states
        if kwargs.get("output_attentions"):  # not dropped silently: the decoder reads the tower's layer outputs only
            raise ValueError(
                f"{type(self).__name__} does not return attentions; for the vision tower's attention maps call "
                "model.vision_model(pixel_values=..., output_attentions=True)."
            )
        head, hidden = self.decode(pixel_values)
        return self._output(head, labels, (hidden,) if output_hidden_states else None)

    def _output(self, head: torch.Tensor, labels: torch.Tensor | None, hidden_states: tuple | None) -> ModelOutput:
        raise NotImplementedError


class TipsForSemanticSegmentation(_TipsDPTModel):
    """TIPS vision tower + the official DPT segmentation decoder (ADE20K: 150 classes)."""

    _auto_class_name = "AutoModelForSemanticSegmentation"

    @staticmethod
    def _head_size(config: TipsDPTConfig) -> int:
        return config.num_labels

    def _output(self, logits, labels, hidden_states) -> SemanticSegmenterOutput:
        """`logits` (batch_size, num_labels, H', W'); `labels` (batch_size, H, W) class ids, with
        `config.semantic_loss_ignore_index` (255) for unlabelled pixels: cross-entropy."""
        loss = None if labels is None else segmentation_loss(logits, labels, self.config.semantic_loss_ignore_index)
        return SemanticSegmenterOutput(loss=loss, logits=logits, hidden_states=hidden_states)


class TipsForDepthEstimation(_TipsDPTModel):
    """TIPS vision tower + the official DPT depth decoder (NYU: 256 bins on [0.001, 10] m, expectation over bins)."""

    _auto_class_name = "AutoModelForDepthEstimation"

    @staticmethod
    def _head_size(config: TipsDPTConfig) -> int:
        return config.num_depth_bins

    def _output(self, logits, labels, hidden_states) -> DepthEstimatorOutput:
        """`predicted_depth` (batch_size, H', W') in metres; `labels` (batch_size, H, W) metric depth, pixels that are
        not finite or not > 0 ignored: SILog (see the module docstring)."""
        depth = depth_from_bins(logits, self.config.min_depth, self.config.max_depth)
        loss = None if labels is None else silog_loss(depth, labels.float(), self.config.silog_lambda)
        return DepthEstimatorOutput(loss=loss, predicted_depth=depth, hidden_states=hidden_states)


class TipsForNormalEstimation(_TipsDPTModel):
    """TIPS vision tower + the official DPT surface-normals decoder (3 outputs per pixel)."""

    _auto_class_name = "AutoModel"

    @staticmethod
    def _head_size(config: TipsDPTConfig) -> int:
        return 3

    def _output(self, normals, labels, hidden_states) -> TipsNormalEstimatorOutput:
        """[`TipsNormalEstimatorOutput`], `predicted_normals` (batch_size, 3, H', W'); `labels` (batch_size, 3, H, W)
        unit normals, zero or non-finite vectors ignored: mean 1 - cosine."""
        loss = None if labels is None else normals_loss(normals, labels.float())
        return TipsNormalEstimatorOutput(loss=loss, predicted_normals=normals, hidden_states=hidden_states)


class TipsBackbone(BackboneMixin, TipsVisionModel):
    """The TIPS vision tower as a transformers backbone: `feature_maps` are the outputs of the stages in
    `config.out_features` after the final LayerNorm, as `(batch_size, hidden_size, height // 14, width // 14)` maps
    (stage `k` = block `k - 1`; see [`TipsBackboneConfig`]). The tower's modules are `TipsVisionModel`'s, so it loads
    the weights of a `TipsVisionModel` folder."""

    config: TipsBackboneConfig
    config_class = TipsBackboneConfig

    def __init__(self, config: TipsBackboneConfig):
        super().__init__(config)  # the tower (TipsVisionModel), then the stages and out_features (BackboneMixin)
        self.num_features = [config.hidden_size] * (config.num_hidden_layers + 1)

    @capture_outputs(tie_last_hidden_states=False)
    def forward(self, pixel_values: torch.Tensor, **kwargs: Unpack[TransformersKwargs]) -> BackboneOutput | tuple:
        r"""
        Args:
            pixel_values (`torch.FloatTensor` of shape `(batch_size, 3, height, width)`): images in [0, 1].

        Returns:
            `BackboneOutput` with `feature_maps`, one `(batch_size, hidden_size, height // 14, width // 14)` map per
            entry of `config.out_features`; `hidden_states` (every stage, before the LayerNorm) and `attentions` with
            `output_hidden_states=True` / `output_attentions=True`.
        """
        hidden = self.embeddings(pixel_values)
        states = [hidden]  # stage k is the output of block k - 1 (the stem: the embeddings)
        for layer in self.encoder.layers:
            hidden = layer(hidden, None, **kwargs)[0]
            states.append(hidden)
        batch, _, height, width = pixel_values.shape
        grid = (height // self.config.patch_size, width // self.config.patch_size)
        first_patch = 1 + self.config.num_register_tokens
        maps = tuple(
            self.layernorm(state)[:, first_patch:].transpose(1, 2).reshape(batch, -1, *grid)
            for stage, state in zip(self.stage_names, states)
            if stage in self.out_features
        )
        return BackboneOutput(feature_maps=maps)


__all__ = [
    "TipsBackbone",
    "TipsDPTDecoder",
    "TipsDPTPreTrainedModel",
    "TipsForDepthEstimation",
    "TipsForNormalEstimation",
    "TipsForSemanticSegmentation",
    "TipsNormalEstimatorOutput",
    "depth_from_bins",
    "normals_loss",
    "segmentation_loss",
    "silog_loss",
]
