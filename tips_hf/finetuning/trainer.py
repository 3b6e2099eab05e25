"""Fine-tuning TIPS on `transformers.Trainer`: dense heads (segmentation / depth: linear, MLP or the official DPT
decoder on the patch grid, the backbone frozen or adapted with LoRA) and contrastive adaptation of both heads.

What `Trainer` brings: gradient accumulation, mixed precision, distributed training, periodic evaluation spread over
the processes, callbacks and checkpoints. What this module adds to it:
- [`DenseTrainer`], [`ContrastiveTrainer`]: the training batches come from `GlobalBatchSampler` (process r reads its
  slice of every global batch, keyed by (epoch, index); flips and caption choices seeded per example), so a run makes
  the same batches on any process count and resumes by starting the sampler at the step it stopped at instead of
  re-reading the data; the contrastive loss takes its negatives from every process;
- [`StopOnSignalCallback`]: SIGTERM / SIGUSR1 finish the step in progress, save a checkpoint and stop;
- `RunRecordCallback`: `metrics.jsonl`, the experiment trackers of `training.report_to` (accelerate's, as in
  pretraining, with the config as flat hyperparameters) and the `COMPLETE` marker of each checkpoint, after which
  older checkpoints are rotated out (so a crash during a save never leaves a run without a complete checkpoint);
- dense evaluation that keeps no predictions: `SegmentationMetrics` / `DepthMetrics` add up each gathered batch
  (`TrainingArguments(batch_eval_metrics=True)`).
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from .._paths import check_model_path, check_model_paths
from ..pretraining.checkpointing import (
    COMPLETE,
    StopSignals,
    list_checkpoints,
    maybe_fault,
    resolve_checkpoint,
    restart_count,
    stop_notice,
    truncate_metrics,
)
from ..pretraining.config import launcher_precision_conflict, prepare_launch_environment
from ..pretraining.data import GlobalBatchSampler, processor_normalisation, square_image_processor
from ..pretraining.tracking import flat_hyperparameters, log_with
from .config import FinetuneConfig
from .data import CaptionedView, DenseCollator, DenseDataset, TrainingView
from .dense import TipsForDenseTasks

__all__ = ["ContrastiveTrainer", "DenseTrainer", "StopOnSignalCallback", "build_dense_model",  # noqa: F822
           "evaluate_dense", "finetune", "load_dense", "save_dense"]


@functools.cache
def _classes() -> dict[str, type]:
    """`DenseTrainer` and the callbacks, built on first use: importing this module needs no accelerate (which
    transformers' Trainer requires)."""
    from transformers import Trainer, TrainerCallback

    from ..training_utils import TipsContrastiveTrainer

    class GlobalBatches:
        """The training batches of [`DenseTrainer`] / [`ContrastiveTrainer`]: process r reads its slice of every global
        batch of `per_device_train_batch_size` x processes examples, in an order set by the seed alone
        ([`GlobalBatchSampler`]), from micro-batch `start_batch` on. A run therefore makes the same batches on 1 or N
        processes, and a resumed run starts the sampler where it stopped (`ignore_data_skip`: nothing is read twice).
        The training dataset is indexed by `(epoch, index)` keys ([`TrainingView`], [`CaptionedView`])."""

        def __init__(self, *args, start_batch: int = 0, **kwargs):
            super().__init__(*args, **kwargs)
            self.start_batch = start_batch

        def get_train_dataloader(self) -> torch.utils.data.DataLoader:
            if self.train_dataset is None:
                raise ValueError(f"{type(self).__name__}: training requires a train_dataset.")
            args = self.args
            sampler = GlobalBatchSampler(len(self.train_dataset), args.per_device_train_batch_size,
                                         args.process_index, args.world_size, args.seed, start_batch=self.start_batch)
            # not `accelerator.prepare`d: that would shard the batches over the processes a second time
            return torch.utils.data.DataLoader(
                self.train_dataset, batch_sampler=sampler, collate_fn=self.data_collator,
                num_workers=args.dataloader_num_workers, pin_memory=args.dataloader_pin_memory,
                persistent_workers=args.dataloader_persistent_workers and args.dataloader_num_workers > 0,
            )

    class DenseTrainer(GlobalBatches, Trainer):
        r"""`transformers.Trainer` for dense heads, with the batches of [`GlobalBatches`]."""

    class ContrastiveTrainer(GlobalBatches, TipsContrastiveTrainer):
        r"""`TipsContrastiveTrainer` (both heads, negatives from every process) with the batches of
        [`GlobalBatches`]."""

    class StopOnSignalCallback(TrainerCallback):
        r"""SIGTERM / SIGUSR1 (a cluster's notice before it kills a job) stop the run after the step in progress,
        with a checkpoint of that step (`control.should_save`): the work since the last `save_steps` checkpoint is
        kept. Every process stops at the same step (the flag is all-reduced on the CPU, one scalar per step).
        `stopped_by` holds the signal's number once it has stopped a run."""

        def __init__(self, enabled: bool = True):
            self.enabled, self.signals, self.stopped_by = enabled, None, None

        def on_train_begin(self, args, state, control, **kwargs):
            self.signals = StopSignals(self.enabled, args.world_size)

        def on_step_end(self, args, state, control, **kwargs):
            if self.signals is not None and (number := self.signals.agreed()) is not None:
                self.stopped_by = number
                control.should_save = control.should_training_stop = True
            return control

        def on_train_end(self, args, state, control, **kwargs):
            if self.signals is not None:
                self.signals.close()
                self.signals = None

    class RunRecordCallback(TrainerCallback):
        """`metrics.jsonl` (one record per logged step and per evaluation), the accelerate trackers of
        `training.report_to`, the `COMPLETE` marker of each checkpoint and the rotation of older ones."""

        def __init__(self, trainer: Any, run_dir: Path, keep_last: int, trackers: list, hyperparameters: dict):
            self.trainer, self.run_dir, self.keep_last = trainer, run_dir, keep_last
            self.tracker_names, self.hyperparameters, self.trackers = trackers, hyperparameters, []
            self.first_eval: tuple[int, dict[str, float]] | None = None
            self.last_eval: tuple[int, dict[str, float]] | None = None

        def on_train_begin(self, args, state, control, **kwargs):
            if state.is_world_process_zero and self.tracker_names and not self.trackers:
                self.trackers = open_trackers(self.tracker_names, self.run_dir, self.hyperparameters)

        def _write(self, record: dict[str, Any], tracked: dict[str, float], step: int) -> None:
            with open(self.run_dir / "metrics.jsonl", "a") as handle:
                handle.write(json.dumps(record) + "\n")
            for tracker in self.trackers:
                tracker.log(tracked, step=step)

        def on_log(self, args, state, control, logs=None, **kwargs):
            if not state.is_world_process_zero or not logs or "loss" not in logs:
                return
            record = {"step": state.global_step, "loss": logs["loss"], "lr": logs.get("learning_rate")}
            if logs.get("grad_norm") is not None:
                record["grad_norm"] = logs["grad_norm"]
            self._write(record, {key: value for key, value in record.items() if key != "step" and value is not None},
                        state.global_step)

        def on_evaluate(self, args, state, control, metrics=None, **kwargs):
            scores = _eval_scores(metrics or {})
            self.last_eval = (state.global_step, scores)
            self.first_eval = self.first_eval or self.last_eval
            if state.is_world_process_zero:
                self._write({"event": "eval", "step": state.global_step, **scores},
                            {f"eval/{key}": value for key, value in scores.items()}, state.global_step)

        def on_step_end(self, args, state, control, **kwargs):
            maybe_fault(f"step:{state.global_step}")  # fault injection of the resume tests (TIPS_HF_FAULT)

        def on_save(self, args, state, control, **kwargs):
            self.trainer.accelerator.wait_for_everyone()  # every process has written its part (RNG state)
            if state.is_world_process_zero:
                folder = self.run_dir / f"checkpoint-{state.global_step}"
                (folder / COMPLETE).write_text(time.strftime("%Y-%m-%dT%H:%M:%S"))
                for old in list_checkpoints(self.run_dir)[:-self.keep_last] if self.keep_last > 0 else []:
                    shutil.rmtree(old, ignore_errors=True)
            self.trainer.accelerator.wait_for_everyone()

        def close(self) -> None:
            """Finish the trackers (after the final evaluation, which comes after `on_train_end`)."""
            for tracker in self.trackers:
                tracker.finish()
            self.trackers = []

    built = (GlobalBatches, DenseTrainer, ContrastiveTrainer, StopOnSignalCallback, RunRecordCallback)
    for cls in built:
        cls.__module__ = __name__
    return {cls.__name__: cls for cls in built}


def __getattr__(name: str) -> Any:
    if name in ("ContrastiveTrainer", "DenseTrainer", "StopOnSignalCallback"):
        return _classes()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def open_trackers(names: list[str], run_dir: Path, hyperparameters: dict) -> list:
    """The accelerate trackers `names` (what `Accelerator(log_with=names)` would open, in `run_dir`), each given the
    run's flat hyperparameters: the trackers and the logged config of pretraining, under `Trainer`."""
    from accelerate.tracking import LOGGER_TYPE_TO_CLASS, filter_trackers

    trackers = []
    for name in filter_trackers(names, run_dir):
        tracker_class = LOGGER_TYPE_TO_CLASS[str(name)]
        tracker = (tracker_class("tips_finetune", run_dir) if tracker_class.requires_logging_directory
                   else tracker_class("tips_finetune"))
        if hasattr(tracker, "start"):  # accelerate >= 1.7 opens a tracker's run in start(), as init_trackers does
            tracker.start()
        tracker.store_init_configuration(hyperparameters)
        trackers.append(tracker)
    return trackers


def build_dpt_model(base, config: FinetuneConfig, num_classes: int):
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


def _class_names(config: FinetuneConfig, num_classes: int) -> list[str]:
    if config.data.source == "scenes" and config.data.num_classes is None:
        from ..data import CLASS_NAMES

        return list(CLASS_NAMES)[:num_classes]
    return [f"class_{i}" for i in range(num_classes)]


def build_dense_model(config: FinetuneConfig, num_classes: int):
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


def training_arguments(config: FinetuneConfig, output_dir: str | os.PathLike):
    """The `TrainingArguments` of a dense fine-tuning config (the schedule: linear warm-up, then cosine to
    `optim.min_lr`; AdamW without weight decay on biases and norms)."""
    from transformers import TrainingArguments

    training, optim = config.training, config.optim
    dense = training.task != "contrastive"
    return TrainingArguments(
        output_dir=str(output_dir),
        max_steps=training.max_steps,
        per_device_train_batch_size=training.batch_size,
        per_device_eval_batch_size=training.eval_batch_size,
        gradient_accumulation_steps=training.gradient_accumulation_steps,
        optim="adamw_torch",  # named, so that a new default of transformers does not change a run
        learning_rate=optim.lr,
        lr_scheduler_type="cosine_with_min_lr",
        lr_scheduler_kwargs={"min_lr": optim.min_lr},
        warmup_steps=optim.warmup_steps,
        weight_decay=optim.weight_decay,
        max_grad_norm=optim.grad_clip,  # 0: no clipping
        logging_steps=training.logging_steps,
        eval_strategy="steps" if training.eval_steps else "no",
        eval_steps=training.eval_steps or None,
        eval_on_start=training.eval_on_start,
        # dense scores add up batch by batch (no (N, H, W) predictions kept); Recall@K ranks the whole set's embeddings
        batch_eval_metrics=dense,
        save_strategy="steps" if training.save_steps else "no",
        save_steps=training.save_steps or 500,
        save_total_limit=None,  # RunRecordCallback rotates, after the newest checkpoint is complete
        seed=training.seed,
        bf16=training.mixed_precision == "bf16",
        fp16=training.mixed_precision == "fp16",
        dataloader_num_workers=config.data.num_workers,
        dataloader_pin_memory=torch.cuda.is_available(),
        dataloader_persistent_workers=config.data.num_workers > 0,
        ignore_data_skip=True,  # DenseTrainer's sampler starts at the resumed step
        remove_unused_columns=False,
        label_names=["labels"] if dense else None,  # contrastive: no labels, the model's loss (`return_loss`)
        report_to="none",  # the accelerate trackers of training.report_to, through RunRecordCallback
        disable_tqdm=not training.progress_bar,
    )


def dense_metrics(task: str, num_classes: int, background_class: bool = False):
    """`compute_metrics` for a dense task ([`SegmentationMetrics`] / [`DepthMetrics`] of `tips_hf.training_utils`)."""
    from ..training_utils import DepthMetrics, SegmentationMetrics

    if task == "segmentation":
        return SegmentationMetrics(num_classes, ignore_index=255, background_class=background_class)
    return DepthMetrics()


def _eval_scores(metrics: dict[str, Any]) -> dict[str, float]:
    """`Trainer.evaluate`'s scores without their `eval_` prefix (`eval_loss` keeps it: `loss` is the training loss of
    `metrics.jsonl`), and without the timings."""
    return {key if key == "eval_loss" else key.removeprefix("eval_"): value for key, value in metrics.items()
            if key != "epoch" and not key.endswith(("_runtime", "_per_second"))}


def evaluate_dense(
    model, dataset, task: str, num_classes: int, batch_size: int = 16, normalisation: tuple = (None, None),
    background_class: bool = False,
) -> dict[str, float]:
    """Scores of a dense model on `dataset` (`DenseDataset` samples: uint8 pixels and label maps), through the same
    `Trainer.evaluate` that fine-tuning runs: spread over the processes of a launch, the scores added up batch by batch.

    Args:
        model: a `TipsForDenseTasks` or DPT model (bare or wrapped by peft), whose forward takes `pixel_values` and
            `labels` and returns a loss.
        normalisation: the backbone's `(image_mean, image_std)` (`processor_normalisation` of the base folder).
        background_class: class 0 is a background (the scenes): also report `object_mean_iou`.

    Returns: `mean_iou`, `pixel_accuracy`, `mean_accuracy` (and `object_mean_iou`) or `rmse`, `abs_rel`; and `loss`.
    """
    from transformers import TrainingArguments

    metrics = dense_metrics(task, num_classes, background_class)
    with tempfile.TemporaryDirectory(prefix="tips-evaluate-") as folder:
        args = TrainingArguments(output_dir=folder, per_device_eval_batch_size=batch_size, batch_eval_metrics=True,
                                 remove_unused_columns=False, label_names=["labels"], report_to="none",
                                 disable_tqdm=True, dataloader_pin_memory=torch.cuda.is_available())
        trainer = _classes()["DenseTrainer"](model=model, args=args, eval_dataset=dataset,
                                            data_collator=DenseCollator(normalisation), compute_metrics=metrics,
                                            preprocess_logits_for_metrics=metrics.preprocess_logits_for_metrics)
        return _eval_scores(trainer.evaluate())


def _checkpoint_step(checkpoint: Path | None) -> int:
    if checkpoint is None:
        return 0
    state = checkpoint / "trainer_state.json"
    if not state.is_file():
        raise ValueError(f"{checkpoint} is not a checkpoint of training/finetune.py (no trainer_state.json); "
                         "dense fine-tuning resumes only from its own checkpoint-<step> folders.")
    return int(json.loads(state.read_text())["global_step"])


def _dense_parts(config: FinetuneConfig) -> dict[str, Any]:
    """What `finetune` needs for a dense task: the model, the data, the metrics and how to save the result."""
    training = config.training
    num_classes = config.data.num_classes
    if num_classes is None:
        from ..data import CLASS_NAMES

        num_classes = len(CLASS_NAMES)
    train_set = DenseDataset(config.data, training.task, config.data.split, config.data.num_examples, training.seed)
    eval_set = DenseDataset(config.data, training.task, config.data.eval_split, config.data.eval_examples,
                            training.seed)
    normalisation = processor_normalisation(config.model.base)
    return {
        "model": build_dense_model(config, num_classes), "trainer": "DenseTrainer",
        "train": TrainingView(train_set, config.data.flip_probability, training.seed), "eval": eval_set,
        "collator": DenseCollator(normalisation),
        "metrics": dense_metrics(training.task, num_classes, background_class=config.data.source == "scenes"),
        "save": lambda model, out, result: save_dense(model, config, num_classes, out, result, normalisation),
    }


def _contrastive_parts(config: FinetuneConfig) -> dict[str, Any]:
    """What `finetune` needs for contrastive fine-tuning of both heads: the model (LoRA on `lora.preset`, or all of it
    without LoRA), image–caption rows, Recall@K, and the saving of the adapter and the merged model."""
    from ..modeling.modeling_tips import TipsModel
    from ..pretraining.config import DataConfig
    from ..pretraining.data import load_source
    from ..processing.processing_tips import TipsProcessor
    from ..training_utils import ContrastiveRetrievalMetrics, TipsDataCollator

    data, training = config.data, config.training
    model = TipsModel.from_pretrained(config.model.base)
    model.set_attn_implementation(config.model.attn_implementation)
    if config.lora.enabled:
        from peft import get_peft_model

        model = get_peft_model(model, config.lora.peft_config())
    processor = TipsProcessor.from_pretrained(config.model.base)
    processor.image_processor.size = {"height": data.image_size, "width": data.image_size}
    source = DataConfig(source=data.source, path=data.path, image_column=data.image_column,
                        alt_text_column=data.alt_text_column,
                        synthetic_columns=[data.synthetic_column] if data.synthetic_column else [],
                        scene_image_size=data.scene_image_size, scene_options=data.scene_options)

    def rows(split: str, count: int):
        table = load_source(source, split=split, num_examples=count or None, seed=training.seed)
        table = table.select(range(count)) if count and count < len(table) else table
        return CaptionedView(table, data.image_column, data.alt_text_column, data.synthetic_column, training.seed)

    metrics = ContrastiveRetrievalMetrics(ks=(1, 5))

    def save(model, out: Path, result: dict) -> None:
        """`OUT/final`: the merged TipsModel and its processor, with `OUT/final/adapter` (the LoRA weights)."""
        from ..conversion.writer import atomic_folder

        with atomic_folder(out / "final", overwrite=True) as staging:
            if config.lora.enabled:
                model.save_pretrained(staging / "adapter")
                model = model.merge_and_unload()
            model.save_pretrained(staging)
            processor.save_pretrained(staging)
            (staging / "finetune_result.json").write_text(json.dumps(result, indent=2) + "\n")

    return {
        "model": model, "trainer": "ContrastiveTrainer", "train": rows(data.split, data.num_examples),
        "eval": rows(data.eval_split, data.eval_examples),
        "collator": TipsDataCollator(processor, text_column="alt_text", synthetic_column="synthetic",
                                     text_kwargs={"max_length": data.max_text_length}),
        "metrics": metrics, "save": save,
    }


def finetune(config: FinetuneConfig) -> dict[str, Any]:
    """Fine-tune with `transformers.Trainer` ([`DenseTrainer`] for segmentation / depth, [`ContrastiveTrainer`] for
    contrastive), evaluating every `training.eval_steps` and at the end, checkpointing every `training.save_steps`,
    stopping with a checkpoint on SIGTERM / SIGUSR1, and resuming from `training.resume_from_checkpoint`. Saves a dense
    run's adapter (with the head), head or DPT model folder ([`save_dense`]), a contrastive run's merged model in
    `OUT/final` (its adapter in `OUT/final/adapter`); pushes the run folder with `training.push_to_hub`.

    Returns: `task`, `steps`, `trainable_parameters`, `total_parameters`, `lora`, `eval` (the final scores; `eval_before`
    with `training.eval_on_start`) and `wall_time_s`; or `task`, `steps` and `stopped_by_signal` when SIGTERM / SIGUSR1
    stopped the run."""
    from transformers import set_seed

    start = time.time()
    check_model_paths(config)  # a missing model.base: named here, not as a Hub error from transformers
    training = config.training
    if conflict := launcher_precision_conflict(training.mixed_precision):
        print(f"warning: {conflict}", file=sys.stderr)
    prepare_launch_environment()
    trackers = log_with(training.report_to) or []
    out = Path(training.output_dir)
    set_seed(training.seed)  # a new head's initialisation
    parts = _contrastive_parts(config) if training.task == "contrastive" else _dense_parts(config)
    trainable, total = trainable_parameters(parts["model"])
    print(f"trainable parameters: {trainable:,} of {total:,} ({100 * trainable / total:.2f}%)")
    checkpoint = resolve_checkpoint(out, training.resume_from_checkpoint, restarted=restart_count() > 0)
    step = _checkpoint_step(checkpoint)
    classes, metrics = _classes(), parts["metrics"]
    trainer = classes[parts["trainer"]](
        model=parts["model"], args=training_arguments(config, out), train_dataset=parts["train"],
        eval_dataset=parts["eval"], data_collator=parts["collator"], compute_metrics=metrics,
        preprocess_logits_for_metrics=metrics.preprocess_logits_for_metrics,
        start_batch=step * training.gradient_accumulation_steps,
    )
    record = classes["RunRecordCallback"](trainer, out, training.keep_last, trackers,
                                          flat_hyperparameters(config.to_dict()))
    stop = classes["StopOnSignalCallback"](training.save_on_signal)
    trainer.add_callback(record)
    trainer.add_callback(stop)
    if trainer.is_world_process_zero():
        out.mkdir(parents=True, exist_ok=True)
        truncate_metrics(out / "metrics.jsonl", step)  # a fresh run starts empty
    if checkpoint is not None:
        print(f"resumed from {checkpoint} at step {step}", file=sys.stderr)
    try:
        trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint is not None else None)
        if stop.stopped_by is not None:
            notice, message = stop_notice(stop.stopped_by, trainer.state.global_step)
            print(message, file=sys.stderr)
            if trainer.is_world_process_zero():
                with open(out / "metrics.jsonl", "a") as handle:
                    handle.write(json.dumps(notice) + "\n")
            return {"task": training.task, "steps": trainer.state.global_step, "stopped_by_signal": stop.stopped_by}
        if record.last_eval is not None and record.last_eval[0] == trainer.state.global_step:
            scores = record.last_eval[1]  # the periodic evaluation of the last step
        else:
            scores = _eval_scores(trainer.evaluate())
    finally:
        record.close()
    result = {"task": training.task, "steps": trainer.state.global_step, "trainable_parameters": trainable,
              "total_parameters": total, "lora": config.lora.enabled, "eval": scores,
              "wall_time_s": round(time.time() - start, 1)}
    if record.first_eval is not None and record.first_eval[0] == 0:
        result["eval_before"] = record.first_eval[1]
    if trainer.is_world_process_zero():
        parts["save"](trainer.accelerator.unwrap_model(trainer.model), out, result)
        if training.push_to_hub:
            push_run(out, training.hub_model_id)
    trainer.accelerator.wait_for_everyone()
    return result


def push_run(folder: Path, repo_id: str) -> str:
    """Upload a fine-tuning run folder (adapter / head / DPT model folder, `dense_config.json`, `metrics.jsonl`) to the
    Hub repository `repo_id` (created if needed, private unless it exists), without its checkpoints and tracker logs;
    files the folder no longer holds are deleted from the repository. Returns the commit URL."""
    from huggingface_hub import HfApi

    from ..hub.publishing import check_repo_id

    api = HfApi()
    repo_id = check_repo_id(repo_id, "training.hub_model_id")
    api.create_repo(repo_id, exist_ok=True, private=True)
    commit = api.upload_folder(repo_id=repo_id, folder_path=str(folder), commit_message="tips-hf dense fine-tuning",
                               ignore_patterns=["checkpoint-*", ".*", "runs/*", "*/events.out.tfevents*"],
                               delete_patterns=["*"])
    return str(getattr(commit, "commit_url", commit))


def save_dense(
    model, config: FinetuneConfig, num_classes: int, out: Path, result: dict, normalisation: tuple = (None, None)
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
