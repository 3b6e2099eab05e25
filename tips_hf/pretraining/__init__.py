"""TIPS pretraining: dual-caption contrastive learning with masked-image-modeling self-distillation.

from tips_hf.pretraining import load_config, train
result = train(load_config("training/configs/tiny-cpu.yaml", ["training.max_steps=100"]))
"""

from .config import PretrainConfig, load_config, save_config
from .meta_arch import TipsPretrainingModel
from .trainer import TrainResult, train

__all__ = ["PretrainConfig", "TipsPretrainingModel", "TrainResult", "load_config", "save_config", "train"]
