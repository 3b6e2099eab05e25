#!/usr/bin/env python
"""Image-encoding throughput of TipsModel vs transformers' native Tipsv2Model, same random weights, same run.

Prints one JSON line per configuration with `img_per_s`, `native_img_per_s`, `ratio` (ours ÷ native), and on GPU
`mfu` (model FLOPs counted by torch.utils.flop_counter ÷ the bf16 matmul peak measured in the same run) and
`peak_mem_gib`.

    python benchmarks/bench_inference.py                      # CPU: tiny and B/14 at 224, batch 4
    python benchmarks/bench_inference.py --configs tips-v2-b14 --resolutions 448 224 --batch-size 128   # GPU
"""

from __future__ import annotations

import sys
from functools import partial
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common as bench  # noqa: E402  (the helpers shared by the benchmarks)


def main(argv: list[str] | None = None) -> None:
    parser = bench.comparison_parser(__doc__.split("\n")[0])
    parser.add_argument("--resolutions", nargs="+", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default=None)
    parser.add_argument("--compile", nargs="?", const="ours", choices=["ours", "both"], default=None,
                        help="torch.compile our vision tower (ours) or both towers (both: the fair comparison)")
    args = parser.parse_args(argv)

    cuda = args.device.startswith("cuda")
    configs = args.configs or (["tips-v2-b14"] if cuda else ["tiny", "tips-v2-b14"])
    resolutions = args.resolutions or ([448, 224] if cuda else [224])
    batch = args.batch_size or (128 if cuda else 4)
    iters = args.iters or (10 if cuda else 3)
    dtype = getattr(torch, args.dtype or ("bfloat16" if cuda else "float32"))
    peak, env = bench.peak_and_environment(args.device, dtype)

    for name in configs:
        config = bench.make_config(name)
        ours, native = bench.model_pair(config, args.device, dtype, args.attn)
        ours_vision = torch.compile(ours.vision_model) if args.compile else ours.vision_model
        native_vision = torch.compile(native.vision_model) if args.compile == "both" else native.vision_model
        for resolution in resolutions:
            pixels = torch.rand(batch, 3, resolution, resolution, device=args.device, dtype=dtype)

            run_ours = partial(encode, ours_vision, pixels)
            run_native = partial(encode, native_vision, pixels)
            flops = bench.count_flops(run_native) / batch
            if cuda:
                torch.cuda.reset_peak_memory_stats()
            seconds = bench.time_interleaved(
                {"ours": run_ours, "native": run_native}, args.device, iters, args.warmup, args.rounds
            )
            record = {
                "bench": "inference",
                "config": name,
                "resolution": resolution,
                "batch": batch,
                "dtype": str(dtype).replace("torch.", ""),
                "attn": args.attn,
                "compile": args.compile,
                "gflop_per_img": round(flops / 1e9, 2),
                # the same model FLOPs for both: ours computes what the native model computes
                **bench.throughput(batch, seconds, {"ours": flops * batch, "native": flops * batch}, peak, cuda),
                **env,
            }
            bench.emit(record)
        del ours, native, ours_vision, native_vision


@torch.inference_mode()
def encode(vision_model, pixels: torch.Tensor) -> torch.Tensor:
    return vision_model(pixel_values=pixels).last_hidden_state


if __name__ == "__main__":
    main()
