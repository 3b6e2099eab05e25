#!/usr/bin/env python
"""Count one full pretraining step of a real config on fake tensors: no compute, exact op counts, FLOPs and bytes.

    python benchmarks/count_step.py --config training/configs/b14-v2-hr.yaml --batch-size 32
    python benchmarks/count_step.py --config training/configs/b14-v2.yaml --batch-size 128 objective.loss_chunk_tokens=512

The step is the trainer's (a steady-state one: the optimizer state exists): the student forward on the un-masked + masked global crop and the local crops, the text
tower on both caption streams, teacher targets, every loss, backward (with the config's activation checkpointing),
gradient clipping, AdamW and the EMA teacher update, under the config's autocast. It runs under PyTorch's
`FakeTensorMode` (shapes, dtypes and strides without data) with a `TorchDispatchMode` below autograd that sees every
aten op the step dispatches, so the counts are exact and take seconds on a laptop for a B/14 at 448 px.

The tensors are fake *CPU* tensors under CPU autocast (PyTorch's autograd engine cannot run backward over fake CUDA
tensors without a GPU); CPU and CUDA autocast cast the same GEMMs, convolutions and attention to bf16, so the GEMM
dtypes are those of a GPU run. Prints one JSON line:

- `dispatched_ops`: aten ops dispatched (views included); `kernel_ops`: those that launch a kernel on a GPU (views,
  metadata and allocations excluded);
- `gflop_total`: FLOPs of GEMMs, convolutions and attention (torch.utils.flop_counter's formulas);
  `gflop_fp32_inputs`: the part whose inputs are float32 (IEEE on CUDA cores unless TF32 is enabled): under bf16
  autocast only the contrastive logits, deliberately (cosines ÷ temperatures near 0.005; B/14 batch 32: 0.02 GFLOP);
- `gb_moved`: bytes read and written by the kernel ops (inputs + outputs, an upper bound on DRAM traffic);
- `prototype_gemms`: GEMMs against prototypes (logits and both gradients; the CLS head's too when it has as many
  prototypes as the patch head); `chunks`: the iBOT loss's token chunks (the loss reports them);
  `prototype_gemms_per_chunk`: the iBOT part's GEMMs (all but the CLS head's four: teacher and student logits, two
  gradients) per chunk;
- `weight_normalisations`: norms taken over a (prototypes × bottleneck) weight (student and teacher, CLS and patch
  heads: 4 weights); `weight_normalisations_per_weight`: the most any one of them gets (1: once per step);
- `host_syncs`: ops that make the host wait for the device (`.item()`, `bool(tensor)`, `nonzero`, data-dependent
  shapes). A real GPU step adds any blocking host→device copy; the trainer's are all `non_blocking`.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import torch
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten
from torch.utils.flop_counter import flop_registry

sys.path.insert(0, str(Path(__file__).resolve().parent))

from tips_hf.modeling.configuration_tips import TipsConfig  # noqa: E402
from tips_hf.pretraining import load_config  # noqa: E402
from tips_hf.pretraining.masking import MaskGenerator  # noqa: E402
from tips_hf.pretraining.meta_arch import TipsPretrainingModel  # noqa: E402
from tips_hf.pretraining.trainer import build_student  # noqa: E402

aten = torch.ops.aten
GEMMS = {aten.mm, aten.addmm, aten.bmm, aten.baddbmm, aten.convolution, aten.convolution_backward,
         aten._scaled_dot_product_flash_attention, aten._scaled_dot_product_efficient_attention,
         aten._scaled_dot_product_cudnn_attention, aten._scaled_dot_product_flash_attention_for_cpu,
         aten._scaled_dot_product_flash_attention_backward, aten._scaled_dot_product_efficient_attention_backward,
         aten._scaled_dot_product_flash_attention_for_cpu_backward}
MATRIX_PRODUCTS = {aten.mm, aten.addmm, aten.bmm, aten.baddbmm}
SYNCS = {aten._local_scalar_dense, aten.is_nonzero, aten.nonzero, aten.equal, aten.masked_select, aten.unique_dim,
         aten._unique2, aten.repeat_interleave}
NO_KERNEL = {aten.empty, aten.empty_like, aten.empty_strided, aten.new_empty, aten.new_empty_strided, aten.detach,
             aten.lift_fresh}


class StepCounter(TorchDispatchMode):
    """Counts what one step dispatches (sits below autograd, above the fake tensors)."""

    def __init__(self, prototypes: int, bottleneck: int, head_prototypes: int, hidden: int):
        super().__init__()
        self.prototypes, self.bottleneck, self.head_prototypes, self.hidden = prototypes, bottleneck, head_prototypes, hidden
        self.ops = Counter()
        self.dispatched = self.kernels = 0
        self.phase = "forward"
        self.syncs: Counter = Counter()
        self.flops = self.flops_fp32 = 0
        self.bytes = 0
        self.prototype_gemms = 0
        self.normalisations: Counter = Counter()

    def _prototype_gemm(self, a: torch.Tensor, b: torch.Tensor) -> bool:
        """(m, k) @ (k, n) is a prototype GEMM when it makes logits (k = d, n = K), the features' gradient
        (k = K, n = d) or the prototypes' gradient (m = K, n = d, k = tokens: not the head's hidden width, which a
        token count equal to K would otherwise confuse with the MLP's weight gradient)."""
        if a.ndim != 2 or b.ndim != 2:
            return False
        (m, k), n = a.shape, b.shape[1]
        K, d = self.prototypes, self.bottleneck
        return (k == d and n == K) or (k == K and n == d) or (m == K and n == d and k != self.hidden)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        packet = func.overloadpacket
        if func.namespace == "prim":  # metadata queries (`prim.device`), not aten ops
            return func(*args, **kwargs)
        self.dispatched += 1
        self.ops[str(packet)] += 1
        tensors = [a for a in tree_flatten((args, kwargs))[0] if isinstance(a, torch.Tensor)]
        if packet in SYNCS:
            self.syncs[self.phase] += 1
            if packet is aten._local_scalar_dense:  # `.item()` / `bool(t)`: a plausible host value, no data
                return True if tensors[0].dtype == torch.bool else 1
        out = func(*args, **kwargs)
        outs = [o for o in tree_flatten(out)[0] if isinstance(o, torch.Tensor)]
        if not (func.is_view or packet in NO_KERNEL):
            self.kernels += 1
            self.bytes += sum(t.numel() * t.element_size() for t in tensors + outs)
        if packet in flop_registry and packet in GEMMS:
            flops = flop_registry[packet](*args, **kwargs, out_val=out)
            self.flops += flops
            if any(t.dtype == torch.float32 for t in tensors[:2]):
                self.flops_fp32 += flops
        operands = tensors[-2:] if packet in (aten.addmm, aten.baddbmm) else tensors[:2]
        if packet in MATRIX_PRODUCTS and self._prototype_gemm(*operands):
            self.prototype_gemms += 1
        if packet is aten.linalg_vector_norm and tensors[0].ndim == 2 and tensors[0].shape[1] == self.bottleneck \
                and tensors[0].shape[0] in (self.prototypes, self.head_prototypes):
            # keyed by the tensor normalised: a weight's norm is taken on the parameter itself (float32)
            self.normalisations[id(tensors[0])] += 1
        return out


