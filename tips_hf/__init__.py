# Copyright 2026 The tips-hf authors. Licensed under the Apache License, Version 2.0.
"""tips-hf: TIPS (Text-Image Pretraining with Spatial awareness) for the Hugging Face ecosystem.

Importing the package registers the TIPS classes with transformers' Auto classes, marks them for remote code so
that `save_pretrained` writes the self-contained module files (`tips_hf/modeling`, `tips_hf/processing`) and
`auto_map` into the folder, and lets `from_pretrained` read foreign folders (`tips_hf/conversion/foreign.py`).
"""

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
    AutoBackbone.register(TipsBackboneConfig, TipsBackbone, exist_ok=True)
    TipsForSemanticSegmentation.register_for_auto_class("AutoModelForSemanticSegmentation")
    TipsForDepthEstimation.register_for_auto_class("AutoModelForDepthEstimation")
    TipsForNormalEstimation.register_for_auto_class("AutoModel")
    TipsBackbone.register_for_auto_class("AutoBackbone")


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
