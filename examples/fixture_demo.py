#!/usr/bin/env python
"""Convert the official tiny fixture, classify an image zero-shot, and write a PCA picture of its patch features.

    python examples/fixture_demo.py --output outputs/fixture_demo

The fixture has random weights, so the predictions are meaningless; the demo shows the API end to end offline.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from transformers import pipeline

from tips_hf import TipsModel, TipsProcessor
from tips_hf.conversion import convert_official, format_parity
from tips_hf.dense import save_pca_picture

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures" / "reference"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--output", default="outputs/fixture_demo")
    args = parser.parse_args()
    out = Path(args.output)
    name = "v2-so-ratio-448"
    official = FIXTURES / "official"
    result = convert_official(
        official / f"{name}_vision.npz",
        official / f"{name}_text.npz",
        out / "model",
        tokenizer_path=FIXTURES / "tokenizer" / "tokenizer.model",
        vision_heads=4,
        text_heads=4,
        verify=official / f"{name}_expected.npz",
        overwrite=True,
    )
    print(f"converted {name} → {result.output_dir}; parity against the official outputs:")
    print(format_parity(result.parity))

    model = TipsModel.from_pretrained(result.output_dir).eval()
    processor = TipsProcessor.from_pretrained(result.output_dir)
    with np.load(official / f"{name}_expected.npz") as data:
        image = data["pixel_values_u8_448x448"][0].transpose(1, 2, 0)
    classify = pipeline(
        "zero-shot-image-classification",
        model=model,
        image_processor=processor.image_processor,
        tokenizer=processor.tokenizer,
    )
    from PIL import Image

    labels = ["a red circle", "a blue square", "a photo of a dog"]
    print("zero-shot:", classify(Image.fromarray(image), candidate_labels=labels))
    inputs = processor(images=image, return_tensors="pt")
    with torch.no_grad():
        patches = model.get_image_features(**inputs).patch_embeds[0]
    save_pca_picture(out / "pca.png", patches, inputs["pixel_values"][0])
    print(f"wrote {out / 'pca.png'}")


if __name__ == "__main__":
    main()
