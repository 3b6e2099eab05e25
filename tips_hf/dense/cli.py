# Copyright 2026 The tips-hf authors. Licensed under the Apache License, Version 2.0.
"""`tips-visualize`: pictures of what a TIPS model sees in an image.

    tips-visualize --model DIR --image cat.jpg --out pictures/ --labels cat sofa floor
    tips-visualize --depth DEPTH_DIR --normals NORMALS_DIR --segmentation SEG_DIR --image room.jpg --out pictures/

With `--model` (a TipsModel folder): `pictures/cat_pca.png` (PCA of the patch features) and, given labels,
`pictures/cat_zeroshot.png`, the zero-shot segmentation of the official protocol (values trick, TCL templates, short
side resized to `--size`, sliding windows of `--size` px every 3/4 of it) and the top zero-shot classes. With DPT folders
(`tips-convert dpt`): `<stem>_depth.png`, `<stem>_normals.png`, `<stem>_segmentation.png`. Errors in the inputs
(missing or unreadable image, a folder without model or processor) exit with code 2 and a one-line message.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import torch

from .._cli import run_main

PROG = "tips-visualize"


class CliError(Exception):
    """An input problem reported as `tips-visualize: error: ...` with exit code 2."""


def build_parser() -> argparse.ArgumentParser:
    from .zero_shot import SEGMENTATION_TEMPLATES

    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n")[0])
    parser.add_argument("--model", help="folder with a saved TipsModel and TipsProcessor (PCA and zero-shot pictures)")
    parser.add_argument("--depth", help="TipsForDepthEstimation folder (tips-convert dpt --task depth)")
    parser.add_argument("--normals", help="TipsForNormalEstimation folder (tips-convert dpt --task normals)")
    parser.add_argument("--segmentation", help="TipsForSemanticSegmentation folder (tips-convert dpt)")
    parser.add_argument("--image", required=True, help="image file")
    parser.add_argument("--out", required=True, help="output folder (created if needed)")
    parser.add_argument("--labels", nargs="+", default=None, help="class names for zero-shot segmentation")
    parser.add_argument(
        "--size", type=int, default=448, help="input side, a multiple of 14 (default 448): square for PCA and DPT "
        "pictures, the short side and sliding-window size for zero-shot segmentation"
    )
    parser.add_argument(
        "--templates",
        nargs="+",
        default=list(SEGMENTATION_TEMPLATES),
        help="prompt templates with a '{}' slot (default: the official TCL set, tips_hf.dense.SEGMENTATION_TEMPLATES)",
    )
    parser.add_argument(
        "--zero-shot-mode", choices=("slide", "whole"), default="slide", help="official sliding windows (default) or "
        "one pass over the whole image"
    )
    parser.add_argument("--head", choices=("alt_text", "synthetic"), default="alt_text", help="CLS head to classify")
    parser.add_argument(
        "--background-threshold",
        type=float,
        default=None,
        help="score (window-averaged probability with --zero-shot-mode slide, cosine with whole) below which a pixel "
        "is painted as background",
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


def _load_dpt(folder: str, task: str, device: str):
    from ..modeling import modeling_dense_tips
    from ..processing.image_processing_tips import TipsImageProcessor

    class_name = {"depth": "TipsForDepthEstimation", "normals": "TipsForNormalEstimation",
                  "segmentation": "TipsForSemanticSegmentation"}[task]
    path = Path(folder)
    if not path.is_dir():
        raise CliError(f"--{task}: model directory not found: {path}")
    try:
        config = modeling_dense_tips.TipsDPTConfig.from_pretrained(str(path))
        if config.task != task:
            raise CliError(f"--{task}: {path} holds a {config.task} model (config.task), not a {task} model")
        model = getattr(modeling_dense_tips, class_name).from_pretrained(str(path)).to(device).eval()
        processor = TipsImageProcessor.from_pretrained(str(path))
    except (OSError, ValueError, TypeError, KeyError, RuntimeError) as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise CliError(f"--{task}: cannot load a {class_name} with its image processor from {path}: {first_line}") from None
    return model, processor


def _dpt_pictures(args: argparse.Namespace, image, stem: str, out_dir: Path, device: str) -> list[Path]:
    """Depth, normals and segmentation pictures from the DPT folders given; outputs upsampled bilinearly to the input
    (as the official decoder does)."""
    import torch.nn.functional as F

    from .visualize import colorize_depth, colorize_normals, save_picture, save_segmentation_picture, side_by_side

    written = []
    for task in ("depth", "normals", "segmentation"):
        folder = getattr(args, task)
        if folder is None:
            continue
        model, processor = _load_dpt(folder, task, device)
        pixels = processor(image, size={"height": args.size, "width": args.size}, return_tensors="pt")["pixel_values"]
        pixels = pixels.to(device)
        size = tuple(pixels.shape[-2:])
        with torch.no_grad():
            out = model(pixel_values=pixels)
        path = out_dir / f"{stem}_{task}.png"
        picture_input = pixels[0].float().cpu()
        if task == "depth":
            depth = F.interpolate(out.predicted_depth[:, None].float(), size=size, mode="bilinear", align_corners=False)
            depth = depth[0, 0].cpu()
            save_picture(path, side_by_side(picture_input, colorize_depth(depth)))
            print(f"depth: {float(depth.min()):.3f} to {float(depth.max()):.3f} (median {float(depth.median()):.3f})")
        elif task == "normals":
            normals = F.interpolate(out.predicted_normals.float(), size=size, mode="bilinear", align_corners=False)
            save_picture(path, side_by_side(picture_input, colorize_normals(normals[0].cpu())))
        else:
            logits = F.interpolate(out.logits.float(), size=size, mode="bilinear", align_corners=False)
            names = [model.config.id2label[i] for i in range(model.config.num_labels)]
            save_segmentation_picture(path, picture_input, logits[0].argmax(dim=0).cpu(), names)
        written.append(path)
    return written


def _short_side(pixel_values: torch.Tensor, side: int) -> torch.Tensor:
    """Resize (B, 3, H, W) so that the short side is `side` (bicubic, clamped to [0, 1]), as the official notebook."""
    import torch.nn.functional as F

    height, width = pixel_values.shape[-2:]
    if min(height, width) == side:
        return pixel_values
    scale = side / min(height, width)
    size = (side, int(width * scale)) if height <= width else (int(height * scale), side)
    return F.interpolate(pixel_values, size=size, mode="bicubic", align_corners=False).clamp(0, 1)


def run(args: argparse.Namespace) -> list[Path]:
    """Do the work of `main`; returns the written files. Raises [`CliError`] for input problems."""
    from .pca import save_pca_picture
    from .visualize import save_segmentation_picture
    from .zero_shot import encode_labels, zero_shot_classify, zero_shot_segment

    if not any(getattr(args, name) for name in ("model", "depth", "normals", "segmentation")):
        raise CliError("give --model (a TipsModel folder) and/or DPT folders (--depth, --normals, --segmentation)")
    if args.labels and not args.model:
        raise CliError("--labels needs --model (a TipsModel folder with its text tower)")
    image_path, out_dir = Path(args.image), Path(args.out)
    if args.labels is not None and any("{}" not in template for template in args.templates):
        raise CliError(f"every template needs a '{{}}' slot for the label, got {args.templates}")
    if args.size <= 0 or args.size % 14:
        raise CliError(f"--size must be a positive multiple of the patch size 14, got {args.size}")
    image = _read_image(image_path)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    model = processor = None
    if args.model:
        model, processor = _load(Path(args.model), device)
        patch = model.config.vision_config.patch_size
        if args.size % patch:
            raise CliError(f"--size must be a positive multiple of the patch size {patch}, got {args.size}")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise CliError(f"cannot create output directory {out_dir}: {error}") from None
    written = []
    if model is not None:
        pixel_values = processor.image_processor(
            image, size={"height": args.size, "width": args.size}, return_tensors="pt"
        )["pixel_values"].to(device)
        with torch.no_grad():
            features = model.get_image_features(pixel_values=pixel_values)
        pca_path = out_dir / f"{image_path.stem}_pca.png"
        save_pca_picture(
            pca_path, features.patch_embeds[0].float().cpu(), image=pixel_values[0].float().cpu(), scale=patch
        )
        written.append(pca_path)

    if model is not None and args.labels:
        label_embeds = encode_labels(model, processor, args.labels, templates=args.templates)
        probs = zero_shot_classify(model, pixel_values, label_embeds, head=args.head).softmax(dim=-1)[0].cpu()
        top = probs.topk(min(args.top_k, len(args.labels)))
        print(f"top zero-shot classes ({args.head} head):")
        for score, index in zip(top.values.tolist(), top.indices.tolist()):
            print(f"  {score:.4f}  {args.labels[index]}")
        # Official protocol: the unresized image with its short side at --size, values trick, sliding windows.
        full = processor.image_processor(image, do_resize=False, do_center_pad=False, return_tensors="pt")
        full = _short_side(full["pixel_values"].to(device), args.size)
        segmentation = zero_shot_segment(
            model,
            full,
            label_embeds,
            method="values",
            mode=args.zero_shot_mode,
            window=args.size,
            output_size=tuple(full.shape[-2:]),
            background_threshold=args.background_threshold,
        )
        seg_path = out_dir / f"{image_path.stem}_zeroshot.png"
        save_segmentation_picture(seg_path, full[0].float().cpu(), segmentation["labels"][0].cpu(), args.labels)
        written.append(seg_path)
    written += _dpt_pictures(args, image, image_path.stem, out_dir, device)
    for path in written:
        print(f"wrote {path}")
    return written


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point; returns the exit code (0, or 2 for input errors)."""
    return run_main(build_parser(), run, CliError, argv)


if __name__ == "__main__":
    sys.exit(main())
