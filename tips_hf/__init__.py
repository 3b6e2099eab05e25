# Copyright 2026 The tips-hf authors. Licensed under the Apache License, Version 2.0.
"""tips-hf: TIPS (Text-Image Pretraining with Spatial awareness) for the Hugging Face ecosystem.

Importing the package registers the TIPS classes with transformers' Auto classes, marks them for remote code so
that `save_pretrained` writes the self-contained module files (`tips_hf/modeling`, `tips_hf/processing`) and
`auto_map` into the folder, and lets `from_pretrained` read foreign folders (`tips_hf/conversion/foreign.py`).
"""

import functools
import os
from collections.abc import Callable
from typing import Any

from transformers import (
    AutoBackbone,
    AutoConfig,
    AutoImageProcessor,
    AutoModel,
    AutoModelForDepthEstimation,
    AutoModelForSemanticSegmentation,
    AutoModelForZeroShotImageClassification,
    AutoProcessor,
    AutoTokenizer,
    AutoVideoProcessor,
)

from .modeling.configuration_dense_tips import TipsBackboneConfig, TipsDPTConfig
from .modeling.configuration_tips import TipsConfig, TipsTextConfig, TipsVisionConfig
from .modeling.modeling_dense_tips import (
    TipsBackbone,
    TipsForDepthEstimation,
    TipsForNormalEstimation,
    TipsForSemanticSegmentation,
    TipsNormalEstimatorOutput,
)
from .modeling.modeling_tips import (
    TipsModel,
    TipsOutput,
    TipsPreTrainedModel,
    TipsTextModel,
    TipsVisionModel,
    TipsVisionModelOutput,
)
from .processing.image_processing_tips import TipsImageProcessor
from .processing.processing_tips import TipsProcessor
from .processing.tokenization_tips import TipsTokenizer

__version__ = "0.1.0"


def _load_foreign_checkpoint(path: str, shapes_for: Callable, **hub_kwargs: Any):
    from .conversion.foreign import load_foreign_checkpoint  # imported on first use: `import tips_hf` stays light

    return load_foreign_checkpoint(path, shapes_for, **hub_kwargs)


def _register() -> None:
    # TipsModel.from_pretrained reads transformers-native Tipsv2 and google/tipsv2-* Hub folders through our tables.
    TipsPreTrainedModel.foreign_checkpoint_loader = staticmethod(_load_foreign_checkpoint)
    for config in (TipsConfig, TipsVisionConfig, TipsTextConfig):
        AutoConfig.register(config.model_type, config, exist_ok=True)
    AutoModel.register(TipsConfig, TipsModel, exist_ok=True)
    AutoModel.register(TipsVisionConfig, TipsVisionModel, exist_ok=True)
    AutoModel.register(TipsTextConfig, TipsTextModel, exist_ok=True)
    AutoModelForZeroShotImageClassification.register(TipsConfig, TipsModel, exist_ok=True)
    AutoImageProcessor.register(TipsConfig, fast_image_processor_class=TipsImageProcessor, exist_ok=True)
    AutoTokenizer.register(TipsConfig, slow_tokenizer_class=TipsTokenizer, exist_ok=True)
    AutoProcessor.register(TipsConfig, TipsProcessor, exist_ok=True)
    # Saved folders carry the module files and an auto_map, so they load with trust_remote_code=True anywhere.
    TipsConfig.register_for_auto_class()
    TipsModel.register_for_auto_class("AutoModel")
    TipsVisionModel.register_for_auto_class("AutoModel")
    TipsTextModel.register_for_auto_class("AutoModel")
    TipsImageProcessor.register_for_auto_class("AutoImageProcessor")
    TipsTokenizer.register_for_auto_class("AutoTokenizer")
    TipsProcessor.register_for_auto_class("AutoProcessor")
    _register_dense()


def _register_dense() -> None:
    """DPT models (one config class, one folder per task) and the backbone."""
    for config in (TipsDPTConfig, TipsBackboneConfig):
        AutoConfig.register(config.model_type, config, exist_ok=True)
        AutoImageProcessor.register(config, fast_image_processor_class=TipsImageProcessor, exist_ok=True)
        config.register_for_auto_class()
    AutoModelForSemanticSegmentation.register(TipsDPTConfig, TipsForSemanticSegmentation, exist_ok=True)
    AutoModelForDepthEstimation.register(TipsDPTConfig, TipsForDepthEstimation, exist_ok=True)
    # One config class, three task classes: AutoModel picks the one named in the folder's `architectures` (without
    # this, AutoModel found only the folder's remote-code auto_map and asked whether to run it).
    dpt_models = (TipsForSemanticSegmentation, TipsForDepthEstimation, TipsForNormalEstimation)
    AutoModel.register(TipsDPTConfig, dpt_models, exist_ok=True)
    AutoBackbone.register(TipsBackboneConfig, TipsBackbone, exist_ok=True)
    TipsForSemanticSegmentation.register_for_auto_class("AutoModelForSemanticSegmentation")
    TipsForDepthEstimation.register_for_auto_class("AutoModelForDepthEstimation")
    TipsForNormalEstimation.register_for_auto_class("AutoModel")
    TipsBackbone.register_for_auto_class("AutoBackbone")
    _register_no_video_processor()
    _auto_backbone_reads_local_folders()


