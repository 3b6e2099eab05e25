"""transformers pipelines run on a converted fixture and agree with the model called directly, and load every kind of
TIPS folder without asking anything on stdin."""

import builtins
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from conftest import ROOT, TINY_TOWER, save_tiny_model
from PIL import Image
from transformers import pipeline

from tips_hf import (
    TipsDPTConfig,
    TipsForDepthEstimation,
    TipsForSemanticSegmentation,
    TipsImageProcessor,
    TipsModel,
    TipsProcessor,
    TipsVisionConfig,
    TipsVisionModel,
)

LABELS = ["red circle", "blue square", "green triangle"]


def _image():
    return Image.fromarray((np.random.RandomState(1).rand(60, 80, 3) * 255).astype(np.uint8))


def test_zero_shot_image_classification(converted_official):
    folder = converted_official["v1-mlp-224"]
    classify = pipeline("zero-shot-image-classification", model=str(folder))
    result = classify(_image(), candidate_labels=LABELS)
    assert sorted(r["label"] for r in result) == sorted(LABELS)
    model, processor = TipsModel.from_pretrained(folder).eval(), TipsProcessor.from_pretrained(folder)
    texts = [f"This is a photo of {label}." for label in LABELS]
    inputs = processor(images=_image(), text=texts, return_tensors="pt")
    with torch.no_grad():
        probs = model(**inputs).logits_per_image.softmax(-1)[0]
    got = {r["label"]: r["score"] for r in result}
    np.testing.assert_allclose([got[label] for label in LABELS], probs.numpy(), atol=1e-5)


def test_image_feature_extraction(converted_official):
    folder = converted_official["v2-so-ratio-448"]
    extract = pipeline("image-feature-extraction", model=str(folder))
    features = np.array(extract(_image()))
    model, processor = TipsModel.from_pretrained(folder).eval(), TipsProcessor.from_pretrained(folder)
    with torch.no_grad():
        embeds = model(**processor(images=_image(), return_tensors="pt")).image_embeds
    assert features.shape == (1, 72)
    np.testing.assert_allclose(features, embeds.numpy(), atol=1e-5)


# ----------------------------------------------------------------------------------------------------------------------
# No question on stdin. `pipeline()` also tries `AutoVideoProcessor` on vision models; for a folder whose
# preprocessor_config.json maps AutoImageProcessor to `image_processing_tips.TipsImageProcessor`, transformers guessed
# a remote `TipsVideoProcessor` and asked "Do you wish to run the custom code? [y/N]" (waiting up to 15 s on a
# terminal) although tips_hf was imported and every class it needs is local.

PROMPT = "Do you wish to run the custom code"


@pytest.fixture(scope="module")
def tips_folders(tmp_path_factory):
    """(pipeline task, folder) for each kind of folder tips-hf writes: a TipsModel with its TipsProcessor
    (processor_config.json), a TipsModel with an image processor alone, a vision tower alone and two DPT models (both
    with preprocessor_config.json, as `tips-convert official` without --tokenizer, `tips-convert dpt` and
    `save_pretrained` write them)."""
    root = tmp_path_factory.mktemp("pipeline-folders")
    image_processor = TipsImageProcessor(size={"height": 28, "width": 28})
    torch.manual_seed(0)
    vision = {**TINY_TOWER, "image_size": 28, "num_hidden_layers": 4}
    dpt = TipsDPTConfig(vision_config=vision, dpt_channels=8, num_depth_bins=4, num_labels=3)
    models = {
        "image-only": TipsModel.from_pretrained(save_tiny_model(root / "dual", image_size=28)),
        "vision": TipsVisionModel(TipsVisionConfig(**vision)),
        "depth": TipsForDepthEstimation(dpt),
        "segmentation": TipsForSemanticSegmentation(dpt),
    }
    for name, model in models.items():
        model.save_pretrained(root / name)
        image_processor.save_pretrained(root / name)
    return [
        ("zero-shot-image-classification", str(root / "dual")),
        ("image-feature-extraction", str(root / "image-only")),
        ("image-feature-extraction", str(root / "vision")),
        ("depth-estimation", str(root / "depth")),
        ("image-segmentation", str(root / "segmentation")),
    ]


def _run(task: str, folder: str):
    image = Image.fromarray((np.random.RandomState(0).rand(30, 40, 3) * 255).astype(np.uint8))
    runner = pipeline(task, model=folder)  # trust_remote_code left unset, as a user writes it
    kwargs = {"candidate_labels": ["a circle", "a square"]} if task == "zero-shot-image-classification" else {}
    return runner, runner(image, **kwargs)


def test_pipelines_ask_nothing(tips_folders, monkeypatch):
    asked = []
    monkeypatch.setattr(builtins, "input", lambda prompt="": asked.append(prompt) or "n")
    for task, folder in tips_folders:
        runner, result = _run(task, folder)
        assert type(runner.model).__module__.startswith("tips_hf."), (task, type(runner.model))
        assert isinstance(runner.image_processor, TipsImageProcessor)
        assert result is not None
    assert asked == [], asked


CHILD = """
import json, sys
import numpy as np
from PIL import Image
from transformers import pipeline
import tips_hf  # noqa: F401  registers the TIPS classes
image = Image.fromarray((np.random.RandomState(0).rand(30, 40, 3) * 255).astype(np.uint8))
loaded = []
for task, folder in json.loads(sys.argv[1]):
    runner = pipeline(task, model=folder)
    kwargs = {"candidate_labels": ["a circle", "a square"]} if task == "zero-shot-image-classification" else {}
    runner(image, **kwargs)
    loaded.append(type(runner.model).__name__)
print("LOADED", json.dumps(loaded))
"""


@pytest.mark.slow  # a fresh interpreter importing transformers and tips_hf: ~10 s idle
def test_pipelines_load_with_stdin_closed(tips_folders, tmp_path):
    """The user's situation in a fresh process with stdin closed: nothing is asked, nothing waits."""
    script = tmp_path / "child.py"
    script.write_text(textwrap.dedent(CHILD))
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_MODULES_CACHE=str(tmp_path / "modules"), PYTHONPATH=str(ROOT))
    run = subprocess.run(
        [sys.executable, str(script), json.dumps(tips_folders)], stdin=subprocess.DEVNULL, capture_output=True,
        text=True, env=env, cwd=tmp_path, timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert PROMPT not in run.stdout + run.stderr
    loaded = json.loads(run.stdout.split("LOADED", 1)[1])
    assert loaded == ["TipsModel", "TipsModel", "TipsVisionModel", "TipsForDepthEstimation",
                      "TipsForSemanticSegmentation"]
