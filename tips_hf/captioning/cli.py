"""`tips-caption`: synthetic captions for a dataset of images (see tips_hf/captioning/run.py).

    tips-caption --model MODEL --data PATH_OR_HUB_ID --output OUT [--preset short,detailed | --prompt P]
        [--column synthetic_caption] [--max-new-tokens N] [--min-new-tokens N] [--batch-size B] [--split S]
        [--shard-size R]
        [--streaming] [--format auto|imagefolder|parquet|arrow|webdataset|hub] [--image-column C] [--num-beams K]
    accelerate launch -m tips_hf.captioning.cli --model ... (one share of the input per process)

Re-running the same command resumes an interrupted run. `datasets.load_dataset(OUT)` loads the result; pretraining
reads it with `data.source=hub data.path=OUT data.synthetic_columns=[...]`. Empty captions (a captioner that emits
only special tokens) are counted and reported; `--min-new-tokens` holds every caption to a minimum length. It needs
the `[train]` extra (accelerate, datasets): `pip install 'tips-hf[train]'`.
"""

from __future__ import annotations

import argparse
import logging
import sys

import torch

from .._cli import run_main

DTYPES = {"auto": None, "float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tips-caption",
        description="Caption a dataset's images with a transformers captioner (BLIP, PaliGemma, Florence-2, "
        "SmolVLM, ...) and write it back with the caption column(s), in resumable parquet shards.",
    )
    parser.add_argument("--model", required=True, help="captioner folder or Hub id (AutoModelForImageTextToText)")
    parser.add_argument("--data", required=True, help="image folder, parquet/arrow/webdataset file glob, or Hub id")
    parser.add_argument("--output", required=True, help="output folder (re-run to resume)")
    what = parser.add_mutually_exclusive_group()
    what.add_argument("--preset", default=None,
                      help="short, detailed or short,detailed (TIPSv2: both columns in one pass; default short)")
    what.add_argument("--prompt", default=None, help="a custom prompt (prompted VLMs)")
    parser.add_argument("--column", default="synthetic_caption",
                        help="caption column; with several presets, <column>_<preset> (default synthetic_caption)")
    parser.add_argument("--max-new-tokens", type=int, default=None, help="default: the preset's")
    parser.add_argument("--min-new-tokens", type=int, default=None,
                        help="new tokens before the captioner may end (default: the preset's; 0 for most) — raise it "
                        "when captions come out empty")
    parser.add_argument("--batch-size", type=int, default=16, help="images per generate() call and process")
    parser.add_argument("--split", default="train")
    parser.add_argument("--shard-size", type=int, default=1000, help="input rows per output shard")
    parser.add_argument("--streaming", action="store_true",
                        help="stream the input; each process takes whole input files (parquet: row groups)")
    parser.add_argument("--format", default="auto",
                        choices=("auto", "imagefolder", "parquet", "arrow", "webdataset", "hub"))
    parser.add_argument("--image-column", default=None, help="default: the first image column")
    parser.add_argument("--num-beams", type=int, default=1, help="1: greedy; >1: beam search (never sampling)")
    parser.add_argument("--dtype", default="auto", choices=tuple(DTYPES), help="auto: bfloat16 on CUDA, else float32")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def run(args: argparse.Namespace) -> None:
    from accelerate import PartialState

    from .run import caption_dataset

    presets = [p.strip() for p in args.preset.split(",") if p.strip()] if args.preset else []
    result = caption_dataset(
        args.model, args.data, args.output, presets=presets, prompt=args.prompt, column=args.column,
        max_new_tokens=args.max_new_tokens, min_new_tokens=args.min_new_tokens, batch_size=args.batch_size,
        split=args.split, shard_size=args.shard_size, streaming=args.streaming, data_format=args.format,
        image_column=args.image_column, num_beams=args.num_beams, dtype=DTYPES[args.dtype],
        progress=not args.no_progress,
    )
    if PartialState().is_main_process:
        empty = f", {result.empty_captions} captions empty (see the warning)" if result.empty_captions else ""
        print(
            f"{result.output_dir}: split {result.split!r}, {result.captioned} rows captioned into "
            f"{', '.join(result.columns)}{empty} ({result.skipped_images} unreadable images left out), "
            f"{result.shards} shards; {result.images_per_s:.2f} images/s in this run"
        )


def main(argv: list[str] | None = None) -> int:
    """Console entry point; returns the exit code (0, or 2 for input errors and missing packages)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return run_main(build_parser(), run, ValueError, argv)


if __name__ == "__main__":
    sys.exit(main())