class _TipsNoVideoProcessor:
    """What `AutoVideoProcessor` finds for a TIPS config: TIPS has no video processor.

    `pipeline(...)` tries `AutoVideoProcessor` on every vision model. For a folder whose `preprocessor_config.json`
    carries `auto_map.AutoImageProcessor = "image_processing_tips.TipsImageProcessor"` (DPT, vision-only, backbone
    folders and TipsModel folders converted without a tokenizer), transformers guesses a remote `image_processing_tips.TipsVideoProcessor` and, with no local video
    processor registered for the config, asks on stdin whether to run remote code (up to 15 s, then gives up). With
    this class registered the answer is local and immediate: there is none, and the pipeline goes on without one.
    """

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args: Any, **kwargs: Any):
        raise ValueError(
            f"{pretrained_model_name_or_path}: TIPS models have no video processor; load the image processor with "
            "AutoImageProcessor (or the TipsProcessor with AutoProcessor)."
        )

    @classmethod
    def from_dict(cls, config_dict: dict, *args: Any, **kwargs: Any):
        raise ValueError(
            "TIPS models have no video processor; load the image processor with AutoImageProcessor (or the "
            "TipsProcessor with AutoProcessor)."
        )


def _register_no_video_processor() -> None:
    for config in (TipsConfig, TipsVisionConfig, TipsDPTConfig, TipsBackboneConfig):
        AutoVideoProcessor.register(config, _TipsNoVideoProcessor, exist_ok=True)


def _auto_backbone_reads_local_folders() -> None:
    """`AutoBackbone.from_pretrained(folder)` loads the folder as every other Auto class does, without the Hub.

    transformers 5 (5.14-5.25 at least) asks the Hub `repo_exists(name)` before anything else, to send names that are
    not Hub repositories to timm. A local folder then fails: an absolute path is not a valid repo id
    (HFValidationError), a relative one is looked up over the network, and with HF_HUB_OFFLINE=1 or
    `local_files_only=True` the question cannot be asked at all. In those cases the Hub question is skipped; any other
    name (a Hub repo id, a timm model name online) goes through transformers' own method unchanged.
    """
    hub_first = AutoBackbone.from_pretrained.__func__
    if getattr(hub_first, "_tips_hf_local_first", False):
        return
    # The class that defines the Hub-first method: its parent's from_pretrained is the ordinary Auto loader.
    owner = next(klass for klass in AutoBackbone.__mro__ if "from_pretrained" in vars(klass))

    @functools.wraps(hub_first)
    def from_pretrained(cls, pretrained_model_name_or_path, *model_args: Any, **kwargs: Any):
        from huggingface_hub import constants

        local = isinstance(pretrained_model_name_or_path, (str, os.PathLike)) and os.path.isdir(
            pretrained_model_name_or_path
        )
        if local or kwargs.get("local_files_only") or constants.HF_HUB_OFFLINE:
            kwargs.pop("use_timm_backbone", None)
            return super(owner, cls).from_pretrained(pretrained_model_name_or_path, *model_args, **kwargs)
        return hub_first(cls, pretrained_model_name_or_path, *model_args, **kwargs)

    from_pretrained._tips_hf_local_first = True
    AutoBackbone.from_pretrained = classmethod(from_pretrained)


_register()

__all__ = [
    "TipsBackbone",
    "TipsBackboneConfig",
    "TipsConfig",
    "TipsDPTConfig",
    "TipsForDepthEstimation",
    "TipsForNormalEstimation",
    "TipsForSemanticSegmentation",
    "TipsNormalEstimatorOutput",
    "TipsImageProcessor",
    "TipsModel",
    "TipsOutput",
    "TipsPreTrainedModel",
    "TipsProcessor",
    "TipsTextConfig",
    "TipsTextModel",
    "TipsTokenizer",
    "TipsVisionConfig",
    "TipsVisionModel",
    "TipsVisionModelOutput",
]
