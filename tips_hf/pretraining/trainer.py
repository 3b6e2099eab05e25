"""The pretraining loop: a plain Accelerate loop around `TipsPretrainingModel`.

Per optimizer step: the scheduled values (LR, weight decay, teacher momentum and temperature) are computed from the
step, `gradient_accumulation_steps` micro-batches run forward/backward (gradient sync only on the last), gradients
are clipped, AdamW steps, the teacher EMA follows. Logs go to `OUTPUT_DIR/metrics.jsonl`, the console (progress bar)
and TensorBoard/trackio; checkpoints are atomic and complete enough for an exact resume.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..modeling_tips import TipsModel
from .checkpointing import (
    TrainerState,
    load_checkpoint,
    load_module_state,
    maybe_fault,
    resolve_checkpoint,
    save_checkpoint,
)
from .config import PretrainConfig, save_config
from .data import Collator, GlobalBatchSampler, PretrainingDataset, load_source, to_device
from .meta_arch import TipsPretrainingModel
from .schedules import step_values

logger = logging.getLogger("tips_hf.pretraining")


@dataclass
class TrainResult:
    output_dir: Path
    final_model_dir: Path | None
    state: TrainerState
    metrics: dict[str, float] = field(default_factory=dict)
    wall_time_s: float = 0.0


def default_tokenizer_path() -> str:
    from ..data.build_tokenizer import TOKENIZER_PATH

    return str(TOKENIZER_PATH)


def build_tokenizer(config: PretrainConfig):
    from ..tokenization_tips import TipsTokenizer

    path = config.model.tokenizer or default_tokenizer_path()
    if not Path(path).is_file():
        raise ValueError(f"model.tokenizer: {path} is not a file (a SentencePiece tokenizer.model).")
    return TipsTokenizer(path, model_max_length=config.data.max_text_length)


def build_student(config: PretrainConfig, vocab_size: int) -> TipsModel:
    """A random TipsModel from the preset/overrides, or the `init_from` checkpoint."""
    from ..configuration_tips import TipsConfig

    model_config = config.model
    if model_config.init_from:
        model = TipsModel.from_pretrained(model_config.init_from)
    else:
        vision = dict(model_config.vision)
        text = dict(model_config.text)
        text.setdefault("vocab_size", vocab_size)
        text.setdefault("max_position_embeddings", config.data.max_text_length)
        vision.setdefault("drop_path_rate", model_config.drop_path_rate)
        common = dict(
            temperature_init_value=model_config.temperature_init,
            temperature_min=model_config.temperature_min,
            temperature_max=model_config.temperature_max,
        )
        if model_config.preset:
            tips = TipsConfig.from_preset(model_config.preset, vision_config=vision, text_config=text, **common)
        else:
            tips = TipsConfig(vision_config=vision, text_config=text, **common)
        model = TipsModel(tips)
    if model.config.text_config.vocab_size != vocab_size:
        raise ValueError(
            f"model.tokenizer has {vocab_size} pieces but the text tower embeds {model.config.text_config.vocab_size}."
        )
    model.set_attn_implementation(model_config.attn_implementation)
    return model


def _tracker(config: PretrainConfig):
    return None if config.training.report_to == "none" else config.training.report_to


class MetricsWriter:
    """Appends one JSON object per line to `metrics.jsonl` (main process only), flushed at once."""

    def __init__(self, path: Path, enabled: bool):
        self.path, self.enabled = path, enabled

    def write(self, record: dict) -> None:
        if self.enabled:
            with open(self.path, "a") as handle:
                handle.write(json.dumps(record) + "\n")


def train(config: PretrainConfig) -> TrainResult:
    """Run (or resume) a pretraining job; returns where the final TipsModel + processor were written."""
    from accelerate import Accelerator
    from accelerate.utils import DistributedDataParallelKwargs, set_seed
    from tqdm.auto import tqdm

    start_time = time.time()
    if not torch.cuda.is_available():
        # accelerate's own `--cpu` launcher needs MPI for several processes; its torchrun-based launcher works on
        # CPU once this is set (see training/accelerate_configs/cpu-2proc.yaml).
        os.environ.setdefault("ACCELERATE_USE_CPU", "1")
    training = config.training
    output_dir = Path(training.output_dir)
    accelerator = Accelerator(
        mixed_precision=training.mixed_precision,
        log_with=_tracker(config),
        project_dir=str(output_dir),
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=False)],
    )
    if accelerator.distributed_type.name == "FSDP":
        raise NotImplementedError(
            "FSDP is not supported by the tips-hf trainer yet: its checkpoints would hold only the main process's "
            "optimizer shard. Launch with a DDP config (training/accelerate_configs/ddp-8gpu.yaml) and "
            "training.gradient_checkpointing=true; a g/14 student + teacher fits one 80 GB GPU in bf16."
        )
    if accelerator.device.type == "cpu":
        # `accelerate launch` exports OMP_NUM_THREADS=1 for every process, which halves a 2-core CPU run
        torch.set_num_threads(training.cpu_threads or max(1, (os.cpu_count() or 1) // accelerator.num_processes))
    if accelerator.is_main_process:
        output_dir.mkdir(parents=True, exist_ok=True)
        save_config(config, output_dir / "config.yaml")
    set_seed(training.seed)  # same initialisation in every process
    tokenizer = build_tokenizer(config)
    student = build_student(config, len(tokenizer))
    if config.lora.enabled:
        from peft import get_peft_model

        from ..finetuning.lora import lora_config

        lora = config.lora
        student = get_peft_model(student, lora_config(lora.preset, lora.r, lora.alpha, lora.dropout,
                                                      target_modules=lora.target_modules))
        if accelerator.is_main_process:
            student.print_trainable_parameters()
    teacher = None
    if config.objective.distillation_teacher:
        teacher = TipsModel.from_pretrained(config.objective.distillation_teacher)
    module = TipsPretrainingModel(student, config, teacher)
    if config.model.init_heads_from:
        loaded = load_module_state(module, config.model.init_heads_from)
        logger.info("loaded %d head/teacher/centre tensors from %s", len(loaded), config.model.init_heads_from)
    module.freeze_unused()
    if training.gradient_checkpointing:
        student.gradient_checkpointing_enable()
    if training.compile:
        student.vision_model.forward = torch.compile(student.vision_model.forward)
    optimizer = torch.optim.AdamW(
        module.parameter_groups(config.optim.weight_decay),
        lr=config.optim.lr,
        betas=tuple(config.optim.betas),
        eps=config.optim.eps,
        fused=config.optim.fused or None,
    )
    module, optimizer = accelerator.prepare(module, optimizer)
    unwrapped: TipsPretrainingModel = accelerator.unwrap_model(module)

    state = TrainerState()
    resume = resolve_checkpoint(output_dir, training.resume_from_checkpoint)
    if resume is not None:
        state = load_checkpoint(accelerator, module, optimizer, resume)
        logger.info("resumed from %s at step %d", resume, state.step)
    if accelerator.is_main_process:
        _truncate_metrics(output_dir / "metrics.jsonl", state.step)

    source = load_source(config.data, seed=training.seed)
    collate = Collator(tokenizer, unwrapped.caption_streams if unwrapped.use_clip else [], config.data.max_text_length)
    pin = accelerator.device.type == "cuda"
    if config.data.streaming:
        from .data import StreamingPretrainingDataset

        stream = StreamingPretrainingDataset(source, config.data, config.objective, training.seed,
                                             accelerator.process_index, accelerator.num_processes,
                                             start_sample=state.micro_batches * training.batch_size,
                                             start_position=state.stream_positions[accelerator.process_index]
                                             if state.stream_positions else (0, 0))
        loader = torch.utils.data.DataLoader(stream, batch_size=training.batch_size, drop_last=True,
                                             num_workers=min(config.data.num_workers, 1), collate_fn=collate,
                                             pin_memory=pin)
    else:
        dataset = PretrainingDataset(source, config.data, config.objective, seed=training.seed)
        sampler = GlobalBatchSampler(len(dataset), training.batch_size, accelerator.process_index,
                                     accelerator.num_processes, training.seed, start_batch=state.micro_batches)
        loader = torch.utils.data.DataLoader(
            dataset, batch_sampler=sampler, num_workers=config.data.num_workers, collate_fn=collate,
            pin_memory=pin, persistent_workers=config.data.num_workers > 0,
        )
    batches = endless(loader)
    evaluator = None
    if config.data.source == "scenes" and config.eval.num_examples > 0:
        from .evaluation import ScenesEvaluator

        evaluator = ScenesEvaluator(config, seed=training.seed)
    elif config.eval.num_examples > 0 and accelerator.is_main_process:
        logger.info(
            "eval: the built-in evaluation uses the embedded scenes and runs only with data.source=scenes; evaluate "
            "%s/final with tips_hf.dense and tips_hf.metrics on your own benchmark.", output_dir
        )

    metrics_file = MetricsWriter(output_dir / "metrics.jsonl", accelerator.is_main_process)
    if accelerator.is_main_process and _tracker(config):
        accelerator.init_trackers("tips_pretrain", config={k: str(v) for k, v in config.to_dict().items()})
    progress = tqdm(
        total=training.max_steps,
        initial=state.step,
        desc="pretraining",
        unit="step",
        disable=not (accelerator.is_main_process and training.progress_bar),
    )
    window: dict[str, float] = {}
    window_steps, window_images, window_data_s, window_start = 0, 0, 0.0, time.perf_counter()
    global_batch = training.batch_size * accelerator.num_processes * training.gradient_accumulation_steps
    params = [p for p in module.parameters() if p.requires_grad]
    last_eval: dict[str, float] = {}

    while state.step < training.max_steps:
        values = step_values(config, state.step)
        for group in optimizer.param_groups:
            group["lr"] = values["lr"]
            group["weight_decay"] = values["weight_decay"] if group.get("apply_decay") else 0.0
        step_logs: dict[str, float] = {}
        skipped = torch.zeros((), device=accelerator.device)
        for micro in range(training.gradient_accumulation_steps):
            wait = time.perf_counter()
            batch = next(batches)
            window_data_s += time.perf_counter() - wait
            skipped += batch.pop("skipped").to(accelerator.device)
            if "stream_position" in batch:
                stream_position = batch.pop("stream_position")
            batch = to_device(batch, accelerator.device)
            last = micro == training.gradient_accumulation_steps - 1
            sync = contextlib.nullcontext() if last else accelerator.no_sync(module)
            with sync, accelerator.autocast():
                out = module(batch, values["teacher_temperature"])
                accelerator.backward(out.loss / training.gradient_accumulation_steps)
            for key, value in out.logs.items():
                step_logs[key] = step_logs.get(key, 0.0) + value / training.gradient_accumulation_steps
            state.micro_batches += 1
        if config.optim.grad_clip > 0:
            grad_norm = accelerator.clip_grad_norm_(params, config.optim.grad_clip)
            step_logs["grad_norm"] = float(grad_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        unwrapped.update_teacher(values["teacher_momentum"])
        state.step += 1
        state.samples_seen += global_batch
        state.skipped_images += int(accelerator.reduce(skipped, reduction="sum").item())
        progress.update(1)
        for key, value in step_logs.items():
            window[key] = window.get(key, 0.0) + value
        window_steps += 1
        window_images += global_batch

        if state.step % training.logging_steps == 0 or state.step == training.max_steps:
            averaged = {k: v / window_steps for k, v in window.items()}
            reduced = (
                accelerator.reduce(
                    torch.tensor(list(averaged.values()), device=accelerator.device), reduction="mean"
                ).tolist()
                if averaged
                else []
            )
            elapsed = time.perf_counter() - window_start
            record = {
                "step": state.step,
                **dict(zip(averaged, reduced)),
                "lr": values["lr"],
                "weight_decay": values["weight_decay"],
                "teacher_momentum": values["teacher_momentum"],
                "teacher_temperature": values["teacher_temperature"],
                "images_per_s": window_images / max(elapsed, 1e-9),
                "data_wait_s": window_data_s / window_steps,
                "skipped_images": state.skipped_images,
                "samples_seen": state.samples_seen,
            }
            if not math.isfinite(record.get("loss", 0.0)):
                raise FloatingPointError(f"the loss is {record['loss']} at step {state.step}; lower optim.lr?")
            metrics_file.write(record)
            if _tracker(config):
                accelerator.log({k: v for k, v in record.items() if k != "step"}, step=state.step)
            progress.set_postfix(
                loss=f"{record.get('loss', 0):.3f}", lr=f"{values['lr']:.1e}", img_s=f"{record['images_per_s']:.0f}"
            )
            window, window_steps, window_images, window_data_s = {}, 0, 0, 0.0
            window_start = time.perf_counter()

        if training.eval_steps and state.step % training.eval_steps == 0 and state.step < training.max_steps:
            last_eval = _evaluate(accelerator, evaluator, unwrapped, tokenizer, state, metrics_file, config)
        if training.save_steps and state.step % training.save_steps == 0:
            if config.data.streaming:
                gathered = accelerator.gather(stream_position.reshape(1, 2).to(accelerator.device))
                state.stream_positions = gathered.tolist()
            save_checkpoint(
                accelerator,
                module,
                optimizer,
                state,
                output_dir,
                training.keep_last,
                extra={"config": config.to_dict()},
            )
        maybe_fault(f"step:{state.step}")

    progress.close()
    last_eval = _evaluate(accelerator, evaluator, unwrapped, tokenizer, state, metrics_file, config) or last_eval
    final_dir = output_dir / "final"
    if accelerator.is_main_process:
        export_final(unwrapped.student, tokenizer, config, final_dir, last_eval)
    accelerator.wait_for_everyone()
    accelerator.end_training()
    wall = time.time() - start_time
    if accelerator.is_main_process:
        metrics_file.write({"event": "end", "step": state.step, "wall_time_s": wall, **last_eval})
    return TrainResult(output_dir, final_dir, state, last_eval, wall)


def endless(loader):
    """Batches forever (both the map-style sampler and the stream are infinite already; this guards the loader)."""
    while True:
        yield from loader


def _truncate_metrics(path: Path, step: int) -> None:
    """Keep the records up to `step` (a resumed run logs the later steps again; a fresh run starts empty)."""
    if not path.is_file():
        return
    kept = [line for line in path.read_text().splitlines() if line and step > 0 and json.loads(line).get("step", 0) <= step
            and json.loads(line).get("event") != "end"]
    tmp = path.with_suffix(".jsonl.tmp")
    tmp.write_text("".join(line + "\n" for line in kept))
    os.replace(tmp, path)


def _evaluate(accelerator, evaluator, unwrapped, tokenizer, state, metrics_file, config) -> dict[str, float]:
    if evaluator is None:
        return {}
    metrics = {}
    if accelerator.is_main_process:
        with accelerator.autocast():
            metrics = evaluator(unwrapped.student, tokenizer)
        metrics_file.write({"step": state.step, "event": "eval", **metrics})
        if _tracker(config):
            accelerator.log({f"eval/{k}": v for k, v in metrics.items()}, step=state.step)
        summary = ", ".join(f"{k}={v:.3f}" for k, v in metrics.items() if "@1" in k or "miou" in k or "accuracy" in k)
        logger.info("step %d eval: %s", state.step, summary)
    accelerator.wait_for_everyone()
    return metrics


def export_final(student: TipsModel, tokenizer, config: PretrainConfig, path: Path, metrics: dict) -> None:
    """`save_pretrained` of the student TipsModel and its processor, atomically; the teacher is not exported."""
    from ..conversion.writer import atomic_folder
    from ..image_processing_tips import TipsImageProcessor
    from ..processing_tips import TipsProcessor

    with atomic_folder(path, overwrite=True) as staging:
        if hasattr(student, "merge_and_unload"):  # LoRA: keep the adapter, export the merged TipsModel
            student.save_pretrained(staging / "adapter")
            student = student.merge_and_unload()
        student.config.image_resolution = config.eval.image_size or config.data.global_size
        student.save_pretrained(staging)
        size = student.config.image_resolution
        processor = TipsProcessor(TipsImageProcessor(size={"height": size, "width": size}), tokenizer)
        processor.save_pretrained(staging)
        (staging / "training_metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
