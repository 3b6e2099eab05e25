#!/usr/bin/env python
"""Captioning throughput of `tips-caption`: captions/s of the generate() loop per batch size, and images/s of a whole
`caption_dataset` run (decode, generate, parquet shards) on an image folder.

Prints one JSON line per measurement. Without --model it builds the tiny random BLIP of the tests
(tips_hf.captioning.tiny), which never emits its end token, so every caption is exactly --max-new-tokens long: the
numbers measure the machinery at a fixed decode length, not a real captioner.

    python benchmarks/bench_caption.py                                  # CPU: tiny BLIP, batch 1..32
    python benchmarks/bench_caption.py --model PATH/paligemma2-3b-mix-224 --device cuda --dtype bfloat16 \\
        --batch-sizes 8 32 128 --images 512 --preset short                # GPU, a real captioner folder
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import default_device, emit, environment  # noqa: E402

from tips_hf.captioning import Captioner, caption_dataset, preset_task  # noqa: E402
from tips_hf.captioning.tiny import tiny_blip  # noqa: E402

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def images(count: int, size: int = 224) -> list[Image.Image]:
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)) for _ in range(count)]


def generate_throughput(captioner: Captioner, pictures: list[Image.Image], batch_size: int, task) -> dict:
    """captions/s of Captioner.caption over `pictures` in batches (one warm-up batch first)."""
    captioner.caption(pictures[:batch_size], task)
    if captioner.device.type == "cuda":
        torch.cuda.synchronize()
    start, cpu_start = time.perf_counter(), time.process_time()
    captions = []
    for i in range(0, len(pictures), batch_size):
        captions += captioner.caption(pictures[i : i + batch_size], task)
    if captioner.device.type == "cuda":
        torch.cuda.synchronize()
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    tokenizer = getattr(captioner.processor, "tokenizer", None)
    lengths = [len(tokenizer(c, add_special_tokens=False)["input_ids"]) for c in captions] if tokenizer else []
    return {
        "batch_size": batch_size,
        "captions": len(captions),
        "captions_per_s": round(len(captions) / elapsed, 2),
        "s_per_batch": round(elapsed / -(-len(pictures) // batch_size), 4),
        # CPU seconds of this process: on a shared, oversubscribed machine a steadier cost than wall time
        "captions_per_cpu_s": round(len(captions) / cpu, 2),
        "mean_caption_tokens": round(float(np.mean(lengths)), 1) if lengths else None,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=None, help="a captioner folder; default: the tiny random BLIP")
    parser.add_argument("--device", default=default_device())
    parser.add_argument("--dtype", choices=tuple(DTYPES), default=None, help="default: bfloat16 on CUDA, else float32")
    parser.add_argument("--batch-sizes", nargs="+", type=int, default=[1, 4, 16, 32])
    parser.add_argument("--images", type=int, default=64, help="images per measurement")
    parser.add_argument("--image-size", type=int, default=224, help="side of the random input images")
    parser.add_argument("--preset", default="short", choices=("short", "detailed"))
    parser.add_argument("--max-new-tokens", type=int, default=20)
    parser.add_argument("--no-end-to-end", action="store_true", help="skip the caption_dataset run")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as scratch:
        model = args.model or tiny_blip(Path(scratch) / "tiny-blip")
        dtype = DTYPES[args.dtype] if args.dtype else None
        captioner = Captioner(model, args.device, dtype)
        task = preset_task(captioner.family, args.preset, "caption", args.max_new_tokens)
        pictures = images(args.images, args.image_size)
        base = {"bench": "caption", "model": args.model or "tiny-random-blip", "preset": args.preset,
                "max_new_tokens": args.max_new_tokens, "image_size": args.image_size, **environment(args.device),
                # a shared machine's load skews CPU timings; it is recorded with them
                "load_average_1min": round(os.getloadavg()[0], 1)}
        for batch_size in args.batch_sizes:
            emit({**base, "mode": "generate", **generate_throughput(captioner, pictures, batch_size, task)})
        if not args.no_end_to_end:
            folder = Path(scratch) / "images"
            folder.mkdir()
            for i, picture in enumerate(pictures):
                picture.save(folder / f"{i:05d}.png")
            batch_size = max(args.batch_sizes)
            start, cpu_start = time.perf_counter(), time.process_time()
            result = caption_dataset(captioner, str(folder), Path(scratch) / "out", presets=[args.preset],
                                     max_new_tokens=args.max_new_tokens, batch_size=batch_size,
                                     shard_size=max(batch_size, args.images // 4), progress=False)
            elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu_start
            emit({**base, "mode": "caption_dataset", "batch_size": batch_size, "images": result.captioned,
                  "shards": result.shards, "images_per_s": round(result.captioned / elapsed, 2),
                  "images_per_cpu_s": round(result.captioned / cpu, 2)})


if __name__ == "__main__":
    main()
