"""transformers pipelines run on a converted fixture and agree with the model called directly."""

import numpy as np
import torch
from PIL import Image
from transformers import pipeline

from tips_hf import TipsModel, TipsProcessor

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
