"""Re-run a converted model on the inputs stored with a reference's expected outputs, and measure the difference."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import torch

from ..processing.image_processing_tips import center_pad_to_multiple
from .layouts import LayoutError
from .npz import NpzReader

PARITY_FILE = "parity.json"


def _max_diff(got: torch.Tensor, want: torch.Tensor, name: str) -> float:
    if tuple(got.shape) != tuple(want.shape):
        raise LayoutError(f"{name}: the model produced shape {tuple(got.shape)}, the reference {tuple(want.shape)}.")
    return float((got.double() - want.double()).abs().max())


@torch.no_grad()
def verify_model(model, expected_path: str | os.PathLike, layout: str = "official") -> dict[str, float]:
    """Max abs difference of every stored reference output: `{"cls1@224x224": 3e-7, ..., "text_embeds": ...}`.

    `model` is a `TipsModel` or a folder. `layout` names the reference's conventions: `"official"` (NCHW inputs,
    `cls1_*`/`cls2_*`/`patch_tokens_*` of shape (B, N, D)) or `"scenic"` (NHWC inputs centre-padded to a multiple of
    14, `cls_tokens_*` (B, 2, D), `patch_tokens_*` (B, h, w, D)).
    """
    if not hasattr(model, "vision_model"):
        from ..modeling.modeling_tips import TipsModel

        model = TipsModel.from_pretrained(model)
    model = model.eval().float()
    device = next(model.parameters()).device
    expected = NpzReader(expected_path)
    prefix = "pixel_values_u8_nhwc_" if layout == "scenic" else "pixel_values_u8_"
    sizes = sorted(m.group(1) for k in expected.keys() if (m := re.fullmatch(re.escape(prefix) + r"(\d+x\d+)", k)))
    if not sizes and "text_ids" not in expected:
        raise LayoutError(f"{expected_path}: no '{prefix}HxW' inputs and no 'text_ids'; not a TIPS expected file.")
    report: dict[str, float] = {}
    for size in sizes:
        pixels = expected.read(prefix + size).float() / 255.0
        if layout == "scenic":
            pixels = center_pad_to_multiple(pixels.permute(0, 3, 1, 2), model.config.vision_config.patch_size)
        out = model.vision_model(pixel_values=pixels.to(device), return_dict=True)
        if layout == "scenic":
            cls = torch.stack([out.alt_text_embeds, out.synthetic_embeds], dim=1)
            report[f"cls_tokens@{size}"] = _max_diff(cls.cpu(), expected.read(f"cls_tokens_{size}"), size)
            report[f"patch_tokens@{size}"] = _max_diff(
                out.patch_embeds.cpu(), expected.read(f"patch_tokens_{size}"), size
            )
        else:
            report[f"cls1@{size}"] = _max_diff(out.alt_text_embeds[:, None].cpu(), expected.read(f"cls1_{size}"), size)
            report[f"cls2@{size}"] = _max_diff(out.synthetic_embeds[:, None].cpu(), expected.read(f"cls2_{size}"), size)
            patches = out.last_hidden_state[:, 1 + model.config.vision_config.num_register_tokens :]
            report[f"patch_tokens@{size}"] = _max_diff(patches.cpu(), expected.read(f"patch_tokens_{size}"), size)
    if "text_ids" in expected:
        ids = expected.read("text_ids").long()
        mask = 1 - expected.read("text_paddings").long()
        text = model.text_model(input_ids=ids.to(device), attention_mask=mask.to(device), return_dict=True)
        report["text_embeds"] = _max_diff(text.pooler_output.cpu(), expected.read("text_embeds"), "text_embeds")
    expected.close()
    return report


def record_parity(folder: str | os.PathLike, parity: dict[str, float], source: str, expected) -> None:
    """Store the measured parity beside the weights; the model card reads it."""
    path = Path(folder) / PARITY_FILE
    payload = {
        "reference": source,
        "expected_file": Path(expected).name,
        "max_abs_diff": parity,
        "max_abs_diff_overall": max(parity.values()) if parity else None,
        "dtype": "float32",
        "device": "cpu",
    }
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(payload, indent=2) + "\n")
    os.replace(tmp, path)


def format_parity(parity: dict[str, float]) -> str:
    width = max((len(k) for k in parity), default=10)
    lines = [f"  {name:<{width}}  max|Δ| = {value:.3e}" for name, value in parity.items()]
    lines.append(f"  {'overall':<{width}}  max|Δ| = {max(parity.values()):.3e}" if parity else "  (nothing compared)")
    return "\n".join(lines)


__all__ = ["format_parity", "record_parity", "verify_model"]
