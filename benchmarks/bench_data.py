#!/usr/bin/env python
"""Data-loading throughput per DataLoader worker: JPEG decode + multi-crop augmentation + mask + caption choice of
the pretraining dataset (`PretrainingDataset.__getitem__`, what every worker runs), in one process, on this CPU.

The images are synthetic JPEGs (default 640×480, quality 90, smooth content with texture, ~60–100 KB like web
photos), held in memory, so the figure excludes disk/network reads. Recipes: the B/14 low-resolution stage (1 global
224 + 6 local 98 crops) and the high-resolution stage (448 + 6 × 140). Prints one JSON line per recipe with
`img_per_s_per_worker` (images per CPU second of the worker, i.e. on a dedicated core; `wall_img_per_s` is the
wall-clock rate of this run); divide the images/s a GPU consumes by it to size `data.num_workers`.

    python benchmarks/bench_data.py [--images 64] [--rounds 3] [--image-size 640 480]
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import emit, environment  # noqa: E402

from tips_hf.pretraining import load_config  # noqa: E402
from tips_hf.pretraining.data import PretrainingDataset  # noqa: E402

RECIPES = {
    "b14-224+6x98": ["data.global_size=224", "data.local_size=98", "data.num_local_crops=6"],
    "b14-448+6x140": ["data.global_size=448", "data.local_size=140", "data.num_local_crops=6"],
}


def synthetic_jpegs(count: int, width: int, height: int, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    rows = []
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    for i in range(count):
        phase = rng.uniform(0, 6.28, 3)
        base = np.stack([127 + 100 * np.sin(x / (40 + 10 * c) + y / 70 + phase[c]) for c in range(3)], axis=-1)
        image = np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, format="JPEG", quality=90)
        rows.append({"image": {"bytes": buffer.getvalue(), "path": None}, "alt_text": f"image {i}",
                     "synthetic_caption": [f"a synthetic caption {i}", f"another caption {i}"]})
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--image-size", type=int, nargs=2, default=(640, 480))
    parser.add_argument("--recipes", nargs="+", default=list(RECIPES), choices=list(RECIPES))
    args = parser.parse_args(argv)
    torch.set_num_threads(1)  # a DataLoader worker runs single-threaded
    rows = synthetic_jpegs(args.images, *args.image_size)
    kb = statistics.mean(len(r["image"]["bytes"]) for r in rows) / 1024
    for name in args.recipes:
        config = load_config(None, RECIPES[name])
        dataset = PretrainingDataset(rows, config.data, config.objective, seed=0)
        dataset[(0, 0)]  # warm-up
        times, cpu_times = [], []
        for round_ in range(args.rounds):
            start, cpu_start = time.perf_counter(), time.process_time()
            for index in range(len(rows)):
                dataset[(round_, index)]
            times.append(time.perf_counter() - start)
            cpu_times.append(time.process_time() - cpu_start)
        seconds, cpu_seconds = statistics.median(times), statistics.median(cpu_times)
        emit({
            "bench": "data",
            "recipe": name,
            "image_size": list(args.image_size),
            "jpeg_kib": round(kb, 1),
            # per CPU second: what one worker on a dedicated core delivers (robust to a shared machine)
            "img_per_s_per_worker": round(len(rows) / cpu_seconds, 1),
            "cpu_ms_per_img": round(1000 * cpu_seconds / len(rows), 2),
            "wall_img_per_s": round(len(rows) / seconds, 1),
            **environment("cpu"),
        })


if __name__ == "__main__":
    main()
