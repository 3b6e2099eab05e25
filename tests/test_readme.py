"""The README's first Python snippet runs as written, on a model folder where it looks for the main job's."""

import shutil

import numpy as np
import torch
from conftest import ROOT


def _first_python_block() -> str:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Using a TIPS model", 1)[1]
    return section.split("```python", 1)[1].split("```", 1)[0]


def test_readme_usage_snippet_runs(converted_official, tmp_path, monkeypatch):
    code = _first_python_block()
    assert '"outputs/tiny-cpu/final"' in code  # the main job's output folder, relative to the checkout
    shutil.copytree(converted_official["v1-mlp-224"], tmp_path / "outputs" / "tiny-cpu" / "final")
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)  # noqa: S102 - our own README
    out, features = namespace["out"], namespace["features"]
    assert out.logits_per_image.shape == out.synthetic_logits_per_image.shape == (1, 2)
    torch.testing.assert_close(out.logits_per_image, out.logits_per_text.T)
    width = namespace["model"].config.vision_config.hidden_size
    grid = namespace["processor"].image_processor.size["height"] // 14
    assert features.alt_text_embeds.shape == features.synthetic_embeds.shape == (1, width)
    assert features.patch_embeds.shape == (1, grid, grid, width)
    scores = namespace["scores"]
    assert sorted(s["label"] for s in scores) == ["circle", "square"]
    assert abs(sum(s["score"] for s in scores) - 1.0) < 1e-5
    embedding = np.asarray(namespace["embedding"])
    np.testing.assert_allclose(embedding, torch.nn.functional.normalize(features.alt_text_embeds, dim=-1), atol=1e-5)
