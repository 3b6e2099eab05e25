"""Shared helpers for the benchmarks: same-weights model pairs, interleaved timing, FLOP counting, MFU."""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable

# Benchmark another copy of the package (gpu_check.sh measures the step before a change this way):
# TIPS_HF_ROOT=<a folder holding tips_hf/> puts it first, ahead of an editable install's import hook.
if os.environ.get("TIPS_HF_ROOT"):
    sys.path.insert(0, os.environ["TIPS_HF_ROOT"])
    sys.meta_path[:] = [finder for finder in sys.meta_path if "editable" not in repr(finder).lower()]

import torch  # noqa: E402
import transformers
from torch.utils.flop_counter import FlopCounterMode

import tips_hf
from tips_hf import TipsConfig, TipsModel
from tips_hf.conversion.native import config_to_native, native_module_state

TINY = dict(
    vision_config=dict(
        hidden_size=192, num_hidden_layers=4, num_attention_heads=3, intermediate_size=768, image_size=224
    ),
    text_config=dict(
        hidden_size=192, num_hidden_layers=4, num_attention_heads=3, intermediate_size=768, vocab_size=1000
    ),
)


def make_config(name: str) -> TipsConfig:
    """`tiny` (a 4-layer, width-192 model) or a preset name (e.g. `tips-v2-b14`)."""
    return TipsConfig(**TINY) if name == "tiny" else TipsConfig.from_preset(name)


def model_pair(config: TipsConfig, device: str, dtype: torch.dtype, attn: str = "sdpa", seed: int = 0):
    """A random TipsModel and transformers' native Tipsv2Model holding the very same weights."""
    torch.manual_seed(seed)
    ours = TipsModel(config).eval()
    native_cls = transformers.Tipsv2Model
    native = native_cls(transformers.Tipsv2Config(**config_to_native(config))).eval()
    native.load_state_dict(native_module_state(native, config, ours.state_dict().__getitem__), strict=True)
    ours.set_attn_implementation(attn)
    native.set_attn_implementation(attn)
    return ours.to(device, dtype), native.to(device, dtype)


def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def time_interleaved(fns: dict[str, Callable[[], object]], device: str, iters: int, warmup: int, rounds: int = 3):
    """Median seconds per call of each function, measured in rounds of alternating order so that drift and the
    position within a round hit every function alike."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    synchronize(device)
    samples: dict[str, list[float]] = {name: [] for name in fns}
    order = list(fns.items())
    for round_index in range(rounds):
        # ABBA: alternate the order each round, so that being measured first or last favours nobody
        for name, fn in order if round_index % 2 == 0 else order[::-1]:
            synchronize(device)
            start = time.perf_counter()
            for _ in range(iters):
                fn()
            synchronize(device)
            samples[name].append((time.perf_counter() - start) / iters)
    return {name: statistics.median(values) for name, values in samples.items()}


def count_flops(fn: Callable[[], object]) -> float:
    """FLOPs of one call, counted by torch.utils.flop_counter (matmuls, convolutions, attention)."""
    with FlopCounterMode(display=False) as counter:
        fn()
    return float(counter.get_total_flops())


def peak_matmul_flops(device: str, dtype: torch.dtype, n: int = 8192, iters: int = 20) -> float | None:
    """Measured dense-matmul FLOP/s in this run (the MFU denominator); None on CPU."""
    if not device.startswith("cuda"):
        return None
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    synchronize(device)
    start = time.perf_counter()
    for _ in range(iters):
        a @ b
    synchronize(device)
    return 2 * n**3 * iters / (time.perf_counter() - start)


def environment(device: str) -> dict:
    info = {
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "tips_hf": tips_hf.__version__,
        "tips_hf_from": os.path.relpath(os.path.dirname(tips_hf.__file__)),
        "python": platform.python_version(),
        "device": device,
        "threads": torch.get_num_threads(),
    }
    if device.startswith("cuda"):
        info["gpu"] = torch.cuda.get_device_name()
    else:
        info["cpu"] = platform.processor() or platform.machine()
    return info


def emit(record: dict) -> None:
    print(json.dumps(record, sort_keys=False), flush=True)


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def comparison_parser(description: str) -> argparse.ArgumentParser:
    """The options of every ours-vs-native benchmark: device, model configs, attention and the interleaved timing."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--device", default=default_device())
    parser.add_argument("--configs", nargs="+", default=None, help="tiny and/or preset names")
    parser.add_argument("--attn", default="sdpa", help="attention implementation for both models")
    parser.add_argument("--iters", type=int, default=None)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    return parser


def peak_and_environment(device: str, dtype: torch.dtype) -> tuple[float | None, dict]:
    """The measured matmul peak (GPU only, else None) and the environment fields of every record (with the peak)."""
    peak = peak_matmul_flops(device, dtype)
    env = environment(device)
    if peak:
        env["peak_matmul_tflops"] = round(peak / 1e12, 1)
    return peak, env


def throughput(batch: int, seconds: dict[str, float], flops: dict[str, float], peak: float | None, cuda: bool) -> dict:
    """Images per second of `ours` and `native` (one step of `batch` images took `seconds[...]` and `flops[...]`), their
    ratio, MFU against `peak` and the peak GPU memory."""
    return {
        "img_per_s": round(batch / seconds["ours"], 2),
        "native_img_per_s": round(batch / seconds["native"], 2),
        "ratio": round(seconds["native"] / seconds["ours"], 3),
        "mfu": round(flops["ours"] / seconds["ours"] / peak, 3) if peak else None,
        "native_mfu": round(flops["native"] / seconds["native"] / peak, 3) if peak else None,
        "peak_mem_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if cuda else None,
    }
