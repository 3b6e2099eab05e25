"""The pretraining loop: `Pretrainer`, a plain Accelerate loop around `TipsPretrainingModel` (DDP, or torch FSDP2).

Per optimizer step: the scheduled values (LR × per-group factor, weight decay, teacher momentum and temperature) are
computed from the step, `gradient_accumulation_steps` micro-batches run forward/backward (gradient sync only on the
last), gradients are clipped, AdamW steps, the loss centres and the teacher EMA follow. Logs go to `OUTPUT_DIR/metrics.jsonl`, the console (progress bar)
and TensorBoard/trackio; checkpoints are atomic and complete enough for an exact resume.
"""

from __future__ import annotations

import contextlib
import gc
import json
import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .._paths import check_model_paths
from ..modeling.modeling_tips import TipsModel
from .checkpointing import (
    CheckpointMismatch,
    StopSignals,
    TrainerState,
    init_restarted_process_group,
    load_checkpoint,
    load_module_state,
    maybe_fault,
    resolve_checkpoint,
    restart_count,
    save_checkpoint,
    stop_notice,
    truncate_metrics,
)
from .config import PretrainConfig, launcher_precision_conflict, prepare_launch_environment, save_config
from .data import (
    Collator,
    GlobalBatchSampler,
    PretrainingDataset,
    load_source,
    processor_normalisation,
    square_image_processor,
    to_device,
)
from .meta_arch import TipsPretrainingModel
from .schedules import step_values
from .tracking import flat_hyperparameters, log_with

logger = logging.getLogger("tips_hf.pretraining")


@dataclass
class TrainResult:
    output_dir: Path
    final_model_dir: Path | None
    state: TrainerState
    metrics: dict[str, float] = field(default_factory=dict)
    wall_time_s: float = 0.0
    stopped_by_signal: int | None = None  # set when SIGTERM / SIGUSR1 stopped the run after a checkpoint


def default_tokenizer_path() -> str:
    from ..data.build_tokenizer import TOKENIZER_PATH

    return str(TOKENIZER_PATH)


def build_tokenizer(config: PretrainConfig):
    from ..processing.tokenization_tips import TipsTokenizer

    path = config.model.tokenizer or default_tokenizer_path()
    if not Path(path).is_file():
        raise ValueError(f"model.tokenizer: {path} is not a file (a SentencePiece tokenizer.model).")
    return TipsTokenizer(path, model_max_length=config.data.max_text_length)


def inherit_pixel_normalisation(config: PretrainConfig) -> None:
    """A `model.init_from` folder trained on normalised pixels (its processor has `do_normalize`) keeps getting them:
    unset `data.pixel_mean`/`pixel_std` take the folder's values; values that differ from the folder's are refused."""
    if not config.model.init_from:
        return
    mean, std = processor_normalisation(config.model.init_from)
    data = config.data
    if data.pixel_mean is None:
        data.pixel_mean, data.pixel_std = mean, std
        config.check_pixel_normalisation(inherited=True)
    elif (tuple(data.pixel_mean), tuple(data.pixel_std)) != (mean, std):
        raise ValueError(
            f"data.pixel_mean/pixel_std {list(data.pixel_mean)} / {list(data.pixel_std)} differ from the processor of "
            f"model.init_from ({config.model.init_from}: mean {mean}, std {std}); leave them unset to use the folder's."
        )


def build_student(config: PretrainConfig, vocab_size: int) -> TipsModel:
    """A random TipsModel from the preset/overrides, or the `init_from` checkpoint."""
    from ..modeling.configuration_tips import TipsConfig

    model_config = config.model
    if model_config.init_from:
        model = TipsModel.from_pretrained(model_config.init_from)
        set_drop_path(model, model_config.drop_path_rate)
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


def _tracker(config: PretrainConfig) -> list[str] | None:
    return log_with(config.training.report_to)


class MetricsWriter:
    """Appends one JSON object per line to `metrics.jsonl` (main process only), flushed at once."""

    def __init__(self, path: Path, enabled: bool):
        self.path, self.enabled = path, enabled

    def write(self, record: dict) -> None:
        if self.enabled:
            with open(self.path, "a") as handle:
                handle.write(json.dumps(record) + "\n")


