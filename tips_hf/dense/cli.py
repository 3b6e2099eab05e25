# Copyright 2026 The tips-hf authors. Licensed under the Apache License, Version 2.0.
"""`tips-visualize`: PCA picture of the patch features of an image and, given labels, a zero-shot segmentation.

    tips-visualize --model DIR --image cat.jpg --out pictures/ --labels cat sofa floor

writes `pictures/cat_pca.png` and `pictures/cat_zeroshot.png` and prints the top zero-shot classes. Errors in the
inputs (missing or unreadable image, a folder without model or processor) exit with code 2 and a one-line message.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import torch

PROG = "tips-visualize"


class CliError(Exception):
    """An input problem reported as `tips-visualize: error: ...` with exit code 2."""


def build_parser() -> argparse.ArgumentParser:
    from .zero_shot import PROMPT_TEMPLATES

    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True, help="folder with a saved TipsModel and TipsProcessor")
    parser.add_argument("--image", required=True, help="image file")
    parser.add_argument("--out", required=True, help="output folder (created if needed)")
    parser.add_argument("--labels", nargs="+", default=None, help="class names for zero-shot segmentation")
    parser.add_argument("--size", type=int, default=448, help="square input size, a multiple of 14 (default 448)")
    parser.add_argument(
        "--templates",
        nargs="+",
        default=list(PROMPT_TEMPLATES),
        help="prompt templates with a '{}' slot (default: the CLIP-style set in tips_hf.dense.PROMPT_TEMPLATES)",
    )
    parser.add_argument("--head", choices=("alt_text", "synthetic"), default="alt_text", help="CLS head to classify")
    parser.add_argument(
        "--background-threshold",
        type=float,
        default=None,
        help="cosine similarity below which a pixel is painted as background",
    )
    parser.add_argument("--top-k", type=int, default=5, help="number of zero-shot classes printed (default 5)")
    parser.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    return parser


def _read_image(path: Path):
    from PIL import Image

    if not path.is_file():
        raise CliError(f"image file not found: {path}")
    try:
        with Image.open(path) as image:
            image.load()
            return image.convert("RGB")
    except (OSError, ValueError, Image.DecompressionBombError) as error:
        raise CliError(f"cannot read image {path}: {error}") from None


def _load(model_dir: Path, device: str):
    from tips_hf import TipsModel, TipsProcessor

    if not model_dir.is_dir():
        raise CliError(f"model directory not found: {model_dir}")
    try:
        processor = TipsProcessor.from_pretrained(str(model_dir))
    except (OSError, ValueError, TypeError, KeyError) as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise CliError(
            f"no TIPS processor in {model_dir} (it needs processor_config.json and tokenizer.model, as written by "
            f"TipsProcessor.save_pretrained): {first_line}"
        ) from None
    try:
        model = TipsModel.from_pretrained(str(model_dir)).to(device).eval()
    except (OSError, ValueError, TypeError, KeyError) as error:
        raise CliError(f"cannot load a TipsModel from {model_dir}: {str(error).strip().splitlines()[0]}") from None
    return model, processor


def run(args: argparse.Namespace) -> list[Path]:
    """Do the work of `main`; returns the written files. Raises [`CliError`] for input problems."""
    from .pca import save_pca_picture
    from .visualize import save_segmentation_picture
    from .zero_shot import encode_labels, zero_shot_classify, zero_shot_segment

    image_path, model_dir, out_dir = Path(args.image), Path(args.model), Path(args.out)
    if args.labels is not None and any("{}" not in template for template in args.templates):
        raise CliError(f"every template needs a '{{}}' slot for the label, got {args.templates}")
    image = _read_image(image_path)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    model, processor = _load(model_dir, device)
    patch = model.config.vision_config.patch_size
    if args.size <= 0 or args.size % patch:
        raise CliError(f"--size must be a positive multiple of the patch size {patch}, got {args.size}")

    pixel_values = processor.image_processor(
        image, size={"height": args.size, "width": args.size}, return_tensors="pt"
    )["pixel_values"].to(device)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise CliError(f"cannot create output directory {out_dir}: {error}") from None
    written = []
    with torch.no_grad():
        features = model.get_image_features(pixel_values=pixel_values)
    pca_path = out_dir / f"{image_path.stem}_pca.png"
    save_pca_picture(pca_path, features.patch_embeds[0].float().cpu(), image=pixel_values[0].float().cpu(), scale=patch)
    written.append(pca_path)

    if args.labels:
        label_embeds = encode_labels(model, processor, args.labels, templates=args.templates)
        probs = zero_shot_classify(model, pixel_values, label_embeds, head=args.head).softmax(dim=-1)[0].cpu()
        top = probs.topk(min(args.top_k, len(args.labels)))
        print(f"top zero-shot classes ({args.head} head):")
        for score, index in zip(top.values.tolist(), top.indices.tolist()):
            print(f"  {score:.4f}  {args.labels[index]}")
        segmentation = zero_shot_segment(
            model,
            pixel_values,
            label_embeds,
            output_size=tuple(pixel_values.shape[-2:]),
            background_threshold=args.background_threshold,
        )
        seg_path = out_dir / f"{image_path.stem}_zeroshot.png"
        save_segmentation_picture(seg_path, pixel_values[0].float().cpu(), segmentation["labels"][0].cpu(), args.labels)
        written.append(seg_path)
    for path in written:
        print(f"wrote {path}")
    return written


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point; returns the exit code (0, or 2 for input errors)."""
    args = build_parser().parse_args(argv)
    try:
        run(args)
    except CliError as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
