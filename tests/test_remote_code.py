"""A saved folder loads with trust_remote_code=True where tips_hf cannot be imported, and gives identical outputs."""


import numpy as np
import torch
from conftest import assert_same_as_remote, run_without_tips_hf

from tips_hf import TipsModel, TipsProcessor

CHILD = """
import numpy as np, torch
from PIL import Image
from transformers import AutoModel, AutoProcessor, pipeline
model = AutoModel.from_pretrained(FOLDER, trust_remote_code=True).eval()
processor = AutoProcessor.from_pretrained(FOLDER, trust_remote_code=True)
assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
assert type(processor.tokenizer).__module__.startswith("transformers_modules")
data = np.load(INPUTS)
inputs = processor(images=list(data["images"]), text=["a red circle", "a blue square on the left"],
                   return_tensors="pt")
with torch.no_grad():
    out = model(**inputs)
clf = pipeline("zero-shot-image-classification", model=FOLDER, trust_remote_code=True)
scores = clf(Image.fromarray(data["images"][0]), candidate_labels=["cat", "dog"])
np.savez(OUTPUT, pixel_values=inputs["pixel_values"].numpy(), input_ids=inputs["input_ids"].numpy(),
         logits=out.logits_per_image.numpy(), synthetic=out.synthetic_logits_per_image.numpy(),
         patches=out.vision_model_output.patch_embeds.numpy(), text=out.text_embeds.numpy(),
         score=np.array([s["score"] for s in scores]))
"""


def test_remote_code_outside_package(converted_official, tmp_path):
    folder = converted_official["v1-swiglu-448"]
    rng = np.random.RandomState(0)
    images = (rng.rand(2, 70, 90, 3) * 255).astype(np.uint8)
    np.savez(tmp_path / "inputs.npz", images=images)
    run = run_without_tips_hf(CHILD, tmp_path, FOLDER=str(folder), INPUTS=str(tmp_path / "inputs.npz"),
                              OUTPUT=str(tmp_path / "out.npz"))
    assert run.returncode == 0, run.stderr[-3000:]
    remote = np.load(tmp_path / "out.npz")

    model = TipsModel.from_pretrained(folder).eval()
    processor = TipsProcessor.from_pretrained(folder)
    inputs = processor(images=list(images), text=["a red circle", "a blue square on the left"], return_tensors="pt")
    np.testing.assert_array_equal(remote["pixel_values"], inputs["pixel_values"].numpy())
    np.testing.assert_array_equal(remote["input_ids"], inputs["input_ids"].numpy())
    with torch.no_grad():
        out = model(**inputs)
    assert_same_as_remote(remote, out)
    assert abs(remote["score"].sum() - 1) < 1e-5


def test_published_code_is_lean(converted_official):
    """The folder carries the model's and the processor's modules and no conversion tables (foreign layouts are read
    by tips-hf itself): the model's code stays within 1,500 lines (2,178 when the layout tables travelled with it)."""
    folder = converted_official["v1-swiglu-448"]
    lines = {path.name: len(path.read_text().splitlines()) for path in folder.glob("*.py")}
    assert sorted(lines) == [
        "configuration_tips.py",
        "image_processing_tips.py",
        "modeling_tips.py",
        "processing_tips.py",
        "tokenization_tips.py",
    ]
    assert lines["configuration_tips.py"] + lines["modeling_tips.py"] <= 1500, lines