def build_module(config: PretrainConfig, tokenizer) -> TipsPretrainingModel:
    """Student (+ LoRA), optional frozen distillation teacher, heads and losses in one module, in training mode.

    `TipsModel.from_pretrained` (`model.init_from`) returns a model in eval mode, which would silently switch off
    drop-path, dropout, LoRA dropout and transformers' gradient checkpointing (active only in training mode)."""
    student = build_student(config, len(tokenizer))
    if config.lora.enabled:
        from peft import get_peft_model

        student = get_peft_model(student, config.lora.peft_config())
    teacher = None
    if config.objective.distillation_teacher:
        teacher = TipsModel.from_pretrained(config.objective.distillation_teacher)
    module = TipsPretrainingModel(student, config, teacher)
    if config.model.init_heads_from:
        loaded = load_module_state(module, config.model.init_heads_from)
        logger.info("loaded %d head/teacher/centre tensors from %s", len(loaded), config.model.init_heads_from)
    module.freeze_unused()
    if config.training.gradient_checkpointing:
        enable_checkpointing(student, config.training.checkpoint_every)
    return module.train()


def transformer_blocks(model: torch.nn.Module) -> list[list[torch.nn.Module]]:
    """The transformer blocks of each tower (vision, text, …), in order."""
    from ..modeling.modeling_tips import TipsTextLayer, TipsVisionLayer

    return [
        list(m.layers) for m in model.modules()
        if isinstance(getattr(m, "layers", None), torch.nn.ModuleList)
        and any(isinstance(layer, (TipsVisionLayer, TipsTextLayer)) for layer in m.layers)
    ]


def enable_checkpointing(student: torch.nn.Module, every: int = 1) -> int:
    """Activation checkpointing of every `every`-th transformer block of each tower (selective per block, as
    torchtitan's and DINOv3's checkpointing frequency): 1 recomputes all, 2 half of them for about half the saved
    activations. Returns the number of checkpointed blocks."""
    # Newer transformers name it activation_checkpointing_enable (the old name warns); 5.14 has the old name only.
    enable = getattr(student, "activation_checkpointing_enable", None) or student.gradient_checkpointing_enable
    enable()
    checkpointed = 0
    for blocks in transformer_blocks(student):
        for index, block in enumerate(blocks):
            block.gradient_checkpointing = index % every == 0
            checkpointed += block.gradient_checkpointing
    return checkpointed


def compile_student(student: torch.nn.Module, scope: str, backend: str = "inductor") -> None:
    """`torch.compile` the student: each transformer block (`scope="blocks"`, regional compilation: every block of a
    tower reuses one graph, so compiling takes seconds, and FSDP2's per-block sharding and checkpointing wrap
    around it) or the whole vision forward (`"vision"`)."""
    if scope == "vision":
        student.vision_model.forward = torch.compile(student.vision_model.forward, backend=backend)
        return
    for blocks in transformer_blocks(student):
        for block in blocks:
            block.compile(backend=backend)


def attention_kernels(backends: tuple[str, ...], device: torch.device):
    """The SDPA kernel preference of `training.sdpa_backends` as a context for the step (CUDA only; on CPU PyTorch
    has its own flash kernel and the math one)."""
    if device.type != "cuda":
        return contextlib.nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from .config import SDPA_BACKENDS

    return sdpa_kernel([getattr(SDPBackend, SDPA_BACKENDS[name]) for name in backends], set_priority=True)


