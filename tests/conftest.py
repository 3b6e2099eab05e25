"""Shared test fixtures: the reference fixtures (copied verbatim from ../shared/fixtures) and converted models."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
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


# Where our code meets an independent implementation (transformers' native `Tipsv2Model`, the official fixtures), both
# compute the same maths with differently ordered float32 sums (fused vs split SwiGLU projections since transformers
# 5.24, other attention kernels). Each op then differs by a few units of float32 roundoff (2**-24 ~ 6e-8 relative);
# through a few blocks and LayerNorms of O(1) activations this stays near 1e-6 absolute (measured: 4.8e-7 on
# transformers 5.24, 0 on 5.23). 1e-5 leaves headroom yet fails on any real error: one wrong, transposed or missing
# weight moves these outputs by 1e-2 or more. Bit-equality is asserted only for our own round trips.
INTEROP_TOL = dict(atol=1e-5, rtol=1e-5)


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


# The width and depth of both towers of the tiny test models.
TINY_TOWER = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64)


def tiny_config(ffn_type: str = "mlp", **vision):
    from tips_hf import TipsConfig

    return TipsConfig(
        vision_config={**TINY_TOWER, "image_size": 56, "ffn_type": ffn_type, **vision},
        text_config={**TINY_TOWER, "vocab_size": 100, "max_position_embeddings": 16},
    )


def save_tiny_model(folder, image_size: int = 56, text_layers: int = 2, text_positions: int = 16, prepare=None) -> Path:
    """A random tiny `TipsModel` (seed 0; text vocabulary of the embedded scenes tokenizer) and its `TipsProcessor`
    (`image_size`-px squares) saved in `folder`, as `tips-eval`, `tips-export` and the demo load them; `prepare(model)`
    runs before saving."""
    from tips_hf import TipsConfig, TipsImageProcessor, TipsModel, TipsProcessor, TipsTokenizer
    from tips_hf.data.build_tokenizer import TOKENIZER_PATH

    torch.manual_seed(0)
    text = {**TINY_TOWER, "num_hidden_layers": text_layers, "vocab_size": 512, "max_position_embeddings": text_positions}
    model = TipsModel(TipsConfig(vision_config={**TINY_TOWER, "image_size": image_size}, text_config=text)).eval()
    if prepare is not None:
        prepare(model)
    model.save_pretrained(folder)
    image_processor = TipsImageProcessor(size={"height": image_size, "width": image_size})
    TipsProcessor(image_processor=image_processor, tokenizer=TipsTokenizer(str(TOKENIZER_PATH))).save_pretrained(folder)
    return Path(folder)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A random `TipsModel(tiny_config())` (seed 0) saved once per session, for tests that only read it."""
    from tips_hf import TipsModel

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("tiny-base") / "model"
    TipsModel(tiny_config()).save_pretrained(folder)
    return folder


# Preamble of a child process in which `tips_hf` cannot be imported: what loads there loads through remote code only.
HIDE_TIPS_HF = textwrap.dedent(
    """
    import importlib.abc, os, sys
    class HideTipsHf(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "tips_hf" or name.startswith("tips_hf."):
                raise ImportError("tips_hf is hidden from this process")
    sys.meta_path.insert(0, HideTipsHf())
    sys.path = [p for p in sys.path if os.path.abspath(p or ".") != ROOT]
    try:
        import tips_hf  # noqa: F401
        raise SystemExit("tips_hf is importable; the test would prove nothing")
    except ImportError:
        pass
    """
)


def run_without_tips_hf(code: str, workdir: Path, timeout: int = 300, **variables) -> subprocess.CompletedProcess:
    """Run `code` in a fresh Python (cwd `workdir`, offline) that cannot import `tips_hf`; each keyword becomes a
    global of the script, written as a Python literal."""
    header = f"ROOT = {str(ROOT)!r}\n" + "".join(f"{name} = {value!r}\n" for name, value in variables.items())
    script = Path(workdir) / "child_without_tips_hf.py"
    script.write_text(header + HIDE_TIPS_HF + textwrap.dedent(code))
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_MODULES_CACHE=str(Path(workdir) / "modules"), PYTHONPATH="")
    return subprocess.run(
        [sys.executable, str(script)], cwd=workdir, env=env, capture_output=True, text=True, timeout=timeout
    )


def assert_same_as_remote(remote, out) -> None:
    """The outputs a remote-code child process saved (`logits`, `synthetic`, `patches`, `text` of its npz) are those of
    the installed `TipsModel` (`out`), bit for bit: the same weights through the same code."""
    import numpy as np

    np.testing.assert_array_equal(remote["logits"], out.logits_per_image.numpy())
    np.testing.assert_array_equal(remote["synthetic"], out.synthetic_logits_per_image.numpy())
    np.testing.assert_array_equal(remote["patches"], out.vision_model_output.patch_embeds.numpy())
    np.testing.assert_array_equal(remote["text"], out.text_embeds.numpy())


@pytest.fixture(scope="session")
def verified_model(tmp_path_factory) -> Path:
    """A fixture checkpoint converted with --verify, so that the folder holds parity.json (tips-publish tests)."""
    from publishing_helpers import NAME

    from tips_hf.conversion import convert_official

    vision, text, expected = official_files(NAME)
    out = tmp_path_factory.mktemp("verified") / NAME
    convert_official(
        vision, text, out, tokenizer_path=TOKENIZER_MODEL, vision_heads=4, text_heads=4, verify=expected, progress=False
    )
    return out


@pytest.fixture(scope="session")
def dry_run(verified_model, tmp_path_factory) -> tuple[Path, str]:
    """`tips-publish --dry-run --output OUT` with a tiny shard size; returns OUT and what the command printed."""
    import contextlib
    import io

    from publishing_helpers import REPO, SHARD

    from tips_hf.hub import main

    out = tmp_path_factory.mktemp("dry") / "published"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = main(
            ["--model", str(verified_model), "--repo-id", REPO, "--dry-run", "--output", str(out)]
            + ["--max-shard-size", SHARD]
        )
    assert code == 0
    return out, printed.getvalue()
