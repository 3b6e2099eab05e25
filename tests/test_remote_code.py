"""A saved folder loads with trust_remote_code=True where tips_hf cannot be imported, and gives identical outputs."""

import os
import subprocess
import sys
import textwrap

import numpy as np
import torch
from conftest import ROOT

from tips_hf import TipsModel, TipsProcessor

CHILD = textwrap.dedent(
    """
    import importlib.abc, sys
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
    import numpy as np, torch
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
    from PIL import Image
    scores = clf(Image.fromarray(data["images"][0]), candidate_labels=["cat", "dog"])
    np.savez(OUTPUT, pixel_values=inputs["pixel_values"].numpy(), input_ids=inputs["input_ids"].numpy(),
             logits=out.logits_per_image.numpy(), synthetic=out.synthetic_logits_per_image.numpy(),
             patches=out.vision_model_output.patch_embeds.numpy(), text=out.text_embeds.numpy(),
             score=np.array([s["score"] for s in scores]))
    """
)


def test_remote_code_outside_package(converted_official, tmp_path):
    folder = converted_official["v1-swiglu-448"]
    rng = np.random.RandomState(0)
    images = (rng.rand(2, 70, 90, 3) * 255).astype(np.uint8)
    np.savez(tmp_path / "inputs.npz", images=images)
    script = tmp_path / "child.py"
    header = f"import os\nROOT = {str(ROOT)!r}\nFOLDER = {str(folder)!r}\n"
    header += f"INPUTS = {str(tmp_path / 'inputs.npz')!r}\nOUTPUT = {str(tmp_path / 'out.npz')!r}\n"
    script.write_text(header + CHILD)
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_MODULES_CACHE=str(tmp_path / "modules"), PYTHONPATH="")
    run = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert run.returncode == 0, run.stderr[-3000:]
    remote = np.load(tmp_path / "out.npz")

    model = TipsModel.from_pretrained(folder).eval()
    processor = TipsProcessor.from_pretrained(folder)
    inputs = processor(images=list(images), text=["a red circle", "a blue square on the left"], return_tensors="pt")
    np.testing.assert_array_equal(remote["pixel_values"], inputs["pixel_values"].numpy())
    np.testing.assert_array_equal(remote["input_ids"], inputs["input_ids"].numpy())
    with torch.no_grad():
        out = model(**inputs)
    np.testing.assert_array_equal(remote["logits"], out.logits_per_image.numpy())
    np.testing.assert_array_equal(remote["synthetic"], out.synthetic_logits_per_image.numpy())
    np.testing.assert_array_equal(remote["patches"], out.vision_model_output.patch_embeds.numpy())
    np.testing.assert_array_equal(remote["text"], out.text_embeds.numpy())
    assert abs(remote["score"].sum() - 1) < 1e-5
