#!/usr/bin/env python
"""Numerical parity on a GPU: the official fixtures reproduced on CUDA in float32, bfloat16 and each SDPA kernel.

The CPU test suite proves float32 parity to 1e-5; this script says what changes on a GPU, where kernels differ:
TF32 convolutions (PyTorch enables them by default for cuDNN), bfloat16 weights, and SDPA's flash / memory-efficient
kernels instead of the math one. One JSON line per (fixture, precision, attention kernel) with the max abs diff to
the reference and the cosine of each output to it:

    python benchmarks/gpu_parity.py                   # on the default CUDA device
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
OFFICIAL = ROOT / "tests" / "fixtures" / "reference" / "official"
TOKENIZER = ROOT / "tests" / "fixtures" / "reference" / "tokenizer" / "tokenizer.model"


def kernel_context(kernel: str):
    """Restrict scaled_dot_product_attention to one backend (`math`, `flash`, `efficient`, `cudnn`)."""
    if kernel == "default":
        return nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel

    backend = {
        "math": SDPBackend.MATH,
        "flash": SDPBackend.FLASH_ATTENTION,
        "efficient": SDPBackend.EFFICIENT_ATTENTION,
        "cudnn": SDPBackend.CUDNN_ATTENTION,
    }[kernel]
    return sdpa_kernel([backend])


@torch.inference_mode()
def compare(model, expected: dict[str, np.ndarray], device: str, dtype: torch.dtype, kernel: str) -> dict[str, float]:
    """Max abs diff and min per-row cosine of cls1/cls2/patches at each stored size and of the text embeddings.
    `kernel` restricts the vision tower's attention; the text tower keeps the default choice (its padding mask rules
    out the flash kernel)."""
    out: dict[str, float] = {}
    registers = model.config.vision_config.num_register_tokens
    for key in sorted(k for k in expected if k.startswith("pixel_values_u8_")):
        size = key.removeprefix("pixel_values_u8_")
        pixels = torch.from_numpy(expected[key]).float().div(255).to(device, dtype)
        with kernel_context(kernel):
            vision = model.vision_model(pixel_values=pixels, return_dict=True)
        got = {
            "cls1": vision.alt_text_embeds[:, None],
            "cls2": vision.synthetic_embeds[:, None],
            "patch_tokens": vision.last_hidden_state[:, 1 + registers :],
        }
        for name, tensor in got.items():
            ref = torch.from_numpy(expected[f"{name}_{size}"]).float()
            _record(out, f"{name}@{size}", tensor.float().cpu(), ref)
    ids = torch.from_numpy(expected["text_ids"]).long().to(device)
    mask = 1 - torch.from_numpy(expected["text_paddings"]).long().to(device)
    text = model.text_model(input_ids=ids, attention_mask=mask, return_dict=True).pooler_output
    _record(out, "text_embeds", text.float().cpu(), torch.from_numpy(expected["text_embeds"]).float())
    return out


def _record(out: dict, name: str, got: torch.Tensor, ref: torch.Tensor) -> None:
    got, ref = got.reshape(-1, got.shape[-1]), ref.reshape(-1, ref.shape[-1])
    out[f"max_abs/{name}"] = float((got - ref).abs().max())
    out[f"min_cos/{name}"] = float(torch.nn.functional.cosine_similarity(got, ref, dim=-1).min())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    from tips_hf import TipsModel
    from tips_hf.conversion import convert_official

    index = json.loads((OFFICIAL / "index.json").read_text())
    cases = [
        ("float32", "math", False),
        ("float32", "math", True),  # PyTorch's default: cuDNN convolutions in TF32
        ("float32", "efficient", False),
        ("bfloat16", "math", True),
        ("bfloat16", "flash", True),
        ("bfloat16", "efficient", True),
        ("bfloat16", "cudnn", True),
    ]
    with tempfile.TemporaryDirectory() as tmp:
        for name, info in sorted(index.items()):
            folder = convert_official(
                OFFICIAL / f"{name}_vision.npz",
                OFFICIAL / f"{name}_text.npz",
                Path(tmp) / name,
                tokenizer_path=TOKENIZER,
                vision_heads=info["vision"]["num_heads"],
                text_heads=info["text"]["num_heads"],
                progress=False,
            ).output_dir
            with np.load(OFFICIAL / f"{name}_expected.npz", allow_pickle=False) as npz:
                expected = {k: npz[k] for k in npz.files}
            for attn in ("eager", "sdpa"):
                for dtype_name, kernel, tf32 in cases:
                    if attn == "eager" and kernel != "math":
                        continue  # eager attention has no kernel choice
                    dtype = getattr(torch, dtype_name)
                    model = TipsModel.from_pretrained(folder, attn_implementation=attn).to(args.device, dtype).eval()
                    torch.backends.cudnn.allow_tf32 = tf32
                    torch.backends.cuda.matmul.allow_tf32 = tf32
                    record = {"bench": "gpu_parity", "fixture": name, "attn": attn, "dtype": dtype_name, "tf32": tf32}
                    record["kernel"] = kernel if attn == "sdpa" else "eager"
                    try:
                        diffs = compare(model, expected, args.device, dtype, kernel if attn == "sdpa" else "default")
                    except RuntimeError as err:  # a kernel that does not support this head size or dtype
                        record["error"] = str(err).splitlines()[0][:200]
                    else:
                        record["max_abs"] = max(v for k, v in diffs.items() if k.startswith("max_abs/"))
                        record["min_cos"] = min(v for k, v in diffs.items() if k.startswith("min_cos/"))
                        record["detail"] = diffs
                    print(json.dumps(record), flush=True)
                    del model
    torch.backends.cudnn.allow_tf32 = True
    torch.backends.cuda.matmul.allow_tf32 = False


if __name__ == "__main__":
    main()
