"""`tips-convert`: move TIPS weights between formats, with measured parity.

tips-convert official --vision V.npz --text T.npz [--tokenizer tokenizer.model]
                      [--preset NAME | --vision-heads N --text-heads N] --output DIR [--verify EXPECTED.npz]
"""

from __future__ import annotations

import argparse
import json
import sys

from ..configuration_tips import PRESETS
from ..layouts_tips import LayoutError


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--output", required=True, help="folder to write (created atomically)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing non-empty output folder")
    parser.add_argument("--max-shard-size", default="2GB", help="safetensors shard size (default 2GB)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def _add_npz_source(parser: argparse.ArgumentParser, verify_help: str) -> None:
    parser.add_argument("--vision", required=True, help="vision tower .npz")
    parser.add_argument("--text", required=True, help="text tower .npz")
    parser.add_argument("--tokenizer", help="SentencePiece tokenizer.model to ship with the model")
    parser.add_argument("--preset", choices=sorted(PRESETS), help="released variant (checked against the arrays)")
    parser.add_argument("--vision-heads", type=int, help="attention heads of the vision tower (unreleased widths)")
    parser.add_argument("--text-heads", type=int, help="attention heads of the text tower (unreleased widths)")
    parser.add_argument("--image-size", type=int, help="processor image side (default: the preset's, else 448)")
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
    native = sub.add_parser("to-transformers", help="TipsModel folder → transformers-native Tipsv2Model folder")
    native.add_argument("--model", required=True, help="TipsModel folder (or any folder TipsModel reads)")
    _add_common(native)
    return parser


def run(args: argparse.Namespace) -> int:
    from .verify import format_parity

    progress = not args.no_progress
    if args.command == "to-transformers":
        from .native import export_to_transformers

        out = export_to_transformers(
            args.model, args.output, args.max_shard_size, overwrite=args.overwrite, progress=progress
        )
        print(f"wrote {out} (loads with transformers.Tipsv2Model.from_pretrained, no remote code)")
        not_carried = json.loads((out / "tips_hf_export.json").read_text())["not_carried"]
        for item in not_carried:
            print(f"  not carried: {item}")
        return 0
    common = dict(
        tokenizer_path=args.tokenizer,
        preset=args.preset,
        image_resolution=args.image_size,
        verify=args.verify,
        max_shard_size=args.max_shard_size,
        overwrite=args.overwrite,
        progress=progress,
        vision_heads=args.vision_heads,
        text_heads=args.text_heads,
    )
    if args.command == "scenic":
        from .scenic import convert_scenic

        result = convert_scenic(args.vision, args.text, args.output, **common)
    elif args.command == "official":
        from .official import convert_official

        result = convert_official(args.vision, args.text, args.output, **common)
    else:  # pragma: no cover - argparse restricts the choices
        raise AssertionError(args.command)
    config = result.config
    v, t = config.vision_config, config.text_config
    print(f"wrote {result.output_dir}")
    print(
        f"  vision: {v.num_hidden_layers} layers, width {v.hidden_size}, {v.num_attention_heads} heads, "
        f"{v.ffn_type} {v.intermediate_size}, grid {v.position_grid_size}x{v.position_grid_size}"
    )
    print(
        f"  text:   {t.num_hidden_layers} layers, width {t.hidden_size}, {t.num_attention_heads} heads, "
        f"mlp {t.intermediate_size}, vocab {t.vocab_size}"
    )
    if result.parity:
        print("parity against the reference outputs (float32, CPU):")
        print(format_parity(result.parity))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return run(args)
    except (LayoutError, FileExistsError, FileNotFoundError, ValueError) as error:
        print(f"tips-convert: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
