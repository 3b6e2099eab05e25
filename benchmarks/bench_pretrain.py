#!/usr/bin/env python
"""Throughput and MFU of one full TIPS pretraining step vs a CLIP-only step of transformers' native Tipsv2Model.

Ours: student on the un-masked and the 75%-masked global crop (one batched forward) and on M local crops, teacher
targets, both captions through the text tower once, contrastive + DINO + iBOT losses, backward, AdamW, EMA.
Native: `Tipsv2Model(pixel_values, input_ids, return_loss=True)` (one caption, no local crops), backward, AdamW.
Same random weights for the shared towers, same batch and resolution, synthetic inputs (no data loading), in one run.
FLOPs are counted with torch.utils.flop_counter over everything each step computes; MFU uses the bf16 matmul peak
measured in the same run (GPU only). Prints one JSON line per configuration.

    python benchmarks/bench_pretrain.py                                   # CPU: tiny model, 112 + 2×56 px, batch 16
    python benchmarks/bench_pretrain.py --configs tips-v2-b14 --global-size 448 --local-size 140 --batch-size 32
    python benchmarks/bench_pretrain.py ... objective.loss_chunk_tokens=4096        # any pretraining-config override
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common as bench  # noqa: E402  (the helpers shared by the benchmarks)

from tips_hf.pretraining import load_config  # noqa: E402
from tips_hf.pretraining.masking import MaskGenerator  # noqa: E402
from tips_hf.pretraining.meta_arch import TipsPretrainingModel  # noqa: E402


def synthetic_batch(batch: int, global_size: int, local_size: int, crops: int, vocab: int, device, dtype):
    grid = global_size // 14
    masks = MaskGenerator((grid, grid), 0.75)
    generator = torch.Generator().manual_seed(0)
    out = {
        "global_crop": torch.rand(batch, 3, global_size, global_size, device=device, dtype=dtype),
        "mask": torch.stack([masks(generator) for _ in range(batch)]).to(device),
        "input_ids": torch.randint(2, vocab, (2 * batch, 64), device=device),
        "attention_mask": torch.ones(2 * batch, 64, dtype=torch.long, device=device),
    }
    if crops:
        out["local_crops"] = torch.rand(batch, crops, 3, local_size, local_size, device=device, dtype=dtype)
    return out


def pretrain_module(model, cuda: bool, recipe: str, global_size: int, local_size: int, crops: int, prototypes: int,
                    overrides: list[str] = ()) -> TipsPretrainingModel:
    """The pretraining module around `model` with the B/14 recipe's heads on GPU (smaller on CPU), in train mode."""
    pretrain = load_config(None, [
        f"objective.recipe={recipe}", f"objective.head_prototypes={prototypes}",
        f"objective.patch_prototypes={prototypes}", f"data.global_size={global_size}",
        f"data.local_size={local_size}", f"data.num_local_crops={crops}",
        f"objective.head_hidden_dim={2048 if cuda else 512}", f"objective.head_bottleneck_dim={256 if cuda else 128}",
        *overrides,
    ])
    module = TipsPretrainingModel(model, pretrain).to(next(model.parameters()).device).train()
    module.freeze_unused()
    return module


def make_steps(module, native, ours_opt, native_opt, data, native_ids, cuda: bool):
    """One optimizer step of each model (closures over this configuration's objects)."""

    def autocast():
        return torch.autocast("cuda", dtype=torch.bfloat16) if cuda else torch.autocast("cpu", enabled=False)

    def ours_step():
        with autocast():
            loss = module(data, 0.07).loss
        loss.backward()
        ours_opt.step()
        ours_opt.zero_grad(set_to_none=True)
        module.update_teacher(0.996)

    def native_step():
        with autocast():
            loss = native(pixel_values=data["global_crop"], input_ids=native_ids, return_loss=True).loss
        loss.backward()
        native_opt.step()
        native_opt.zero_grad(set_to_none=True)

    return ours_step, native_step


def main(argv: list[str] | None = None) -> None:
    parser = bench.comparison_parser(__doc__.split("\n")[0])
    parser.add_argument("--recipe", default="v2", choices=["v1", "v2"])
    parser.add_argument("--global-size", type=int, default=None)
    parser.add_argument("--local-size", type=int, default=None)
    parser.add_argument("--local-crops", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--prototypes", type=int, default=None)
    parser.add_argument("--gradient-checkpointing", action="store_true")
    parser.add_argument("--compile", action="store_true",
                        help="torch.compile both: our student's transformer blocks (training.compile_scope=blocks) and "
                        "the native model")
    parser.add_argument("overrides", nargs="*", help="section.key=value for the pretraining config, e.g. "
                        "objective.loss_chunk_tokens=4096")
    args = parser.parse_args(argv)

    cuda = args.device.startswith("cuda")
    configs = args.configs or (["tips-v2-b14"] if cuda else ["tiny"])
    global_size = args.global_size or (448 if cuda else 112)
    local_size = args.local_size or (140 if cuda else 56)
    crops = args.local_crops if args.local_crops is not None else (6 if cuda else 2)
    batch = args.batch_size or (32 if cuda else 16)
    prototypes = args.prototypes or (32768 if cuda else 1024)
    iters = args.iters or (5 if cuda else 2)
    peak, env = bench.peak_and_environment(args.device, torch.bfloat16)

    for name in configs:
        tips_config = bench.make_config(name)
        tips_config.vision_config.image_size = global_size if name == "tiny" else tips_config.vision_config.image_size
        ours, native = bench.model_pair(tips_config, args.device, torch.float32, args.attn)
        module = pretrain_module(ours, cuda, args.recipe, global_size, local_size, crops, prototypes, args.overrides)
        native.train()
        if args.gradient_checkpointing:
            ours.gradient_checkpointing_enable()
            native.gradient_checkpointing_enable()
        if args.compile:
            from tips_hf.pretraining.trainer import compile_student

            compile_student(ours, "blocks")
            native.compile()
        ours_opt = torch.optim.AdamW([p for p in module.parameters() if p.requires_grad], lr=1e-4, fused=cuda or None)
        native_opt = torch.optim.AdamW(native.parameters(), lr=1e-4, fused=cuda or None)
        data = synthetic_batch(batch, global_size, local_size, crops, tips_config.text_config.vocab_size, args.device,
                               torch.float32)
        native_ids = data["input_ids"][:batch]

        ours_step, native_step = make_steps(module, native, ours_opt, native_opt, data, native_ids, cuda)
        ours_flops, native_flops = bench.count_flops(ours_step), bench.count_flops(native_step)
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        seconds = bench.time_interleaved({"ours": ours_step, "native": native_step}, args.device, iters, args.warmup,
                                   args.rounds)
        record = {
            "bench": "pretrain_step",
            "config": name,
            "recipe": args.recipe,
            "global_size": global_size,
            "local_size": local_size,
            "local_crops": crops,
            "prototypes": prototypes,
            "batch": batch,
            "dtype": "bfloat16-autocast" if cuda else "float32",
            "gradient_checkpointing": args.gradient_checkpointing,
            "compile": args.compile,
            "overrides": args.overrides,
            "gflop_per_img": round(ours_flops / batch / 1e9, 2),
            "native_gflop_per_img": round(native_flops / batch / 1e9, 2),
            **bench.throughput(batch, seconds, {"ours": ours_flops, "native": native_flops}, peak, cuda),
            **env,
        }
        bench.emit(record)


if __name__ == "__main__":
    main()
