#!/usr/bin/env python
"""Peak memory of the converters on a g/14-sized checkpoint, relative to the checkpoint's size.

Writes a random official-layout checkpoint pair of the chosen preset (streamed to disk, array by array), then runs,
each in its own child process, `tips-convert official`, `tips-convert to-transformers` on the result and
`tips-publish --dry-run` on it, and reports each one's peak resident memory (ru_maxrss) as a JSON line. The peak
includes the interpreter with torch and transformers imported (about 0.9 GiB), reported as `baseline_rss_gib`.

    python benchmarks/bench_conversion_memory.py --preset tips-v2-g14 --workdir /tmp/tips-mem
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import torch

from tips_hf import TipsConfig, TipsModel
from tips_hf.conversion.layouts import OFFICIAL, arch_from_config, context_from_config, expand_rules


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


def run_measured(args: list[str]) -> tuple[float, int]:
    """Run `python ARGS` in a child; (wall seconds, that child's peak RSS in bytes)."""
    start = time.perf_counter()
    process = subprocess.Popen([sys.executable, *args], stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode:
        raise SystemExit(f"python {' '.join(args)} failed with exit status {process.returncode}")
    return time.perf_counter() - start, usage.ru_maxrss * 1024  # Linux reports KiB


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="tips-v2-g14")
    parser.add_argument("--workdir", default="/tmp/tips-conversion-memory")
    parser.add_argument("--max-shard-size", default="2GB")
    parser.add_argument("--keep", action="store_true", help="keep the generated files")
    parser.add_argument("--steps", nargs="*", help="only these of: official to-transformers publish-dry-run")
    args = parser.parse_args()
    work = Path(args.workdir)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    config = TipsConfig.from_preset(args.preset)
    shapes = official_shapes(config)
    start = time.perf_counter()
    size = sum(write_npz(work / f"{tower}.npz", shapes[tower], seed=i) for i, tower in enumerate(("vision", "text")))
    generate_s = time.perf_counter() - start
    npz = ["--vision", str(work / "vision.npz"), "--text", str(work / "text.npz"), "--preset", args.preset]
    shard = ["--max-shard-size", args.max_shard_size]
    steps = {
        "official": [
            "-m",
            "tips_hf.conversion.cli",
            "official",
            *npz,
            "--output",
            str(work / "converted"),
            *shard,
            "--no-progress",
        ],
        "to-transformers": [
            "-m",
            "tips_hf.conversion.cli",
            "to-transformers",
            "--model",
            str(work / "converted"),
            "--output",
            str(work / "native"),
            *shard,
            "--no-progress",
        ],
        "publish-dry-run": [
            "-m",
            "tips_hf.hub",
            "--model",
            str(work / "converted"),
            "--repo-id",
            "org/bench",
            "--dry-run",
            "--output",
            str(work / "published"),
            *shard,
        ],
    }
    _, baseline = run_measured(["-c", "import torch, transformers, tips_hf"])
    for step, command in steps.items():
        if args.steps and step not in args.steps:
            continue
        seconds, peak = run_measured(command)
        record = {
            "bench": "conversion_memory",
            "step": step,
            "preset": args.preset,
            "checkpoint_gib": round(size / 2**30, 2),
            "peak_rss_gib": round(peak / 2**30, 2),
            "ratio": round(peak / size, 3),
            "baseline_rss_gib": round(baseline / 2**30, 2),
            "max_shard_size": args.max_shard_size,
            "generate_s": round(generate_s, 1),
            "seconds": round(seconds, 1),
        }
        print(json.dumps(record), flush=True)
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
