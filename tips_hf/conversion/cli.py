"""`tips-convert`: move TIPS weights between formats, with measured parity.

tips-convert official --vision V.npz --text T.npz [--tokenizer tokenizer.model]
                      [--preset NAME | --vision-heads N --text-heads N] --output DIR [--verify EXPECTED.npz]
tips-convert official --vision V.npz [--preset NAME | --vision-heads N] --output DIR     (TipsVisionModel folder)
tips-convert dpt --vision V.npz [--preset NAME | --vision-heads N] --decoder D.npz|D.zip
                 --task segmentation|depth|normals [--layers I J K L] [--min-depth M --max-depth M] --output DIR
tips-convert to-transformers --model DIR --output DIR      (TipsModel → Tipsv2Model; TipsFor* DPT → Tipsv2DptFor*)
"""

from __future__ import annotations

import argparse
import json
import sys

from ..modeling.configuration_tips import PRESETS
from .layouts import LayoutError
from .writer import DEFAULT_MAX_SHARD_SIZE


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--output", required=True, help="folder to write (created atomically)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing non-empty output folder")
    parser.add_argument(
        "--max-shard-size", default=DEFAULT_MAX_SHARD_SIZE, help=f"safetensors shard size (default {DEFAULT_MAX_SHARD_SIZE})"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def _add_npz_source(parser: argparse.ArgumentParser, verify_help: str) -> None:
    parser.add_argument("--vision", required=True, help="vision tower .npz")
    parser.add_argument("--text", help="text tower .npz (official: without it, a TipsVisionModel folder is written)")
    parser.add_argument("--tokenizer", dest="tokenizer_path", help="SentencePiece tokenizer.model to ship with the model")
    parser.add_argument("--preset", choices=sorted(PRESETS), help="released variant (checked against the arrays)")
    parser.add_argument("--vision-heads", type=int, help="attention heads of the vision tower (unreleased widths)")
    parser.add_argument("--text-heads", type=int, help="attention heads of the text tower (unreleased widths)")
    parser.add_argument("--image-size", type=int, dest="image_resolution",
                        help="processor image side (default: the preset's, else 448)")
    parser.add_argument("--verify", metavar="EXPECTED.npz", help=verify_help)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tips-convert", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    official = sub.add_parser("official", help="official PyTorch .npz pair → TipsModel folder")
    _add_npz_source(official, "re-run the written model on the inputs stored in this file and print max|Δ|")
    _add_common(official)
    scenic = sub.add_parser("scenic", help="official JAX/Scenic .npz pair → TipsModel folder")
    _add_npz_source(scenic, "re-run the written model on the NHWC inputs stored in this Scenic file, print max|Δ|")
    _add_common(scenic)
    dpt = sub.add_parser("dpt", help="official vision .npz + released DPT decoder (.npz/.zip) → TipsFor* folder")
    dpt.add_argument("--vision", required=True, help="official PyTorch vision tower .npz")
    dpt.add_argument("--decoder", required=True, help="released decoder archive (tips_v2_*_{task}_dpt.zip or .npz)")
    dpt.add_argument("--task", required=True, choices=("segmentation", "depth", "normals"))
    dpt.add_argument("--preset", choices=sorted(PRESETS), help="released variant (checked against the arrays)")
    dpt.add_argument("--vision-heads", type=int, help="attention heads of the vision tower (unreleased widths)")
    dpt.add_argument("--layers", type=int, nargs=4, metavar="I", help="0-based blocks the decoder reads "
                     "(default: the official choice, e.g. B/14 2 5 8 11)")
    dpt.add_argument("--min-depth", type=float, help="depth range of the bins in metres (default 0.001)")
    dpt.add_argument("--max-depth", type=float, help="(default 10)")
    dpt.add_argument("--image-size", type=int, dest="image_resolution",
                     help="processor image side (default: the preset's, else 448)")
    dpt.add_argument("--verify", metavar="EXPECTED.npz", help="re-run on the inputs of a dense expected file, print max|Δ|")
    _add_common(dpt)
    native = sub.add_parser(
        "to-transformers",
        help="TipsModel folder → transformers-native Tipsv2Model folder; DPT folder → Tipsv2DptFor* folder",
    )
    native.add_argument("--model", required=True, help="TipsModel folder (or any folder TipsModel reads), or a "
                        "TipsForSemanticSegmentation / TipsForDepthEstimation / TipsForNormalEstimation folder")
    _add_common(native)
    return parser


# Flags that every converter takes, stored under its parameter names (argparse `dest`) and passed on by name; the npz
# pairs add the tokenizer and the text heads, dpt its layers and depth range.
_SHARED_OPTIONS = ("preset", "vision_heads", "image_resolution", "verify", "max_shard_size", "overwrite")


def _options(args: argparse.Namespace, *names: str) -> dict:
    return {name: getattr(args, name) for name in names} | {"progress": not args.no_progress}


def run(args: argparse.Namespace) -> int:
    if args.command == "to-transformers":
        from .native import export_to_transformers

        out = export_to_transformers(
            args.model, args.output, args.max_shard_size, overwrite=args.overwrite, progress=not args.no_progress
        )
        architecture = json.loads((out / "config.json").read_text())["architectures"][0]
        print(f"wrote {out} (loads with transformers.{architecture}.from_pretrained, no remote code)")
        not_carried = json.loads((out / "tips_hf_export.json").read_text())["not_carried"]
        for item in not_carried:
            print(f"  not carried: {item}")
        return 0
    if args.command == "dpt":
        return _run_dpt(args)
    if args.text is None and args.command != "official":
        raise ValueError(f"tips-convert {args.command} needs --text (only `official` converts a vision tower alone).")
    options = _options(args, *_SHARED_OPTIONS, "tokenizer_path", "text_heads")
    if args.command == "scenic":
        from .scenic import convert_scenic

        result = convert_scenic(args.vision, args.text, args.output, **options)
    else:
        from .official import convert_official

        result = convert_official(args.vision, args.text, args.output, **options)
    if args.text is None:  # convert_official wrote the vision tower alone
        print(f"wrote {result.output_dir} (TipsVisionModel)")
        print(f"  vision: {_describe_vision(result.config)}")
        return 0
    t = result.config.text_config
    print(f"wrote {result.output_dir}")
    print(f"  vision: {_describe_vision(result.config.vision_config)}")
    print(
        f"  text:   {t.num_hidden_layers} layers, width {t.hidden_size}, {t.num_attention_heads} heads, "
        f"mlp {t.intermediate_size}, vocab {t.vocab_size}"
    )
    _print_parity(result.parity)
    return 0


def _describe_vision(v) -> str:
    return (
        f"{v.num_hidden_layers} layers, width {v.hidden_size}, {v.num_attention_heads} heads, {v.ffn_type} "
        f"{v.intermediate_size}, grid {v.position_grid_size}x{v.position_grid_size}"
    )


def _print_parity(parity: dict[str, float]) -> None:
    if parity:
        from .verify import format_parity

        print("parity against the reference outputs (float32, CPU):")
        print(format_parity(parity))


def _run_dpt(args: argparse.Namespace) -> int:
    from .dpt import convert_dpt

    options = _options(args, *_SHARED_OPTIONS, "layers", "min_depth", "max_depth")
    result = convert_dpt(args.vision, args.decoder, args.output, args.task, **options)
    config = result.config
    print(f"wrote {result.output_dir} ({config.architectures[0]})")
    print(f"  vision: {_describe_vision(config.vision_config)}")
    head = {"segmentation": f"{config.num_labels} classes", "depth": f"{config.num_depth_bins} bins on "
            f"[{config.min_depth}, {config.max_depth}] m", "normals": "3 outputs"}[config.task]
    print(f"  DPT: blocks {config.backbone_out_indices}, channels {config.dpt_channels}, "
          f"levels {config.post_process_channels}, {head}")
    _print_parity(result.parity)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return run(args)
    except (LayoutError, FileExistsError, FileNotFoundError, ValueError, ImportError) as error:
        print(f"tips-convert: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
