"""Shared test fixtures: the reference fixtures (copied verbatim from ../shared/fixtures) and converted models."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

ROOT = Path(__file__).resolve().parent.parent
REFERENCE = ROOT / "tests" / "fixtures" / "reference"
OFFICIAL_DIR = REFERENCE / "official"
SCENIC_DIR = REFERENCE / "scenic"
TOKENIZER_MODEL = REFERENCE / "tokenizer" / "tokenizer.model"
OFFICIAL_INDEX = json.loads((OFFICIAL_DIR / "index.json").read_text())
SCENIC_INDEX = json.loads((SCENIC_DIR / "index.json").read_text())


def official_files(name: str) -> tuple[Path, Path, Path]:
    return tuple(OFFICIAL_DIR / f"{name}_{part}.npz" for part in ("vision", "text", "expected"))


@pytest.fixture(scope="session")
def converted_official(tmp_path_factory):
    """Each official fixture converted once per session with `tips-convert official` (library call)."""
    from tips_hf.conversion import convert_official

    root = tmp_path_factory.mktemp("official")
    folders = {}
    for name, info in OFFICIAL_INDEX.items():
        vision, text, _ = official_files(name)
        result = convert_official(
            vision,
            text,
            root / name,
            tokenizer_path=TOKENIZER_MODEL,
            vision_heads=info["vision"]["num_heads"],
            text_heads=info["text"]["num_heads"],
            progress=False,
        )
        folders[name] = result.output_dir
    return folders


def tiny_config(ffn_type: str = "mlp", **vision):
    from tips_hf import TipsConfig

    vision_config = dict(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        image_size=56,
        ffn_type=ffn_type,
    )
    vision_config.update(vision)
    return TipsConfig(
        vision_config=vision_config,
        text_config=dict(
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=4,
            intermediate_size=64,
            vocab_size=100,
            max_position_embeddings=16,
        ),
    )