def fakeify(module: torch.nn.Module, mode: FakeTensorMode) -> None:
    """Replace every parameter and buffer by a fake tensor of the same shape, dtype and `requires_grad`."""
    for sub in module.modules():
        for name, param in list(sub._parameters.items()):
            if param is not None:
                sub._parameters[name] = torch.nn.Parameter(mode.from_tensor(param.detach()), param.requires_grad)
        for name, buffer in list(sub._buffers.items()):
            if buffer is not None:
                sub._buffers[name] = mode.from_tensor(buffer)


def fake_batch(batch: int, config, vocab: int) -> dict[str, torch.Tensor]:
    data = config.data
    grid = data.global_size // 14
    generator = torch.Generator().manual_seed(0)
    masks = MaskGenerator((grid, grid), config.objective.mask_ratio)
    streams = int(config.objective.use_alt_text) + int(config.objective.use_synthetic)
    out = {
        "global_crop": torch.rand(batch, 3, data.global_size, data.global_size),
        "mask": torch.stack([masks(generator) for _ in range(batch)]),
        "input_ids": torch.randint(2, vocab, (streams * batch, data.max_text_length)),
        "attention_mask": torch.ones(streams * batch, data.max_text_length, dtype=torch.long),
    }
    if data.num_local_crops:
        out["local_crops"] = torch.rand(batch, data.num_local_crops, 3, data.local_size, data.local_size)
    return out


