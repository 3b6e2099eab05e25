#!/usr/bin/env python
"""Image-encoding throughput on CPU of the vision tower: PyTorch eager, `torch.compile` and the ONNX Runtime export
(`tips-export onnx`), same random weights, same run, interleaved (ABBA) timing.

Prints one JSON line per (config, resolution) with `img_per_s` for each runtime and the ratios to eager.

    python benchmarks/bench_export.py                                  # tiny, 224 and 448, batch 4
    python benchmarks/bench_export.py --configs tips-v2-b14 --resolutions 224 --batch-size 2
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import emit, environment, make_config, time_interleaved  # noqa: E402

from tips_hf import TipsModel  # noqa: E402
from tips_hf.export import export_onnx_files, onnx_runners  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--configs", nargs="+", default=["tiny"], help="tiny and/or preset names")
    parser.add_argument("--resolutions", nargs="+", type=int, default=[224, 448])
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--iters", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for torch and ONNX Runtime")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    env = environment("cpu")
    import onnxruntime

    env["onnxruntime"] = onnxruntime.__version__

    for name in args.configs:
        torch.manual_seed(0)
        model = TipsModel(make_config(name)).eval()
        with tempfile.TemporaryDirectory() as folder:
            start = time.perf_counter()
            export_onnx_files(model, folder)
            export_seconds = time.perf_counter() - start
            run_onnx = onnx_runners(folder, threads=threads)["vision"]
            for resolution in args.resolutions:
                pixels = torch.rand(args.batch_size, 3, resolution, resolution)
                # A fresh compiled module per resolution, static shapes: what a server at one size would run.
                compiled = torch.compile(model.vision_model, dynamic=False)
                start = time.perf_counter()
                encode(compiled, pixels)
                compile_seconds = time.perf_counter() - start
                fns = {
                    "eager": partial(encode, model.vision_model, pixels),
                    "compile": partial(encode, compiled, pixels),
                    "onnxruntime": partial(run_onnx, pixels),
                }
                seconds = time_interleaved(fns, "cpu", args.iters, args.warmup, args.rounds)
                rates = {key: args.batch_size / value for key, value in seconds.items()}
                emit(
                    {
                        "bench": "export",
                        "config": name,
                        "resolution": resolution,
                        "batch": args.batch_size,
                        "eager_img_per_s": round(rates["eager"], 2),
                        "compile_img_per_s": round(rates["compile"], 2),
                        "onnxruntime_img_per_s": round(rates["onnxruntime"], 2),
                        "compile_ratio": round(rates["compile"] / rates["eager"], 3),
                        "onnxruntime_ratio": round(rates["onnxruntime"] / rates["eager"], 3),
                        "compile_seconds": round(compile_seconds, 1),
                        "onnx_export_seconds": round(export_seconds, 1),
                        **env,
                    }
                )


@torch.inference_mode()
def encode(vision_model, pixels: torch.Tensor) -> torch.Tensor:
    return vision_model(pixel_values=pixels).last_hidden_state


if __name__ == "__main__":
    main()
