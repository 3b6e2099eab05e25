#!/usr/bin/env python
"""Peak memory of `tips-convert official` on a g/14-sized checkpoint, relative to the checkpoint's size.

Writes a random official-layout checkpoint pair of the chosen preset (streamed to disk, array by array), runs the
converter in a child process and reports its peak resident memory (ru_maxrss) as a JSON line.

    python benchmarks/bench_conversion_memory.py --preset tips-v2-g14 --workdir /tmp/tips-mem
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import torch

from tips_hf import TipsConfig, TipsModel
from tips_hf.layouts_tips import OFFICIAL, arch_from_config, context_from_config, expand_rules


def official_shapes(config: TipsConfig) -> dict[str, dict[str, tuple[int, ...]]]:
    """Foreign (official) key → shape, per file, derived from the layout table and a meta model."""
    with torch.device("meta"):
        state = TipsModel(config).state_dict()
    arch, ctx = arch_from_config(config), context_from_config(config)
    files: dict[str, dict[str, tuple[int, ...]]] = {"vision": {}, "text": {}}
    for tower in files:
        for ours, theirs, rule in expand_rules(OFFICIAL, arch, towers=(tower,)):
            tensors = [state[k] for k in ours]
            outputs = rule.to_theirs(tensors, ctx) if rule.to_theirs else tensors
            for key, tensor in zip(theirs, outputs):
                files[tower][key] = tuple(tensor.shape)
    return files


def write_npz(path: Path, shapes: dict[str, tuple[int, ...]], seed: int) -> int:
    """Random float32 arrays, one at a time, into an uncompressed .npz (zip64). Returns bytes written."""
    rng = np.random.default_rng(seed)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as archive:
        for key, shape in shapes.items():
            if key == "temperature":
                array = np.asarray(0.004, dtype=np.float32)
            else:
                array = (rng.standard_normal(shape, dtype=np.float32) * 0.02).astype(np.float32)
            with archive.open(f"{key}.npy", "w", force_zip64=True) as handle:
                np.lib.format.write_array(handle, array, allow_pickle=False)
            del array
    return path.stat().st_size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="tips-v2-g14")
    parser.add_argument("--workdir", default="/tmp/tips-conversion-memory")
    parser.add_argument("--max-shard-size", default="2GB")
    parser.add_argument("--keep", action="store_true", help="keep the generated files")
    args = parser.parse_args()
    work = Path(args.workdir)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    config = TipsConfig.from_preset(args.preset)
    shapes = official_shapes(config)
    start = time.perf_counter()
    size = sum(write_npz(work / f"{tower}.npz", shapes[tower], seed=i) for i, tower in enumerate(("vision", "text")))
    generate_s = time.perf_counter() - start
    command = [
        sys.executable,
        "-m",
        "tips_hf.conversion.cli",
        "official",
        "--vision",
        str(work / "vision.npz"),
        "--text",
        str(work / "text.npz"),
        "--preset",
        args.preset,
        "--output",
        str(work / "converted"),
        "--max-shard-size",
        args.max_shard_size,
        "--no-progress",
    ]
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    convert_s = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024  # Linux reports KiB
    record = {
        "bench": "conversion_memory",
        "preset": args.preset,
        "checkpoint_gib": round(size / 2**30, 2),
        "peak_rss_gib": round(peak / 2**30, 2),
        "ratio": round(peak / size, 3),
        "max_shard_size": args.max_shard_size,
        "generate_s": round(generate_s, 1),
        "convert_s": round(convert_s, 1),
    }
    print(json.dumps(record))
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
