#!/usr/bin/env python
"""Data-loading throughput per DataLoader worker: JPEG decode + multi-crop augmentation + mask + caption choice of
the pretraining dataset (`PretrainingDataset.__getitem__`, what every worker runs), in one process, on this CPU.

The images are synthetic JPEGs (default 640×480, quality 90, smooth content with texture, ~60–100 KB like web
photos), held in memory, so the figure excludes disk/network reads. Recipes: the B/14 low-resolution stage (1 global
224 + 6 local 98 crops) and the high-resolution stage (448 + 6 × 140). Prints one JSON line per recipe with
`img_per_s_per_worker` (images per CPU second of the worker, i.e. on a dedicated core; `wall_img_per_s` is the
wall-clock rate of this run); divide the images/s a GPU consumes by it to size `data.num_workers`.

Resume cost of a streamed source (`data.stream_resume`), one JSON line per shuffle buffer: a local multi-file parquet
stream of small records (default 20k rows in 12 files, written to a temporary folder) resumed at row 15k. `exact`
re-reads the 15k rows and drops them (`exact_skip_rows_per_s`: rows skipped per second); `fast` loads the datasets
state saved there (`fast_resume_s`: seconds to the first resumed sample, against `fresh_start_s` for a stream that
starts at row 0). With a shuffle buffer, `fast_rows_lost` / `fast_rows_repeated` count the rows of the pass that the
fast resume does not read / reads a second time.

    python benchmarks/bench_data.py [--images 64] [--rounds 3] [--image-size 640 480] [--only throughput|resume]
        [--resume-rows 20000] [--resume-files 12] [--resume-at 15000] [--resume-buffers 0 1000]
"""

from __future__ import annotations

import argparse
import io
import itertools
import statistics
import sys
import tempfile
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


def resume_cost(rows: int, files: int, resume_at: int, buffers: list[int], rounds: int) -> None:
    """Seconds to the first sample of a stream resumed at row `resume_at` in each data.stream_resume mode."""
    import datasets

    from tips_hf.pretraining.data import StreamingPretrainingDataset, _rows, load_source

    with tempfile.TemporaryDirectory() as folder:
        png = io.BytesIO()
        Image.fromarray(np.full((8, 8, 3), 128, np.uint8)).save(png, format="PNG")
        table = datasets.Dataset.from_dict({
            "image": [{"bytes": png.getvalue(), "path": None}] * rows,
            "alt_text": [f"image {i}" for i in range(rows)],
            "synthetic_caption": [[f"a synthetic caption {i}"] for i in range(rows)],
        }, features=datasets.Features({"image": datasets.Image(), "alt_text": datasets.Value("string"),
                                       "synthetic_caption": datasets.Sequence(datasets.Value("string"))}))
        for f in range(files):
            table.shard(files, f, contiguous=True).to_parquet(f"{folder}/part-{f:03d}.parquet")
        config = load_config(None, ["data.source=parquet", f"data.path={folder}/part-*.parquet", "data.streaming=true",
                                    "data.global_size=56", "data.local_size=28", "data.num_local_crops=1"])
        source = load_source(config.data)
        for buffer in buffers:
            def stream(resume="exact", position=None, state=None, buffer=buffer):
                return StreamingPretrainingDataset(source, config.data, config.objective, shuffle_buffer=buffer,
                                                   resume=resume, start_positions=position and [position],
                                                   start_states=state and [state])

            # the datasets state after `resume_at` rows: the same reads as the stream's own first pass
            reader, _, _ = stream().slot_stream(0, 1)
            reader.set_epoch(0)
            start = time.perf_counter()
            rows_iter = _rows(reader)
            head = [row["alt_text"] for row in itertools.islice(rows_iter, resume_at)]
            read_s = time.perf_counter() - start
            state = reader.state_dict()
            rows_iter.close()
            position = [0, resume_at, resume_at]
            times = {}
            for mode, args in (("fresh", ()), ("exact", ("exact", position)), ("fast", ("fast", position, state))):
                samples = []
                for _ in range(rounds):
                    iterator = iter(stream(*args))
                    start = time.perf_counter()
                    next(iterator)
                    samples.append(time.perf_counter() - start)
                    iterator.close()  # outside the timing (datasets >= 5 sleeps when a shuffled stream's readers stop)
                times[mode] = statistics.median(samples)
            record = {
                "bench": "data_resume", "rows": rows, "files": files, "resume_at_row": resume_at,
                "shuffle_buffer": buffer, "datasets": datasets.__version__,
                "read_rows_per_s": round(resume_at / read_s),
                "fresh_start_s": round(times["fresh"], 4),
                "exact_resume_s": round(times["exact"], 3),
                "exact_skip_rows_per_s": round(resume_at / max(times["exact"] - times["fresh"], 1e-9)),
                "fast_resume_s": round(times["fast"], 4),
                "fast_vs_exact_speedup": round(times["exact"] / times["fast"], 1),
            }
            restored, _, _ = stream().slot_stream(0, 1)
            restored.set_epoch(0)
            restored.load_state_dict(state)
            tail = [row["alt_text"] for row in _rows(restored)]
            record["fast_rows_lost"] = rows - len(set(head) | set(tail))
            record["fast_rows_repeated"] = len(set(head) & set(tail))
            emit({**record, **environment("cpu")})


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--image-size", type=int, nargs=2, default=(640, 480))
    parser.add_argument("--recipes", nargs="+", default=list(RECIPES), choices=list(RECIPES))
    parser.add_argument("--only", choices=["throughput", "resume"], default=None)
    parser.add_argument("--resume-rows", type=int, default=20_000)
    parser.add_argument("--resume-files", type=int, default=12)
    parser.add_argument("--resume-at", type=int, default=15_000)
    parser.add_argument("--resume-buffers", type=int, nargs="+", default=[0, 1000])
    args = parser.parse_args(argv)
    torch.set_num_threads(1)  # a DataLoader worker runs single-threaded
    if args.only != "throughput":
        resume_cost(args.resume_rows, args.resume_files, args.resume_at, args.resume_buffers, args.rounds)
    if args.only == "resume":
        return
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
