"""The settings of fine-tuning (`training/finetune.py`, `training.task: segmentation | depth | contrastive`): the
schema, its loader, and which schema a config file belongs to."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Literal

from ..pretraining.config import (
    DataSource,
    LoraSection,
    MixedPrecision,
    PretrainConfig,
    Schema,
    Section,
    config_documents,
    setting,
)
from ..pretraining.tracking import REPORT_TO_HELP, tracker_names


@dataclass
class DenseModelSection(Section):
    """The model to fine-tune and, for the dense tasks, the new head."""

    base: str = setting("outputs/tiny-cpu/final", "TipsModel folder (or Hub id) to fine-tune")
    head: Literal["linear", "mlp", "dpt"] = setting(
        "linear", "dense tasks: linear | mlp (on the last patch grid) | dpt (the official DPT decoder on 4 blocks)")
    attn_implementation: str = setting("sdpa", "eager | sdpa | flash_attention_2 | flex_attention")
    dpt_channels: int = setting(64, 'head "dpt": fusion width (256 in the released decoders)')
    depth_bins: int = setting(64, 'head "dpt", task depth: bins of the expectation head (256 released)')
    min_depth: float = setting(0.001, 'head "dpt", task depth: lowest bin centre (NYU: 0.001 m)')
    max_depth: float = setting(10.0, 'head "dpt", task depth: highest bin centre (NYU: 10 m)')


@dataclass
class DenseDataSection(Section):
    """Images with label maps (segmentation class ids or depths) or with captions (contrastive)."""

    source: DataSource = setting("scenes", "scenes (embedded) | imagefolder | parquet | arrow | webdataset | hub")
    path: str | None = setting(None, "folder, file glob or dataset name (not used by `scenes`)")
    split: str = setting("train", "split to train on")
    eval_split: str = setting("validation", "split to evaluate on")
    image_column: str = setting("image", "column holding the image")
    label_column: str = setting(
        "class_mask", "dense tasks: segmentation map (class ids) or depth map, as an image or array")
    alt_text_column: str = setting("alt_text", "contrastive: the captions of the alt-text head (CLS-1)")
    synthetic_column: str | None = setting(
        "synthetic_captions", "contrastive: the captions of the synthetic-caption head (CLS-2), a string or a list per "
        "row (one drawn per example and epoch, seeded); null: both heads train on alt_text_column")
    max_text_length: int = setting(64, "contrastive: caption tokens, padded or cut (the official 64)")
    num_classes: int | None = setting(None, "segmentation classes; null: the scenes' classes")
    num_examples: int = setting(400, "training examples (0: the whole split of a dataset)")
    eval_examples: int = setting(200, "evaluation examples (0: the whole split of a dataset)")
    scene_image_size: int = setting(112, "image side of the embedded scenes")
    scene_options: dict = setting({}, "other SceneConfig fields (e.g. max_objects) of the scenes")
    image_size: int = setting(112, "model input side (multiple of 14)")
    flip_probability: float = setting(
        0.5, "dense tasks: probability of a horizontal flip (contrastive: none, captions may say left or right)")
    reduce_labels: bool = setting(
        False, 'ADE20K layout: class 0 ("other") -> 255 (ignored), class k -> k - 1')
    depth_offset: float = setting(
        0.0, "added to depth labels (the scenes' depth order starts at 0; SILog needs depth > 0)")
    num_workers: int = setting(0, "DataLoader worker processes (decoding and resizing off the training process)")


@dataclass
class DenseOptimSection(Section):
    """AdamW with a cosine schedule."""

    lr: float = setting(1e-3, "peak learning rate")
    min_lr: float = setting(1e-5, "final learning rate (cosine)")
    warmup_steps: int = setting(20, "linear warm-up from 0")
    weight_decay: float = setting(0.01, "AdamW weight decay")
    grad_clip: float = setting(1.0, "max gradient norm; 0 disables clipping")


@dataclass
class DenseTrainingSection(Section):
    """The run."""

    task: Literal["segmentation", "depth", "contrastive"] = setting(
        "segmentation", "segmentation (class ids, cross-entropy) | depth (depth maps) | contrastive (both heads against "
        "their captions, negatives from every process; Recall@K)")
    output_dir: str = setting("outputs/finetune", "run folder (adapter, head, metrics)")
    max_steps: int = setting(200, "optimizer steps")
    batch_size: int = setting(32, "per process")
    seed: int = setting(0, "random seed")
    logging_steps: int = setting(20, "steps between metric records")
    mixed_precision: MixedPrecision = setting("no", "autocast precision of the forward and backward passes")
    progress_bar: bool = setting(True, "show a progress bar")
    save_steps: int = setting(0, "steps between checkpoints (checkpoint-<step>: model, optimizer, RNG, step); 0: none")
    keep_last: int = setting(2, "checkpoints kept")
    resume_from_checkpoint: str | None = setting(None, "latest | a checkpoint folder")
    save_on_signal: bool = setting(
        True, "on SIGTERM / SIGUSR1 save a checkpoint after the step in progress and stop (exit 128 + the signal)")
    gradient_accumulation_steps: int = setting(
        1, "micro-batches per optimizer step (the global batch: batch_size x processes x this)")
    eval_steps: int = setting(
        0, "steps between evaluations of the eval split (spread over the processes, scores accumulated batch by batch); "
        "0: only at the end")
    eval_batch_size: int = setting(16, "evaluation batch per process")
    eval_on_start: bool = setting(False, "also evaluate before the first step (reported as eval_before)")
    report_to: str | list[str] = setting("tensorboard", REPORT_TO_HELP)
    push_to_hub: bool = setting(False, "upload the run folder (adapter, head or model, metrics) to the Hub at the end")
    hub_model_id: str | None = setting(None, "push_to_hub: the repository (namespace/name)")


@dataclass
class FinetuneConfig(Schema):
    model: DenseModelSection = field(default_factory=DenseModelSection)
    lora: LoraSection = field(default_factory=lambda: LoraSection(enabled=True, preset="vision"))
    data: DenseDataSection = field(default_factory=DenseDataSection)
    optim: DenseOptimSection = field(default_factory=DenseOptimSection)
    training: DenseTrainingSection = field(default_factory=DenseTrainingSection)

    def validate(self) -> FinetuneConfig:
        tracker_names(self.training.report_to)
        if self.data.image_size % 14:
            raise ValueError(f"data.image_size must be a multiple of 14, got {self.data.image_size}.")
        for name in ("max_steps", "batch_size", "logging_steps", "gradient_accumulation_steps", "eval_batch_size"):
            if getattr(self.training, name) < 1:
                raise ValueError(f"training.{name} must be at least 1, got {getattr(self.training, name)}.")
        for name in ("eval_steps", "save_steps"):
            if getattr(self.training, name) < 0:
                raise ValueError(f"training.{name} must be 0 (off) or positive, got {getattr(self.training, name)}.")
        if self.training.push_to_hub:
            from ..hub.publishing import check_repo_id

            if not self.training.hub_model_id:
                raise ValueError("training.push_to_hub needs training.hub_model_id (namespace/name).")
            check_repo_id(self.training.hub_model_id, "training.hub_model_id")
        self.lora.check()
        return self


def load_finetune_config(path: str | os.PathLike | None, overrides: list[str] | None = None) -> FinetuneConfig:
    """A `FinetuneConfig` from a YAML file and `section.key=value` overrides (the loader of
    `tips_hf.pretraining.load_config`)."""
    return FinetuneConfig.load(path, overrides)


def finetune_schema(path: str | os.PathLike | None) -> type[Schema]:
    """The schema of a config file: `FinetuneConfig` when it (or a base) sets `training.task` (and without a file),
    else `PretrainConfig` (a pretraining config, for `training/pretrain.py`)."""
    if path is None or any("task" in document.get("training", {}) for _, document in config_documents(path)):
        return FinetuneConfig
    return PretrainConfig