def attention_report(model: TipsModel, backends: tuple[str, ...], device: torch.device, dtype: torch.dtype) -> str:
    """Which SDPA kernel each tower's attention gets on this device (the first of `backends` that supports its head
    size and dtype), for the log."""
    if device.type != "cuda":
        return "attention: SDPA on CPU (PyTorch's CPU flash kernel, else math)"
    checks = {
        "cudnn": getattr(torch.backends.cuda, "can_use_cudnn_attention", None),
        "flash": torch.backends.cuda.can_use_flash_attention,
        "efficient": torch.backends.cuda.can_use_efficient_attention,
        "math": lambda params, debug=False: True,
    }
    parts = []
    for name, tower in (("vision", model.config.vision_config), ("text", model.config.text_config)):
        heads = tower.num_attention_heads
        q = torch.zeros(2, heads, 64, tower.hidden_size // heads, device=device, dtype=dtype)
        try:
            params = torch.backends.cuda.SDPAParams(q, q, q, None, 0.0, False, False)
            chosen = next(b for b in backends if checks[b] is not None and checks[b](params, False))
        except (RuntimeError, TypeError, StopIteration):
            chosen = "unknown"
        skipped = list(backends[: backends.index(chosen)]) if chosen in backends else []
        note = f" ({', '.join(skipped)} unsupported for head size {tower.hidden_size // heads})" if skipped else ""
        parts.append(f"{name} → {chosen}{note}")
    return "attention: SDPA " + "; ".join(parts)


def student_model(module: TipsPretrainingModel) -> TipsModel:
    """The student `TipsModel` (under a LoRA wrapper too)."""
    student = module.student
    return student.get_base_model() if hasattr(student, "get_base_model") else student


def set_drop_path(model: TipsModel, rate: float) -> None:
    """Stochastic depth of the vision tower, linear over the blocks (0 … rate), as a fresh model would have it;
    recorded in the config so that the export says what the model was trained with."""
    layers = model.vision_model.encoder.layers
    model.config.vision_config.drop_path_rate = rate
    for index, layer in enumerate(layers):
        layer.drop_path.rate = rate * index / max(len(layers) - 1, 1)


class Pretrainer:
    """The loop in the shape DINOv2/open_clip readers know: `__init__` sets everything up (accelerator, models,
    optimizer, resume, data, evaluation, logging), `train_step` runs one optimizer step, and `fit` calls it with
    the logging, evaluation and checkpoint hooks (`log`, `evaluate`, `save`) and exports `final/` at the end.

    `training.distributed: ddp` wraps the module with accelerate (DDP); `fsdp` applies torch FSDP2 itself
    (`fully_shard` per transformer block, then the root) and keeps accelerate for launching, devices and mixed
    precision."""

    def __init__(self, config: PretrainConfig):
        from accelerate import Accelerator
        from accelerate.utils import DistributedDataParallelKwargs, set_seed

        inherit_pixel_normalisation(config)
        self.config = config
        self.start_time = time.time()
        prepare_launch_environment()
        init_restarted_process_group()  # before accelerate's own rendezvous: a restarted group must not read stale keys
        training = config.training
        self.output_dir = Path(training.output_dir)
        if conflict := launcher_precision_conflict(training.mixed_precision):
            logger.warning(conflict)
        self.accelerator = accelerator = Accelerator(
            mixed_precision=training.mixed_precision,
            log_with=_tracker(config),
            project_dir=str(self.output_dir),
            kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=False)],
        )
        if accelerator.distributed_type.name == "FSDP":
            raise ValueError(
                "accelerate's FSDP plugin is not used by the tips-hf trainer: launch with a DDP/multi-GPU accelerate "
                "config and set training.distributed=fsdp (torch FSDP2, applied by the trainer)."
            )
        self.fsdp = training.distributed in ("fsdp", "hsdp")  # torch FSDP2, sharded checkpoints
        if self.fsdp and config.lora.enabled:
            raise ValueError(f"training.distributed={training.distributed} does not support lora.enabled; use "
                             "training.distributed=ddp.")
        self.scaler = loss_scaler(training, accelerator.device)
        if accelerator.device.type == "cpu":
            # `accelerate launch` exports OMP_NUM_THREADS=1 for every process, which halves a 2-core CPU run
            torch.set_num_threads(training.cpu_threads or max(1, (os.cpu_count() or 1) // accelerator.num_processes))
        if accelerator.is_main_process:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            save_config(config, self.output_dir / "config.yaml")
        set_seed(training.seed)  # same initialisation in every process
        self.tokenizer = build_tokenizer(config)
        module = build_module(config, self.tokenizer)
        if accelerator.is_main_process and config.lora.enabled:
            module.student.print_trainable_parameters()
        if training.compile:
            compile_student(module.student, training.compile_scope, training.compile_backend)
        if accelerator.is_main_process:
            precision = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(training.mixed_precision, torch.float32)
            logger.info(attention_report(student_model(module), training.sdpa_backends, accelerator.device, precision))
        self.attention = lambda: attention_kernels(training.sdpa_backends, accelerator.device)
        # fp16 autocasts on every device: accelerate's fp16 on a CPU would silently train in float32
        self.autocast = accelerator.autocast if self.scaler is None else \
            lambda: torch.autocast(accelerator.device.type, dtype=torch.float16)
        if self.fsdp:
            module.to(accelerator.device)
            mesh = hsdp_mesh_shape(accelerator.num_processes, training.hsdp_shard_size) \
                if training.distributed == "hsdp" else (accelerator.num_processes,)
            apply_fsdp(module, accelerator.device, mesh, training.mixed_precision)
            if accelerator.is_main_process:
                logger.info("training.distributed=%s: FSDP2 mesh %s", training.distributed,
                            "{} replicas × {} shards".format(*mesh) if len(mesh) == 2 else f"{mesh[0]} shards")
        optim = config.optim
        optimizer = torch.optim.AdamW(
            module.parameter_groups(optim.weight_decay, optim.layer_decay, optim.patch_embed_lr_mult),
            lr=optim.lr,
            betas=tuple(optim.betas),
            eps=optim.eps,
            fused=optim.fused or None,
        )
        # the optimizer stays a plain torch one in both modes: the trainer steps it (through the fp16 loss scaler)
        self.module = module if self.fsdp else accelerator.prepare(module)
        self.optimizer = optimizer
        self.unwrapped: TipsPretrainingModel = module
        self.params = [p for p in self.module.parameters() if p.requires_grad]
        self.last_layer = self.unwrapped.last_layer_parameters()

        self.state = TrainerState()
        # a worker group that torchrun restarted (--max-restarts) resumes from the run's newest checkpoint by itself
        resume = resolve_checkpoint(self.output_dir, training.resume_from_checkpoint, restarted=restart_count() > 0)
        if resume is not None:
            self.state = load_checkpoint(accelerator, self.module, self.optimizer, resume, fsdp=self.fsdp,
                                         scaler=self.scaler, seed=training.seed)
            check_resume_layout(self.state, resume, training, accelerator.num_processes)
            logger.info("resumed from %s at step %d%s", resume, self.state.step,
                        f" (torchrun restart {restart_count()})" if restart_count() else "")
        else:
            # Drop-path and dropout masks differ per process (one seed would drop the same samples' blocks on every
            # GPU); a resumed run restores each process's own RNG states instead.
            set_seed(training.seed + accelerator.process_index)
        self.state.processes, self.state.batch_size = accelerator.num_processes, training.batch_size
        self.state.gradient_accumulation_steps = training.gradient_accumulation_steps
        if accelerator.is_main_process:
            truncate_metrics(self.output_dir / "metrics.jsonl", self.state.step)
        self.batches = endless(self._loader())
        self.evaluator = None
        if config.data.source == "scenes" and config.eval.num_examples > 0:
            from .evaluation import ScenesEvaluator

            self.evaluator = ScenesEvaluator(config, seed=training.seed)
        elif config.eval.num_examples > 0 and accelerator.is_main_process:
            logger.info(
                "eval: the built-in evaluation uses the embedded scenes and runs only with data.source=scenes; "
                "evaluate %s/final with tips_hf.dense and tips_hf.metrics on your own benchmark.", self.output_dir
            )
        self.metrics_file = MetricsWriter(self.output_dir / "metrics.jsonl", accelerator.is_main_process)
        if accelerator.is_main_process and _tracker(config):
            accelerator.init_trackers("tips_pretrain", config=flat_hyperparameters(config.to_dict()))
        self.global_batch = training.batch_size * accelerator.num_processes * training.gradient_accumulation_steps
        self._reset_window()

    # ---------------------------------------------------------------------------------------------------- set-up
    def _loader(self) -> torch.utils.data.DataLoader:
        config, accelerator, state = self.config, self.accelerator, self.state
        training = config.training
        source = load_source(config.data, seed=training.seed)
        unwrapped = self.unwrapped
        collate = Collator(self.tokenizer, unwrapped.caption_streams if unwrapped.use_clip else [],
                           config.data.max_text_length)
        pin = accelerator.device.type == "cuda"
        workers = config.data.num_workers
        # The loader's own generator: creating its iterator must not draw from the global RNG, whose state (drop-path
        # draws) a checkpoint restores; a resumed run would otherwise be one draw off.
        generator = torch.Generator().manual_seed(training.seed)
        if config.data.streaming:
            from .data import StreamingPretrainingDataset

            if state.stream_positions and len(state.stream_positions) != accelerator.num_processes:
                raise CheckpointMismatch(
                    f"the checkpoint's streamed data position belongs to {len(state.stream_positions)} process(es) × "
                    f"{len(state.stream_positions[0])} DataLoader worker stream(s): a stream is split by (process, "
                    "worker) and cannot be re-split mid-pass. Resume on "
                    f"{len(state.stream_positions)} process(es) with data.num_workers={config.data.num_workers}; to "
                    "continue on another process count, start a new stage from this run (model.init_from=its "
                    "exported student, model.init_heads_from=the checkpoint) or use a map-style source "
                    "(data.streaming=false), which resumes on any process count.")
            positions = state.stream_positions[accelerator.process_index] if state.stream_positions else None
            states = state.stream_states[accelerator.process_index] if state.stream_states else None
            stream = StreamingPretrainingDataset(source, config.data, config.objective, training.seed,
                                                 accelerator.process_index, accelerator.num_processes,
                                                 num_workers=workers, start_positions=positions,
                                                 start_batch=state.micro_batches,
                                                 shuffle_buffer=config.data.shuffle_buffer,
                                                 resume=config.data.stream_resume, start_states=states)
            # one logical stream per (process, worker); the trainer keeps each one's position (and datasets state,
            # what data.stream_resume=fast restores) for the checkpoint
            self.stream_state = torch.tensor(stream.start_positions, dtype=torch.long)
            self.stream_datasets_states = list(stream.start_states)
            return torch.utils.data.DataLoader(stream, batch_size=training.batch_size, drop_last=True,
                                               num_workers=workers, collate_fn=collate, pin_memory=pin,
                                               persistent_workers=workers > 0, generator=generator)
        dataset = PretrainingDataset(source, config.data, config.objective, seed=training.seed)
        sampler = GlobalBatchSampler(len(dataset), training.batch_size, accelerator.process_index,
                                     accelerator.num_processes, training.seed, start_batch=state.micro_batches)
        return torch.utils.data.DataLoader(dataset, batch_sampler=sampler, num_workers=workers, collate_fn=collate,
                                           pin_memory=pin, persistent_workers=workers > 0, generator=generator)

    def _reset_window(self) -> None:
        self.window: dict[str, torch.Tensor] = {}
        self.window_steps, self.window_images, self.window_data_s = 0, 0, 0.0
        self.window_skipped = torch.zeros((), dtype=torch.long, device=self.accelerator.device)
        self.window_start = time.perf_counter()

    # ------------------------------------------------------------------------------------------------------ step
    def train_step(self, values: dict[str, float]) -> dict[str, torch.Tensor]:
        """One optimizer step: `gradient_accumulation_steps` micro-batches (gradients synchronised on the last),
        prototype layers frozen early on, clipping, AdamW, the centres and the EMA teacher. Returns the step's
        per-loss values as device tensors (no host synchronisation)."""
        config, accelerator, module = self.config, self.accelerator, self.module
        training = config.training
        for group in self.optimizer.param_groups:
            group["lr"] = values["lr"] * group.get("lr_scale", 1.0)
            group["weight_decay"] = values["weight_decay"] if group.get("apply_decay") else 0.0
        logs: dict[str, torch.Tensor] = {}
        accumulation = training.gradient_accumulation_steps
        for micro in range(accumulation):
            wait = time.perf_counter()
            batch = next(self.batches)
            self.window_data_s += time.perf_counter() - wait
            self.window_skipped += batch.pop("skipped").to(accelerator.device, non_blocking=True)
            if "stream_position" in batch:
                worker, *position = batch.pop("stream_position").tolist()
                self.stream_state[worker] = torch.tensor(position)
                self.stream_datasets_states[worker] = batch.pop("stream_state", None)
            batch = to_device(batch, self.config.data, accelerator.device)
            last = micro == accumulation - 1
            if self.fsdp:
                module.set_requires_gradient_sync(last)
                sync = contextlib.nullcontext()
            else:
                sync = contextlib.nullcontext() if last else accelerator.no_sync(module)
            with sync, self.autocast(), self.attention():
                out = module(batch, values["teacher_temperature"])
                loss = out.loss / accumulation
                (loss if self.scaler is None else self.scaler.scale(loss)).backward()
            for key, value in out.logs.items():
                logs[key] = logs.get(key, 0.0) + value / accumulation
            self.state.micro_batches += 1
        if self.state.step < config.optim.freeze_last_layer_steps:
            for param in self.last_layer:
                param.grad = None  # AdamW skips parameters without a gradient (no update, no weight decay)
        if self.scaler is not None:
            # fp16: true gradients for the clipping and the logged norm; an inf/NaN in any process's gradients (or
            # shard of them) is agreed by all, and the step is skipped everywhere while the scale backs off
            self.scaler.unscale_(self.optimizer)
        if config.optim.grad_clip > 0:
            logs["grad_norm"] = self._clip(config.optim.grad_clip)
        if self.scaler is None:
            self.optimizer.step()
        else:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.unwrapped.update_teacher(values["teacher_momentum"])
        self.state.step += 1
        self.state.samples_seen += self.global_batch
        return logs

    def _clip(self, max_norm: float) -> torch.Tensor:
        if not self.fsdp:
            return self.accelerator.clip_grad_norm_(self.params, max_norm).detach()
        grads = [p.grad for p in self.params if p.grad is not None]
        total = torch.nn.utils.get_total_norm(grads)
        if hasattr(total, "full_tensor"):  # a DTensor: the norm over every shard
            total = total.full_tensor()
        torch.nn.utils.clip_grads_with_norm_([p for p in self.params if p.grad is not None], max_norm, total)
        return total.detach()

    # ----------------------------------------------------------------------------------------------------- hooks
    def log(self, values: dict[str, float]) -> None:
        """Average the window's losses over steps and processes, move them to the host (the only host sync of the
        loop besides checkpoints), write metrics.jsonl / trackers / progress bar."""
        accelerator, state = self.accelerator, self.state
        keys = list(self.window)
        averaged = torch.stack([self.window[k].float() for k in keys]) / self.window_steps if keys else None
        reduced = accelerator.reduce(averaged, reduction="mean").tolist() if keys else []
        state.skipped_images += int(accelerator.reduce(self.window_skipped, reduction="sum").item())
        elapsed = time.perf_counter() - self.window_start
        record = {
            "step": state.step,
            **dict(zip(keys, reduced)),
            "lr": values["lr"],
            "weight_decay": values["weight_decay"],
            "teacher_momentum": values["teacher_momentum"],
            "teacher_temperature": values["teacher_temperature"],
            "images_per_s": self.window_images / max(elapsed, 1e-9),
            "data_wait_s": self.window_data_s / self.window_steps,
            "skipped_images": state.skipped_images,
            "samples_seen": state.samples_seen,
        }
        if self.scaler is not None:
            record["loss_scale"] = self.scaler.get_scale()
        if not math.isfinite(record.get("loss", 0.0)):
            raise FloatingPointError(f"the loss is {record['loss']} at step {state.step}; lower optim.lr?")
        self.metrics_file.write(record)
        if _tracker(self.config):
            accelerator.log({k: v for k, v in record.items() if k != "step"}, step=state.step)
        self.progress.set_postfix(
            loss=f"{record.get('loss', 0):.3f}", lr=f"{values['lr']:.1e}", img_s=f"{record['images_per_s']:.0f}"
        )
        self._reset_window()

    def full_student(self) -> TipsModel | None:
        """The student as a plain TipsModel on the main process (None elsewhere). FSDP: the full state dict is
        gathered (every process must call this) into an unsharded copy on the CPU."""
        if not self.fsdp:
            return self.unwrapped.student if self.accelerator.is_main_process else None
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        full = get_model_state_dict(
            self.module.student, options=StateDictOptions(full_state_dict=True, cpu_offload=True)
        )
        if not self.accelerator.is_main_process:
            return None
        student = TipsModel(self.unwrapped.student.config)
        student.load_state_dict(full)
        return student.to(self.accelerator.device).eval()

    def evaluate(self) -> dict[str, float]:
        if self.evaluator is None:
            return {}
        accelerator, state = self.accelerator, self.state
        student = self.full_student()
        metrics = {}
        if accelerator.is_main_process:
            was_training = student.training
            with accelerator.autocast():
                metrics = self.evaluator(student, self.tokenizer)
            student.train(was_training)
            self.metrics_file.write({"step": state.step, "event": "eval", **metrics})
            if _tracker(self.config):
                accelerator.log({f"eval/{k}": v for k, v in metrics.items()}, step=state.step)
            summary = ", ".join(f"{k}={v:.3f}" for k, v in metrics.items() if "@1" in k or "miou" in k
                                or "accuracy" in k)
            logger.info("step %d eval: %s", state.step, summary)
        accelerator.wait_for_everyone()
        return metrics

    def save(self) -> None:
        accelerator, state = self.accelerator, self.state
        if self.config.data.streaming:
            gathered = accelerator.gather(self.stream_state[None].to(accelerator.device))
            state.stream_positions = gathered.cpu().tolist()
            from accelerate.utils import gather_object

            state.stream_states = gather_object([self.stream_datasets_states])  # per process: a list per worker
        save_checkpoint(accelerator, self.module, self.optimizer, state, self.output_dir,
                        self.config.training.keep_last, extra={"config": self.config.to_dict()}, fsdp=self.fsdp,
                        scaler=self.scaler)

    # ------------------------------------------------------------------------------------------------------- fit
    def _step(self, stop: StopSignals) -> TrainResult | None:
        """One optimizer step with its logging / evaluation / checkpoint hooks; a TrainResult when a stop signal
        ended the run (after checkpointing this step)."""
        config, state = self.config, self.state
        training = config.training
        values = step_values(config, state.step)
        logs = self.train_step(values)
        self.progress.update(1)
        for key, value in logs.items():
            self.window[key] = self.window.get(key, 0.0) + value
        self.window_steps += 1
        self.window_images += self.global_batch
        if state.step % training.logging_steps == 0 or state.step == training.max_steps:
            self.log(values)
        if training.eval_steps and state.step % training.eval_steps == 0 and state.step < training.max_steps:
            self.last_eval = self.evaluate()
        saved = bool(training.save_steps) and state.step % training.save_steps == 0
        if saved:
            self.save()
        maybe_fault(f"step:{state.step}")
        if (number := stop.agreed()) is None:
            return None
        if not saved:
            self.save()
        self.progress.close()
        record, message = stop_notice(number, state.step)
        logger.warning(message)
        self.metrics_file.write(record)
        self.accelerator.end_training()
        return TrainResult(self.output_dir, None, state, {}, time.time() - self.start_time, stopped_by_signal=number)

    def fit(self) -> TrainResult:
        from tqdm.auto import tqdm

        config, accelerator, state = self.config, self.accelerator, self.state
        training = config.training
        self.progress = tqdm(total=training.max_steps, initial=state.step, desc="pretraining", unit="step",
                             disable=not (accelerator.is_main_process and training.progress_bar))
        self.last_eval: dict[str, float] = {}
        self.module.train()
        stop = StopSignals(training.save_on_signal, accelerator.num_processes)
        try:
            while state.step < training.max_steps:
                if (stopped := self._step(stop)) is not None:
                    return stopped
        finally:
            stop.close()
        self.progress.close()
        last_eval = self.evaluate() or self.last_eval
        final_dir = self.output_dir / "final"
        student = self.full_student()
        if accelerator.is_main_process:
            export_final(student, self.tokenizer, config, final_dir, last_eval)
        accelerator.wait_for_everyone()
        accelerator.end_training()
        wall = time.time() - self.start_time
        if accelerator.is_main_process:
            self.metrics_file.write({"event": "end", "step": state.step, "wall_time_s": wall, **last_eval})
        return TrainResult(self.output_dir, final_dir, state, last_eval, wall)


def loss_scaler(training, device: torch.device) -> torch.amp.GradScaler | None:
    """The fp16 loss scaler (`training.loss_scaling` are its arguments), None in bf16/float32. The trainer owns it in
    every mode, DDP and FSDP/HSDP alike: scaled backward, unscale before clipping, skip the step on inf/NaN, update."""
    if training.mixed_precision != "fp16":
        return None
    return torch.amp.GradScaler(device.type, **training.loss_scaling)


def hsdp_mesh_shape(world_size: int, shard_size: int | None = None) -> tuple[int, int]:
    """(replicas, shard group size) of hybrid sharding: parameters sharded over `shard_size` processes (default: the
    launcher's processes per node, LOCAL_WORLD_SIZE, so that the all-gathers stay inside a node) and replicated
    over the groups (gradients all-reduced across nodes once per step)."""
    shard = shard_size or int(os.environ.get("LOCAL_WORLD_SIZE") or world_size)
    if shard < 1 or world_size % shard:
        raise ValueError(f"training.distributed=hsdp: {world_size} processes do not split into shard groups of "
                         f"{shard} (training.hsdp_shard_size, default the processes per node); choose a divisor of "
                         f"{world_size}.")
    return world_size // shard, shard


def check_resume_layout(state: TrainerState, path: Path, training, processes: int) -> None:
    """A resume on another number of processes sees the same batches only with the same global micro-batch
    (`batch_size` × processes: the sampler's unit, and the contrastive loss's negatives) and the same accumulation;
    say which `training.batch_size` keeps it."""
    if not state.processes or not state.batch_size:
        return  # an older checkpoint: the layout was not recorded
    written = state.batch_size * state.processes
    if written == training.batch_size * processes and \
            state.gradient_accumulation_steps == training.gradient_accumulation_steps:
        return
    fits = f"training.batch_size={written // processes}" if written % processes == 0 else \
        f"a process count that divides {written}"
    raise CheckpointMismatch(
        f"{path} was written by {state.processes} process(es) × training.batch_size={state.batch_size} "
        f"(global micro-batch {written}) with training.gradient_accumulation_steps="
        f"{state.gradient_accumulation_steps}; this run has {processes} × {training.batch_size} with "
        f"{training.gradient_accumulation_steps}. Resuming needs the same global batch and data order: on "
        f"{processes} process(es) use {fits} and gradient_accumulation_steps={state.gradient_accumulation_steps}.")


def apply_fsdp(module: TipsPretrainingModel, device: torch.device, mesh_shape: tuple[int, ...],
               mixed_precision: str) -> None:
    """torch FSDP2 over all processes: `fully_shard` every transformer block (student, v1 EMA teacher, frozen
    distillation teacher), then the root (embeddings, heads, teacher heads, temperatures). `mesh_shape`: (processes,)
    shards over all of them; (replicas, shard size) is hybrid sharding (HSDP, torchtitan's and DINOv3's multi-node
    layout: sharded within a group of consecutive ranks, one node by default, replicated across the groups). bf16
    runs keep float32 master weights, compute in bf16 and reduce gradients in float32; fp16 runs keep float32
    parameters under fp16 autocast."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    from ..modeling.modeling_tips import TipsTextLayer, TipsVisionLayer

    if math.prod(mesh_shape) == 1 and not torch.distributed.is_initialized():
        # a plain `python` / one-process launch sets no RANK/MASTER_ADDR: FSDP still needs a (one-member) group
        torch.distributed.init_process_group(
            "nccl" if device.type == "cuda" else "gloo", store=torch.distributed.HashStore(), rank=0, world_size=1
        )
    names = ("replicate", "shard") if len(mesh_shape) == 2 else ("shard",)
    mesh = init_device_mesh(device.type, tuple(mesh_shape), mesh_dim_names=names)
    policy = (MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
              if mixed_precision == "bf16" else MixedPrecisionPolicy())
    for block in [m for m in module.modules() if isinstance(m, (TipsVisionLayer, TipsTextLayer))]:
        fully_shard(block, mesh=mesh, mp_policy=policy)
    fully_shard(module, mesh=mesh, mp_policy=policy)


def train(config: PretrainConfig) -> TrainResult:
    """Run (or resume) a pretraining job; returns where the final TipsModel + processor were written."""
    check_model_paths(config)  # a missing init_from / teacher folder: named here, not as a Hub error deep inside
    try:
        return Pretrainer(config).fit()
    finally:
        # FSDP modules hold reference cycles (their hooks), and with them tensors of finished collectives: free them
        # while the interpreter is alive. Left to interpreter shutdown, a gloo worker thread can abort the process
        # ("terminate called without an active exception") after a run that has finished and saved.
        gc.collect()


def endless(loader):
    """Batches forever (both the map-style sampler and the stream are infinite already; this guards the loader)."""
    while True:
        yield from loader


def export_final(student: TipsModel, tokenizer, config: PretrainConfig, path: Path, metrics: dict) -> None:
    """`save_pretrained` of the student TipsModel and its processor, atomically; the teacher is not exported."""
    from ..conversion.writer import atomic_folder
    from ..processing.processing_tips import TipsProcessor

    with atomic_folder(path, overwrite=True) as staging:
        if hasattr(student, "merge_and_unload"):  # LoRA: keep the adapter, export the merged TipsModel
            student.save_pretrained(staging / "adapter")
            student = student.merge_and_unload()
        student.config.image_resolution = config.eval.image_size or config.data.global_size
        student.save_pretrained(staging)
        size = student.config.image_resolution
        # A model trained on normalised pixels gets a processor that normalises the same way.
        image_processor = square_image_processor(size, config.data.pixel_mean, config.data.pixel_std)
        processor = TipsProcessor(image_processor, tokenizer)
        processor.save_pretrained(staging)
        (staging / "training_metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
