#!/usr/bin/env python
"""Memory of the pretraining step: a measurement of the iBOT patch head + loss, and a per-GPU estimate of a config.

Measurement (`--component ibot`): the student and teacher patch heads (width 768 → 2048 → 2048 → 256 → K prototypes,
the B/14 recipe) and the iBOT++ loss on `--tokens` patch tokens (75 % masked), forward + backward, teacher targets
and the softmax centre included. `peak_gib` is the measured peak of memory allocated during forward + backward above
what was allocated before (head weights and input tokens are already there):

- CUDA: `torch.cuda.max_memory_allocated()` after `reset_peak_memory_stats()`.
- CPU: the process's peak resident set size (Linux `VmHWM`, reset through `/proc/self/clear_refs`) minus the
  resident size before. glibc is told to serve every block over 64 KiB with its own mmap
  (`MALLOC_MMAP_THRESHOLD_`, the script re-executes itself with it), so freed tensors leave the resident set at once
  and the high-water mark follows the tensors alive at each moment (checked on a known 512 MiB pattern: 515 MiB).
  It can only over-count (allocator slack, small-object heap pages), never miss a short-lived tensor, which a sampling
  or `tracemalloc` approach would (torch's allocations are invisible to tracemalloc).

    python benchmarks/bench_memory.py --device cpu --component ibot --tokens 4096 --prototypes 32768
    python benchmarks/bench_memory.py --device cpu --component ibot --tokens 4096 --prototypes 32768 --full

Estimate (`--config training/configs/X.yaml [--gpus N]`): per-GPU peak of a shipped config from its sizes, printed
term by term (documented in docs/performance.md): weights, gradients, AdamW state, teacher, activations with the
config's activation checkpointing setting, the loss heads, and a fixed allowance for the CUDA context and allocator
fragmentation. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

MMAP_ENV = "MALLOC_MMAP_THRESHOLD_"
GIB = 2**30


# ------------------------------------------------------------------------------------------------- measurement
def _status(key: str) -> int:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(key):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"{key} not in /proc/self/status")


class PeakMemory:
    """Peak bytes allocated inside the `with` block above the level at its start (see the module docstring)."""

    def __init__(self, device: str):
        self.device = device
        self.peak = 0

    def __enter__(self) -> PeakMemory:
        import torch

        if self.device.startswith("cuda"):
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.base = torch.cuda.memory_allocated()
        else:
            with open("/proc/self/clear_refs", "w") as handle:
                handle.write("5")  # reset the peak resident set size (Linux >= 4.0)
            self.base = _status("VmRSS:")
        return self

    def __exit__(self, *exc) -> None:
        import torch

        if self.device.startswith("cuda"):
            torch.cuda.synchronize()
            self.peak = torch.cuda.max_memory_allocated() - self.base
        else:
            self.peak = _status("VmHWM:") - self.base


def measure_ibot(tokens: int, prototypes: int, device: str = "cpu", chunk_tokens: int | None = None,
                 full: bool = False, width: int = 768, patches: int = 256, seed: int = 0) -> dict:
    """Peak memory of forward + backward of the iBOT++ patch heads + loss (chunked, or `full`: the whole
    (tokens, K) logits, targets and log-probabilities at once, as before chunking)."""
    import torch

    from tips_hf.losses import IBOTPatchLoss
    from tips_hf.pretraining.heads import DINOHead
    from tips_hf.pretraining.meta_arch import CHUNK_ELEMENTS

    torch.manual_seed(seed)
    torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))
    batch = max(1, tokens // patches)
    patches = tokens // batch
    student = DINOHead(width, prototypes, hidden_dim=2048, bottleneck_dim=256).to(device)
    teacher = DINOHead(width, prototypes, hidden_dim=2048, bottleneck_dim=256).to(device).requires_grad_(False)
    loss = IBOTPatchLoss(prototypes, mode="all").to(device)
    student_tokens = torch.randn(batch, patches, width, device=device, requires_grad=True)
    teacher_tokens = torch.randn(batch, patches, width, device=device)
    mask = torch.rand(batch, patches, generator=torch.Generator().manual_seed(seed)).to(device) < 0.75
    chunk = chunk_tokens or max(1, CHUNK_ELEMENTS // prototypes)
    with PeakMemory(device) as peak:
        if full:
            with torch.no_grad():
                targets = loss.teacher_targets(teacher(teacher_tokens), 0.07, mask)
            value = loss(student(student_tokens), targets, mask)
        else:
            with torch.no_grad():
                features, teacher_prototypes = teacher.bottleneck(teacher_tokens), teacher.unit_prototypes()
            value = loss.loss_from_features(student.bottleneck(student_tokens), student.unit_prototypes(), features,
                                            teacher_prototypes, mask, 0.07, chunk)
        value.backward()
        del value
    return {
        "bench": "memory",
        "component": "ibot",
        "mode": "full" if full else "chunked",
        "tokens": batch * patches,
        "prototypes": prototypes,
        "chunk_tokens": None if full else chunk,
        "device": device,
        "peak_gib": round(peak.peak / GIB, 3),
        "one_fp32_copy_gib": round(batch * patches * prototypes * 4 / GIB, 3),
        "method": "cuda max_memory_allocated" if device.startswith("cuda") else "VmHWM - VmRSS, mmap threshold 64 KiB",
    }


# ---------------------------------------------------------------------------------------------------- estimate
def parameter_counts(config) -> dict[str, int]:
    """Parameters of the student towers, its heads and the teacher (counted on the meta device)."""
    import torch

    from tips_hf import TipsConfig, TipsModel
    from tips_hf.pretraining.heads import DINOHead

    model_config = config.model
    vision = dict(model_config.vision)
    text = dict(model_config.text)
    text.setdefault("vocab_size", 32000)
    if model_config.preset:
        tips = TipsConfig.from_preset(model_config.preset, vision_config=vision, text_config=text)
    else:
        tips = TipsConfig(vision_config=vision, text_config=text)
    with torch.device("meta"):
        model = TipsModel(tips)
        objective = config.objective
        width = tips.vision_config.hidden_size
        head = dict(hidden_dim=objective.head_hidden_dim, bottleneck_dim=objective.head_bottleneck_dim,
                    num_layers=objective.head_layers)
        heads = 0
        if objective.distillation_teacher is None and (objective.distill_weight > 0 or objective.mask_weight > 0):
            cls = sum(p.numel() for p in DINOHead(width, objective.head_prototypes, **head).parameters())
            patch = 0 if objective.share_heads else sum(
                p.numel() for p in DINOHead(width, objective.patch_prototypes, **head).parameters())
            heads = cls + patch
    vision_params = sum(p.numel() for p in model.vision_model.parameters())
    text_params = sum(p.numel() for p in model.text_model.parameters())
    teacher = heads  # EMA heads (v1 and v2)
    if objective.distillation_teacher is None and config.objective.recipe == "v1":
        teacher += vision_params
    return {"vision": vision_params, "text": text_params, "heads": heads, "teacher": teacher,
            "config": tips}


def estimate(config, gpus: int) -> dict:
    """Per-GPU peak (bytes) of a pretraining config, term by term. Assumptions (see docs/performance.md):
    float32 master weights + AdamW (m, v) + float32 gradients; DDP adds float32 gradient buckets; FSDP shards the
    16 bytes/parameter over the GPUs and holds two unsharded bf16 blocks (prefetch) and the unsharded root (bf16
    weights + gradients); bf16 autocast keeps a bf16 copy of every weight used. Activations per token and block
    (bf16, SDPA/flash attention, fp32 residual stream) = 2·(16·h + 2·I) bytes (GELU MLP) or 2·(16·h + 4·I)
    (SwiGLU); with activation checkpointing only the block inputs (4·h bytes) plus one block's activations."""
    import torch

    from tips_hf.pretraining.meta_arch import CHUNK_ELEMENTS

    counts = parameter_counts(config)
    tips = counts.pop("config")
    vision, text = tips.vision_config, tips.text_config
    data, objective, training = config.data, config.objective, config.training
    fsdp = training.distributed == "fsdp"
    batch = training.batch_size
    trainable = counts["vision"] + counts["text"] + counts["heads"]
    if config.lora.enabled:
        trainable = counts["heads"]
    regs = vision.num_register_tokens
    global_tokens = (data.global_size // 14) ** 2 + 1 + regs
    local_tokens = (data.local_size // 14) ** 2 + 1 + regs
    views = 1 if objective.distillation_teacher or objective.mask_weight == 0 else 2
    vision_tokens = batch * (views * global_tokens + (data.num_local_crops * local_tokens
                                                       if objective.distill_weight > 0 else 0))
    captions = sum([objective.use_alt_text, objective.use_synthetic]) if objective.clip_weight > 0 else 0
    text_tokens = batch * captions * data.max_text_length

    def per_token(h: int, inter: int, swiglu: bool) -> int:
        return 2 * (16 * h + (4 if swiglu else 2) * inter)

    swiglu = getattr(vision, "ffn_type", "mlp") == "swiglu"
    v_block = per_token(vision.hidden_size, vision.intermediate_size, swiglu)
    t_block = per_token(text.hidden_size, text.intermediate_size, False)
    if training.gradient_checkpointing:
        activations = (vision_tokens * (4 * vision.hidden_size * vision.num_hidden_layers + v_block)
                       + text_tokens * (4 * text.hidden_size * text.num_hidden_layers + t_block))
    else:
        activations = (vision_tokens * v_block * vision.num_hidden_layers
                       + text_tokens * t_block * text.num_hidden_layers)
    # the teacher pass (no grad): one block's activations of the global view at a time
    activations += batch * global_tokens * v_block
    chunk = objective.loss_chunk_tokens or max(1, CHUNK_ELEMENTS // objective.patch_prototypes)
    # a chunk's targets, log-probabilities (then their gradient, in place), a temporary and bf16 GEMM copies
    losses = 4 * 4 * chunk * objective.patch_prototypes
    # the student patch head's MLP over all patch tokens at once (bf16 activations kept for backward: its input,
    # two hidden layers before and after GELU) and the float32 bottleneck features with their gradient
    patch_tokens = batch * (global_tokens - 1 - regs)
    losses += patch_tokens * (2 * (vision.hidden_size + 4 * objective.head_hidden_dim) + 16 * objective.head_bottleneck_dim)
    losses += 4 * 4 * batch * data.num_local_crops * objective.head_prototypes  # DINO: local CLS logits (fp32)
    losses += 2 * batch * views * global_tokens * objective.head_bottleneck_dim * 4  # teacher/student bottlenecks
    if fsdp:
        block = 12 * vision.hidden_size**2 if not swiglu else 4 * vision.hidden_size**2 + 3 * vision.hidden_size * \
            vision.intermediate_size
        root = counts["heads"] + text.vocab_size * text.hidden_size
        weights = 16 * trainable / gpus + 2 * 2 * block + 4 * root
        teacher = 4 * counts["teacher"] / gpus + 2 * counts["teacher"] * (counts["teacher"] == counts["heads"])
    else:
        weights = 20 * trainable
        teacher = 4 * counts["teacher"]
    cast = 2 * (counts["vision"] + counts["text"] + counts["heads"])  # bf16 copies of the weights in use
    if fsdp:
        cast = 0  # FSDP's bf16 parameters are the unsharded blocks above
    distill_teacher = 0
    if objective.distillation_teacher:  # the shipped distillation teacher: a frozen g/14 TipsModel in float32
        from tips_hf import TipsConfig, TipsModel

        with torch.device("meta"):
            teacher_params = sum(p.numel() for p in TipsModel(TipsConfig.from_preset("tips-v2-g14")).parameters())
        distill_teacher = 4 * teacher_params / (gpus if fsdp else 1)
    context = 3 * GIB  # CUDA context, NCCL buffers, allocator fragmentation
    terms = {
        "weights_grads_optimizer": weights,
        "bf16_weight_copies": cast,
        "teacher": teacher + distill_teacher,
        "activations": activations,
        "losses": losses,
        "context_and_fragmentation": context,
    }
    total = sum(terms.values())
    return {
        "bench": "memory_estimate",
        "distributed": training.distributed,
        "gpus": gpus if fsdp else None,
        "batch_per_gpu": batch,
        "gradient_checkpointing": training.gradient_checkpointing,
        "params_m": {k: round(v / 1e6, 1) for k, v in counts.items()},
        "vision_tokens_per_step": vision_tokens,
        **{f"{k}_gib": round(v / GIB, 2) for k, v in terms.items()},
        "total_gib": round(total / GIB, 2),
        "fits_80gb": total <= 80e9,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--component", default="ibot", choices=["ibot"])
    parser.add_argument("--tokens", type=int, default=4096)
    parser.add_argument("--prototypes", type=int, default=32768)
    parser.add_argument("--chunk-tokens", type=int, default=None)
    parser.add_argument("--full", action="store_true", help="the unchunked loss (the before picture)")
    parser.add_argument("--config", default=None, help="print the per-GPU estimate of a pretraining config")
    parser.add_argument("--gpus", type=int, default=None, help="GPUs of the run (FSDP shards over them)")
    parser.add_argument("overrides", nargs="*", help="section.key=value applied to --config (what-if estimates)")
    args = parser.parse_args(argv)
    if args.config:
        from tips_hf.pretraining import load_config

        config = load_config(args.config, args.overrides)
        gpus = args.gpus or _gpus_from_comment(Path(args.config))
        print(json.dumps({"config": args.config, **estimate(config, gpus)}))
        return
    if not args.device.startswith("cuda") and os.environ.get(MMAP_ENV) != "65536":
        # re-execute with every large block mmapped, so that freeing gives the memory back at once (see docstring)
        os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, MMAP_ENV: "65536"})
    print(json.dumps(measure_ibot(args.tokens, args.prototypes, args.device, args.chunk_tokens, args.full)))


def _gpus_from_comment(path: Path) -> int:
    """GPUs named in the config's `batch_size` comment ("per GPU: 32 GPUs × 256 = 8192"); 8 otherwise."""
    import re

    match = re.search(r"per GPU: (\d+) GPUs", path.read_text())
    return int(match.group(1)) if match else 8


if __name__ == "__main__":
    main()
