"""Dense fine-tuning (segmentation / depth) of TIPS with a new head, the backbone frozen or adapted with LoRA.

Contrastive domain adaptation with LoRA runs through the pretraining loop instead (`lora` section of a pretraining
config, see `training/configs/finetune_contrastive_tiny.yaml`).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from .._paths import check_model_path, check_model_paths
from ..pretraining.checkpointing import (
    StopSignals,
    TrainerState,
    load_checkpoint,
    maybe_fault,
    resolve_checkpoint,
    save_checkpoint,
    stop_notice,
    truncate_metrics,
)
from ..pretraining.config import (
    DataSource,
    LoraSection,
    MixedPrecision,
    PretrainConfig,
    Schema,
    Section,
    config_documents,
    launcher_precision_conflict,
    prepare_launch_environment,
    setting,
)
from ..pretraining.data import (
    GlobalBatchSampler,
    pixels_to_model,
    processor_normalisation,
    sample_generator,
    square_image_processor,
)
from ..pretraining.schedules import cosine
from ..pretraining.tracking import REPORT_TO_HELP, flat_hyperparameters, log_with, tracker_names
from .dense import TipsForDenseTasks


@dataclass
class DenseModelSection(Section):
    """The backbone to fine-tune and the new head."""

    base: str = setting("outputs/tiny-cpu/final", "TipsModel folder to fine-tune")
    head: Literal["linear", "mlp", "dpt"] = setting(
        "linear", "linear | mlp (on the last patch grid) | dpt (the official DPT decoder on 4 blocks)")
    attn_implementation: str = setting("sdpa", "eager | sdpa | flash_attention_2 | flex_attention")
    dpt_channels: int = setting(64, 'head "dpt": fusion width (256 in the released decoders)')
    depth_bins: int = setting(64, 'head "dpt", task depth: bins of the expectation head (256 released)')
    min_depth: float = setting(0.001, 'head "dpt", task depth: lowest bin centre (NYU: 0.001 m)')
    max_depth: float = setting(10.0, 'head "dpt", task depth: highest bin centre (NYU: 10 m)')


@dataclass
class DenseDataSection(Section):
    """Images and label maps (segmentation class ids or depths)."""

    source: DataSource = setting("scenes", "scenes (embedded) | imagefolder | parquet | arrow | webdataset | hub")
    path: str | None = setting(None, "folder, file glob or dataset name (not used by `scenes`)")
    split: str = setting("train", "split to train on")
    eval_split: str = setting("validation", "split to evaluate on")
    image_column: str = setting("image", "column holding the image")
    label_column: str = setting(
        "class_mask", "segmentation map (class ids) or depth map, as an image or array")
    num_classes: int | None = setting(None, "segmentation classes; null: the scenes' classes")
    num_examples: int = setting(400, "training examples (0: the whole split of a dataset)")
    eval_examples: int = setting(200, "evaluation examples (0: the whole split of a dataset)")
    scene_image_size: int = setting(112, "image side of the embedded scenes")
    scene_options: dict = setting({}, "other SceneConfig fields (e.g. max_objects) of the scenes")
    image_size: int = setting(112, "model input side (multiple of 14)")
    flip_probability: float = setting(0.5, "probability of a horizontal flip")
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

    task: Literal["segmentation", "depth"] = setting(
        "segmentation", "segmentation (class ids, cross-entropy) | depth (depth maps)")
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
    report_to: str | list[str] = setting("tensorboard", REPORT_TO_HELP)


@dataclass
class DenseFinetuneConfig(Schema):
    model: DenseModelSection = field(default_factory=DenseModelSection)
    lora: LoraSection = field(default_factory=lambda: LoraSection(enabled=True, preset="vision"))
    data: DenseDataSection = field(default_factory=DenseDataSection)
    optim: DenseOptimSection = field(default_factory=DenseOptimSection)
    training: DenseTrainingSection = field(default_factory=DenseTrainingSection)

    def validate(self) -> DenseFinetuneConfig:
        tracker_names(self.training.report_to)
        if self.data.image_size % 14:
            raise ValueError(f"data.image_size must be a multiple of 14, got {self.data.image_size}.")
        self.lora.check()
        return self


def load_dense_config(path: str | os.PathLike | None, overrides: list[str] | None = None) -> DenseFinetuneConfig:
    """A `DenseFinetuneConfig` from a YAML file and `section.key=value` overrides (the loader of
    `tips_hf.pretraining.load_config`)."""
    return DenseFinetuneConfig.load(path, overrides)


def finetune_schema(path: str | os.PathLike | None) -> type[Schema]:
    """The schema of a fine-tuning config: `DenseFinetuneConfig` for `training.task: segmentation | depth` (and
    without a file), else `PretrainConfig` (contrastive LoRA through the pretraining loop)."""
    if path is None or any("task" in document.get("training", {}) for _, document in config_documents(path)):
        return DenseFinetuneConfig
    return PretrainConfig


class DenseDataset(torch.utils.data.Dataset):
    """(image uint8 (3, S, S), label map at the source resolution) pairs from the scenes or an HF dataset."""

    def __init__(self, config: DenseDataSection, task: str, split: str, num_examples: int, seed: int = 0):
        self.config, self.task = config, task
        if config.source == "scenes":
            from ..data import SpatialScenes

            self.rows = SpatialScenes(split, num_examples, image_size=config.scene_image_size, seed=seed,
                                      **config.scene_options)
            self.label_key = "depth" if task == "depth" else "class_mask"
        else:
            from ..pretraining.config import DataConfig
            from ..pretraining.data import load_source

            source = DataConfig(source=config.source, path=config.path, image_column=config.image_column,
                                alt_text_column=config.image_column, synthetic_columns=[])
            self.rows = load_source(source, split=split, extra_columns=[config.label_column])
            if num_examples and num_examples < len(self.rows):
                self.rows = self.rows.select(range(num_examples))
            self.label_key = config.label_column

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        from torchvision.transforms.v2 import functional as TF

        from ..pretraining.data import decode_image

        row = self.rows[index]
        image = decode_image(row[self.config.image_column])
        label = row[self.label_key]
        label = np.asarray(label if not hasattr(label, "convert") else label, dtype=np.float32 if self.task == "depth"
                           else np.int64)
        side = self.config.image_size
        pixels = TF.resize(TF.pil_to_tensor(image), [side] * 2, antialias=True)
        label = torch.from_numpy(label)
        if label.ndim != 2:
            raise ValueError(f"data.label_column {self.label_key!r}: row {index} is not a 2-D map (shape {tuple(label.shape)}).")
        if tuple(label.shape) != (side, side):  # label maps of any size batch together; nearest keeps ids and depths
            label = TF.resize(label[None], [side] * 2, interpolation=TF.InterpolationMode.NEAREST)[0]
        if self.task == "segmentation" and self.config.reduce_labels:
            label = torch.where((label == 0) | (label == 255), 255, label - 1)
        elif self.task == "depth" and self.config.depth_offset:
            label = label + self.config.depth_offset
        return {"pixel_values": pixels, "labels": label}


def _collate(samples):
    return torch.stack([s["pixel_values"] for s in samples]), torch.stack([s["labels"] for s in samples])


class _TrainingView(torch.utils.data.Dataset):
    """`(epoch, index)` keys of `GlobalBatchSampler` -> the example, flipped horizontally by a generator of
    (seed, epoch, index): the same batches and flips whatever the process count or the step a run resumed at."""

    def __init__(self, dataset: DenseDataset, flip_probability: float, seed: int):
        self.dataset, self.flip_probability, self.seed = dataset, flip_probability, seed

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]) -> dict[str, torch.Tensor]:
        epoch, index = key
        sample = self.dataset[index]
        if self.flip_probability and torch.rand(1, generator=sample_generator(self.seed, epoch, index)).item() < (
            self.flip_probability
        ):
            sample = {name: value.flip(-1) for name, value in sample.items()}
        return sample


def build_dpt_model(base, config: DenseFinetuneConfig, num_classes: int):
    """A `TipsForSemanticSegmentation` / `TipsForDepthEstimation` (official DPT decoder, freshly initialised) on the
    vision tower of `base`; its own loss trains it (cross-entropy, ignore 255 / SILog on depths > 0)."""
    from ..modeling.configuration_dense_tips import TipsDPTConfig
    from ..modeling.modeling_dense_tips import TipsForDepthEstimation, TipsForSemanticSegmentation

    vision = getattr(base, "vision_model", base)
    names = _class_names(config, num_classes)
    dpt_config = TipsDPTConfig(
        vision_config=vision.config.to_dict(), task=config.training.task, dpt_channels=config.model.dpt_channels,
        num_depth_bins=config.model.depth_bins, min_depth=config.model.min_depth, max_depth=config.model.max_depth,
        image_resolution=config.data.image_size, id2label=dict(enumerate(names)),
        label2id={name: i for i, name in enumerate(names)},
    )
    cls = TipsForSemanticSegmentation if config.training.task == "segmentation" else TipsForDepthEstimation
    model = cls(dpt_config)
    model.vision_model.load_state_dict(vision.state_dict())
    model.set_attn_implementation(config.model.attn_implementation)
    return model


def _class_names(config: DenseFinetuneConfig, num_classes: int) -> list[str]:
    if config.data.source == "scenes" and config.data.num_classes is None:
        from ..data import CLASS_NAMES

        return list(CLASS_NAMES)[:num_classes]
    return [f"class_{i}" for i in range(num_classes)]


def build_dense_model(config: DenseFinetuneConfig, num_classes: int):
    """The TipsForDenseTasks model (or, with head "dpt", a DPT model), wrapped with LoRA (heads saved with the
    adapter) or with a frozen backbone."""
    from ..modeling.modeling_tips import TipsModel

    base = TipsModel.from_pretrained(config.model.base)
    base.set_attn_implementation(config.model.attn_implementation)
    if config.model.head == "dpt":
        model, new_modules = build_dpt_model(base, config, num_classes), ["decoder", "head"]
    else:
        model, new_modules = TipsForDenseTasks(base, config.training.task, num_classes, config.model.head), ["head"]
    if config.lora.enabled:
        from peft import get_peft_model

        model = get_peft_model(model, config.lora.peft_config(new_modules))
    else:
        for param in model.vision_model.parameters():
            param.requires_grad_(False)
    return model


def trainable_parameters(model: torch.nn.Module) -> tuple[int, int]:
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, sum(p.numel() for p in model.parameters())


@torch.no_grad()
def evaluate_dense(
    model, dataset: DenseDataset, task: str, num_classes: int, batch_size: int = 50,
    normalisation: tuple = (None, None), background_class: bool = False,
) -> dict:
    """Scores on `dataset`; `normalisation` is the backbone's `(image_mean, image_std)` (`processor_normalisation`
    of the base folder). `background_class`: class 0 is a background (the scenes), so also report `object_mean_iou`,
    the mean IoU of the other classes, which a head that predicts the background everywhere cannot raise."""
    from ..metrics import depth_errors, mean_iou

    model.eval()
    predictions, references = [], []
    for start in range(0, len(dataset), batch_size):
        pixels, labels = _collate([dataset[i] for i in range(start, min(start + batch_size, len(dataset)))])
        device = next(model.parameters()).device
        output = model(pixel_values=pixels_to_model(pixels.to(device), *normalisation), labels=labels.to(device))
        predictions.append(_prediction(output, task, tuple(labels.shape[-2:])).cpu())
        references.append(labels)
    model.train()
    predictions, references = torch.cat(predictions).numpy(), torch.cat(references).numpy()
    if task == "segmentation":
        scores = mean_iou(predictions, references, num_classes=num_classes, ignore_index=255)
        out = {"mean_iou": float(scores["mean_iou"]), "pixel_accuracy": float(scores["pixel_accuracy"])}
        if background_class:
            from ..pretraining.evaluation import object_miou

            out["object_mean_iou"] = object_miou(scores)
        return out
    errors = depth_errors(predictions, references)
    return {"rmse": float(errors["rmse"]), "abs_rel": float(errors["abs_rel"])}


def _prediction(output, task: str, size: tuple[int, int]) -> torch.Tensor:
    """(B, H, W) class ids or depths at the label size, from a TipsForDenseTasks or a DPT model output (bilinear)."""
    import torch.nn.functional as F

    maps = output.predicted_depth[:, None] if getattr(output, "predicted_depth", None) is not None else output.logits
    if tuple(maps.shape[-2:]) != size:
        maps = F.interpolate(maps.float(), size=size, mode="bilinear", align_corners=False)
    return maps.argmax(1) if task == "segmentation" else maps[:, 0]


def finetune_dense(config: DenseFinetuneConfig) -> dict[str, Any]:
    """Train the head (+ LoRA), evaluate before/after, save the adapter (with the head) and the merged model."""
    from accelerate import Accelerator
    from accelerate.utils import set_seed
    from tqdm.auto import tqdm

    start = time.time()
    check_model_paths(config)  # a missing model.base: named here, not as a Hub error from transformers
    training = config.training
    if conflict := launcher_precision_conflict(training.mixed_precision):
        print(f"warning: {conflict}", file=sys.stderr)
    prepare_launch_environment()
    out = Path(training.output_dir)
    trackers = log_with(training.report_to)
    accelerator = Accelerator(mixed_precision=training.mixed_precision, log_with=trackers, project_dir=str(out))
    set_seed(training.seed)
    out.mkdir(parents=True, exist_ok=True)
    if trackers:
        accelerator.init_trackers("tips_finetune", config=flat_hyperparameters(config.to_dict()))
    num_classes = config.data.num_classes
    if num_classes is None:
        from ..data import CLASS_NAMES

        num_classes = len(CLASS_NAMES)
    train_set = DenseDataset(config.data, training.task, config.data.split, config.data.num_examples, training.seed)
    eval_set = DenseDataset(config.data, training.task, config.data.eval_split, config.data.eval_examples,
                            training.seed)
    model = build_dense_model(config, num_classes)
    normalisation = processor_normalisation(config.model.base)
    trainable, total = trainable_parameters(model)
    print(f"trainable parameters: {trainable:,} of {total:,} ({100 * trainable / total:.2f}%)")
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.optim.lr, weight_decay=config.optim.weight_decay)
    model, optimizer = accelerator.prepare(model, optimizer)
    state, metrics_path = TrainerState(), out / "metrics.jsonl"
    checkpoint = resolve_checkpoint(out, training.resume_from_checkpoint)
    if checkpoint is not None:
        state = load_checkpoint(accelerator, model, optimizer, checkpoint)
        print(f"resumed from {checkpoint} at step {state.step}", file=sys.stderr)
    if accelerator.is_main_process:
        truncate_metrics(metrics_path, state.step)  # a fresh run starts empty
    # each process reads its own share of every global batch, from the step the run is at (nothing re-read)
    sampler = GlobalBatchSampler(len(train_set), training.batch_size, accelerator.process_index,
                                 accelerator.num_processes, training.seed, start_batch=state.step)
    batches = iter(torch.utils.data.DataLoader(
        _TrainingView(train_set, config.data.flip_probability, training.seed), batch_sampler=sampler,
        collate_fn=_collate, num_workers=config.data.num_workers, persistent_workers=config.data.num_workers > 0,
    ))

    def save() -> None:
        save_checkpoint(accelerator, model, optimizer, state, out, training.keep_last,
                        extra={"config": config.to_dict()})

    progress = tqdm(total=training.max_steps, initial=state.step, desc=f"fine-tuning ({training.task})",
                    disable=not (accelerator.is_main_process and training.progress_bar))
    stop = StopSignals(training.save_on_signal, accelerator.num_processes)
    try:
        while state.step < training.max_steps:
            pixels, labels = next(batches)
            lr = cosine(state.step, training.max_steps, config.optim.lr, config.optim.min_lr,
                        config.optim.warmup_steps)
            for group in optimizer.param_groups:
                group["lr"] = lr
            inputs = pixels_to_model(pixels.to(accelerator.device), *normalisation)
            output = model(pixel_values=inputs, labels=labels.to(accelerator.device))
            accelerator.backward(output.loss)
            if config.optim.grad_clip:
                accelerator.clip_grad_norm_(params, config.optim.grad_clip)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            state.step += 1
            state.samples_seen += training.batch_size * accelerator.num_processes
            progress.update(1)
            if state.step % training.logging_steps == 0:  # the loss of the global batch: every process reduces
                loss = float(accelerator.reduce(output.loss.detach(), reduction="mean"))
                if accelerator.is_main_process:
                    with open(metrics_path, "a") as handle:
                        handle.write(json.dumps({"step": state.step, "loss": loss, "lr": lr}) + "\n")
                if trackers:
                    accelerator.log({"loss": loss, "lr": lr}, step=state.step)
                progress.set_postfix(loss=f"{loss:.3f}")
            saved = bool(training.save_steps) and state.step % training.save_steps == 0
            if saved:
                save()
            maybe_fault(f"step:{state.step}")
            if (number := stop.agreed()) is not None:
                if not saved:
                    save()
                progress.close()
                record, message = stop_notice(number, state.step)
                print(message, file=sys.stderr)
                if accelerator.is_main_process:
                    with open(metrics_path, "a") as handle:
                        handle.write(json.dumps(record) + "\n")
                accelerator.end_training()
                return {"task": training.task, "steps": state.step, "stopped_by_signal": number}
    finally:
        stop.close()
    progress.close()
    unwrapped = accelerator.unwrap_model(model)
    scores = evaluate_dense(unwrapped, eval_set, training.task, num_classes, normalisation=normalisation,
                            background_class=config.data.source == "scenes")
    result = {"task": training.task, "steps": state.step, "trainable_parameters": trainable, "total_parameters": total,
              "lora": config.lora.enabled, "eval": scores, "wall_time_s": round(time.time() - start, 1)}
    if accelerator.is_main_process:
        save_dense(unwrapped, config, num_classes, out, result, normalisation)
        with open(metrics_path, "a") as handle:
            handle.write(json.dumps({"event": "eval", "step": state.step, **scores}) + "\n")
    if trackers:
        accelerator.log({f"eval/{key}": value for key, value in scores.items()}, step=state.step)
    accelerator.end_training()
    return result


def save_dense(
    model, config: DenseFinetuneConfig, num_classes: int, out: Path, result: dict, normalisation: tuple = (None, None)
) -> None:
    """`OUT/adapter` (PeftModel.save_pretrained: LoRA weights + the head) and `OUT/dense_config.json`; without LoRA,
    the head's weights in `OUT/head.safetensors`; with the DPT head, a complete `OUT/model` folder whose processor
    keeps the backbone's `normalisation`. Written to a temporary folder, then renamed."""
    from safetensors.torch import save_file

    staging = Path(tempfile.mkdtemp(prefix=".finetune.tmp-", dir=out))
    try:
        if config.model.head == "dpt":  # a complete TipsFor* folder (LoRA merged) that the Auto classes load
            if config.lora.enabled:
                model.save_pretrained(staging / "adapter")  # before merging: merge_and_unload removes the LoRA layers
            merged = model.merge_and_unload() if config.lora.enabled else model
            merged.save_pretrained(staging / "model")
            square_image_processor(config.data.image_size, *normalisation).save_pretrained(staging / "model")
        elif config.lora.enabled:
            model.save_pretrained(staging / "adapter")
        else:
            save_file({k: v.contiguous() for k, v in model.head.state_dict().items()}, str(staging / "head.safetensors"))
        description = {"base": config.model.base, "task": config.training.task, "num_classes": num_classes,
                       "head": config.model.head, "lora": config.lora.to_dict(), "result": result}
        (staging / "dense_config.json").write_text(json.dumps(description, indent=2) + "\n")
        for item in staging.iterdir():
            target = out / item.name
            if target.is_dir():
                shutil.rmtree(target)
            os.replace(item, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def load_dense(folder: str | os.PathLike, merge: bool = False):
    """Rebuild a fine-tuned dense model from `save_dense`'s folder (`PeftModel.from_pretrained`); with `merge`,
    the LoRA weights are folded into the backbone (`merge_and_unload`)."""
    from safetensors.torch import load_file

    from ..modeling.modeling_tips import TipsModel

    folder = Path(folder)
    description = json.loads((folder / "dense_config.json").read_text())
    if description["head"] != "dpt":  # the backbone is read from the base model the head was trained on
        check_model_path(description["base"], f"{folder / 'dense_config.json'}: base")
    if description["head"] == "dpt":
        from transformers import AutoModelForDepthEstimation, AutoModelForSemanticSegmentation

        auto = AutoModelForSemanticSegmentation if description["task"] == "segmentation" else AutoModelForDepthEstimation
        return auto.from_pretrained(folder / "model")
    model = TipsForDenseTasks(TipsModel.from_pretrained(description["base"]), description["task"],
                              description["num_classes"], description["head"])
    if (folder / "adapter").is_dir():
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, folder / "adapter")
        return model.merge_and_unload() if merge else model
    model.head.load_state_dict(load_file(str(folder / "head.safetensors")))
    return model