def count(config_path: str | None, batch: int, overrides: list[str]) -> dict:
    config = load_config(config_path, [*overrides, "model.init_from=null", "model.init_heads_from=null"])
    objective, training = config.objective, config.training
    preset = TipsConfig.from_preset(config.model.preset) if config.model.preset else None
    vocab = preset.text_config.vocab_size if preset else config.model.text.get("vocab_size", 32000)
    real_batch = fake_batch(batch, config, vocab)  # real tensors (the mask generator draws real random numbers)
    # Built for real (random initialisers draw numbers), then every parameter and buffer is swapped for a fake one.
    torch.manual_seed(0)
    module = TipsPretrainingModel(build_student(config, vocab), config).train()
    module.freeze_unused()
    if training.gradient_checkpointing:
        try:
            from tips_hf.pretraining.trainer import enable_checkpointing
        except ImportError:  # a package from before selective checkpointing (counting the old step): every block
            def enable_checkpointing(student, every):
                (getattr(student, "activation_checkpointing_enable", None) or student.gradient_checkpointing_enable)()
        enable_checkpointing(module.student, getattr(training, "checkpoint_every", 1))
    with FakeTensorMode(allow_non_fake_inputs=True) as mode:
        fakeify(module, mode)
        # the trainer's optimizer: fused AdamW keeps its step counts on the device (the foreach one reads them with
        # `.item()`, host-side CPU tensors on a GPU, which this CPU count cannot tell apart from device tensors)
        optimizer = torch.optim.AdamW(module.parameter_groups(0.04), lr=1e-4, fused=True)
        data = {k: mode.from_tensor(v) for k, v in real_batch.items()}
        counter = StepCounter(objective.patch_prototypes, objective.head_bottleneck_dim, objective.head_prototypes,
                              objective.head_hidden_dim)
        autocast = training.mixed_precision in ("bf16", "fp16")
        dtype = torch.bfloat16 if training.mixed_precision == "bf16" else torch.float16

        def step(phase: Callable[[str], None]) -> None:
            phase("forward")
            with torch.autocast("cpu", dtype=dtype, enabled=autocast):
                out = module(data, objective.teacher_temperature)
            phase("backward")
            out.loss.backward()
            phase("optimizer")
            if config.optim.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_([p for p in module.parameters() if p.grad is not None],
                                               config.optim.grad_clip, foreach=True)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            phase("teacher_update")
            module.update_teacher(0.996)

        step(lambda name: None)  # the first step creates the optimizer state: count a steady-state one
        with counter:
            step(lambda name: setattr(counter, "phase", name))
    chunks = getattr(getattr(module, "ibot_loss", None), "last_chunks", None)
    same_size = objective.head_prototypes == objective.patch_prototypes and objective.distill_weight > 0
    cls_gemms = 4 if same_size else 0  # teacher and student logits, the student's two gradients
    return {
        "bench": "count_step",
        "config": config_path,
        "batch": batch,
        "global_size": config.data.global_size,
        "local_crops": f"{config.data.num_local_crops}x{config.data.local_size}",
        "prototypes": objective.patch_prototypes,
        "mixed_precision": training.mixed_precision,
        "gradient_checkpointing": training.gradient_checkpointing,
        "overrides": overrides,
        "dispatched_ops": counter.dispatched,
        "kernel_ops": counter.kernels,
        "gflop_total": round(counter.flops / 1e9, 3),
        "gflop_fp32_inputs": round(counter.flops_fp32 / 1e9, 3),
        "flop_fp32_inputs": int(counter.flops_fp32),
        "gb_moved": round(counter.bytes / 1e9, 1),
        "prototype_gemms": counter.prototype_gemms,
        "chunks": chunks,
        "prototype_gemms_per_chunk": round((counter.prototype_gemms - cls_gemms) / chunks, 2) if chunks else None,
        "weight_normalisations": sum(counter.normalisations.values()),
        "weight_normalisations_per_weight": max(counter.normalisations.values(), default=0),
        "host_syncs": sum(counter.syncs.values()),
        "host_syncs_by_phase": dict(counter.syncs),
        "top_ops": dict(counter.ops.most_common(12)),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default="training/configs/b14-v2-hr.yaml")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("overrides", nargs="*", help="section.key=value overrides of the pretraining config")
    args = parser.parse_args(argv)
    print(json.dumps(count(args.config, args.batch_size, args.overrides)), flush=True)


if __name__ == "__main__":
    main()
