#!/usr/bin/env python
"""Profile TipsModel image encoding or a full TIPS training step with torch.profiler.

    python benchmarks/profile_step.py --mode inference --configs tiny
    python benchmarks/profile_step.py --mode train --configs tips-v2-b14 --global-size 448 --batch-size 32 \
        --trace outputs/profile/b14_train.json          # Chrome trace (chrome://tracing, perfetto)

Prints the top operators by self time (CUDA time on GPU), and the share of time in matmuls, attention, norms and
element-wise kernels — the first thing to look at before optimising.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
from torch.autograd import DeviceType
from torch.profiler import ProfilerActivity, profile, schedule

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_pretrain import pretrain_module, synthetic_batch  # noqa: E402
from common import default_device, make_config, model_pair  # noqa: E402

CATEGORIES = {
    "matmul": ("mm", "addmm", "bmm", "matmul", "linear", "gemm", "cutlass", "sm90_xmma", "ampere"),
    "attention": ("scaled_dot_product", "flash", "attention", "efficient_attention", "fmha"),
    "norm": ("layer_norm", "native_layer_norm"),
    "convolution": ("conv", "convolution"),
}


def categorise(rows) -> dict[str, float]:
    totals = {name: 0.0 for name in [*CATEGORIES, "other"]}
    for name, time_us in rows:
        lowered = name.lower()
        for category, needles in CATEGORIES.items():
            if any(needle in lowered for needle in needles):
                totals[category] += time_us
                break
        else:
            totals["other"] += time_us
    total = sum(totals.values()) or 1.0
    return {k: round(100 * v / total, 1) for k, v in totals.items()}


def inference_step(model, batch: int, size: int, device, cuda: bool):
    model = model.to(torch.bfloat16 if cuda else torch.float32).eval()
    pixels = torch.rand(batch, 3, size, size, device=device, dtype=next(model.parameters()).dtype)

    def step():
        with torch.inference_mode():
            model.vision_model(pixel_values=pixels)

    return step


def train_step(model, config, batch: int, size: int, local: int, device, cuda: bool, overrides: list[str]):
    crops = 6 if cuda else 2
    module = pretrain_module(model, cuda, "v2", size, local, crops, 32768 if cuda else 1024, overrides)
    optimizer = torch.optim.AdamW([p for p in module.parameters() if p.requires_grad], lr=1e-4)
    data = synthetic_batch(batch, size, local, crops, config.text_config.vocab_size, device, torch.float32)

    def step():
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda):
            loss = module(data, 0.07).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        module.update_teacher(0.996)

    return step


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default=default_device())
    parser.add_argument("--mode", choices=["inference", "train"], default="train")
    parser.add_argument("--configs", nargs="+", default=["tiny"])
    parser.add_argument("--global-size", type=int, default=None)
    parser.add_argument("--local-size", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--trace", default=None, help="write a Chrome trace here")
    parser.add_argument("--rows", type=int, default=25)
    parser.add_argument("overrides", nargs="*", help="section.key=value for the pretraining config (train mode)")
    args = parser.parse_args(argv)
    cuda = args.device.startswith("cuda")
    size = args.global_size or (448 if cuda else 112)
    local = args.local_size or (140 if cuda else 56)
    batch = args.batch_size or (32 if cuda else 8)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    for name in args.configs:
        config = make_config(name)
        ours, _ = model_pair(config, args.device, torch.float32)
        if args.mode == "inference":
            step = inference_step(ours, batch, size, args.device, cuda)
        else:
            step = train_step(ours, config, batch, size, local, args.device, cuda, args.overrides)
        seconds = []
        with profile(activities=activities, schedule=schedule(wait=1, warmup=1, active=2)) as prof:
            for _ in range(4):
                start = time.perf_counter()
                step()
                if cuda:
                    torch.cuda.synchronize()
                seconds.append(time.perf_counter() - start)
                prof.step()
        key = "self_cuda_time_total" if cuda else "self_cpu_time_total"
        print(f"== {name} {args.mode} batch {batch} at {size} px on {args.device}")
        print(prof.key_averages().table(sort_by=key, row_limit=args.rows, max_name_column_width=60))
        attribute = "self_device_time_total" if cuda else "self_cpu_time_total"
        rows = [(e.key, getattr(e, attribute)) for e in prof.key_averages() if not e.key.startswith("ProfilerStep")]
        shares = categorise(rows)
        print("time share by kind (%):", shares)
        # Busy device time against wall time per step: far apart means the step waits on Python / kernel launches,
        # which more work per kernel (larger batches, chunks, fused ops, CUDA graphs) would hide.
        device = DeviceType.CUDA if cuda else DeviceType.CPU
        launched = sum(1 for e in prof.events() if e.device_type == device and (cuda or e.name.startswith("aten::")))
        print(json.dumps({
            "bench": "profile", "config": name, "mode": args.mode, "batch": batch, "global_size": size,
            "overrides": args.overrides, "wall_ms_per_step": round(1000 * sum(seconds[2:]) / 2, 1),
            "busy_ms_per_step": round(sum(t for _, t in rows) / 1000 / 2, 1) if cuda else None,
            ("kernels_per_step" if cuda else "aten_ops_per_step"): launched // 2, "time_share_pct": shares,
        }), flush=True)
        if args.trace:
            Path(args.trace).parent.mkdir(parents=True, exist_ok=True)
            prof.export_chrome_trace(args.trace)
            print(f"trace: {args.trace}")


if __name__ == "__main__":
    main()
