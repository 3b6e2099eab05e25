# Copyright 2026 The tips-hf authors. Licensed under the Apache License, Version 2.0.
"""`tips-export`: a saved TipsModel folder → ONNX or `torch.export` programs of its two towers, for serving.

A folder of a DPT model (`TipsForSemanticSegmentation`, `TipsForDepthEstimation`, `TipsForNormalEstimation`) gives
one file, `segmentation_model` / `depth_model` / `normals_model`, for inputs whose sides are multiples of 28.

    tips-export onnx  --model DIR --output OUT    # vision_model.onnx, text_model.onnx, processor files, README.md
    tips-export torch --model DIR --output OUT    # vision_model.pt2,  text_model.pt2,  processor files, README.md

Both reload what they wrote and compare it with eager PyTorch (batch 1 and 2, a square and a non-square size,
padded texts); a difference above 1e-4 fails the export. Input problems exit with code 2 and a one-line message.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from .._extras import is_missing

PROG = "tips-export"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="format", required=True)
    for name, what in (("onnx", "ONNX (opset 18) via torch.onnx.export(dynamo=True)"), ("torch", "torch.export .pt2")):
        command = sub.add_parser(name, help=what, description=what)
        command.add_argument("--model", required=True, help="folder with a saved TipsModel or DPT model (+ processor)")
        command.add_argument("--output", required=True, help="output folder (written atomically)")
        command.add_argument("--overwrite", action="store_true", help="replace a non-empty output folder")
        command.add_argument("--no-verify", action="store_true", help="skip the parity check against PyTorch")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point; returns the exit code (0, or 2 for input errors)."""
    args = build_parser().parse_args(argv)
    model_dir = Path(args.model)
    if not model_dir.is_dir():
        print(f"{PROG}: error: model directory not found: {model_dir}", file=sys.stderr)
        return 2
    if args.format == "onnx":
        missing = [name for name in ("onnx", "onnxscript", "onnxruntime", "onnx_ir") if is_missing(name)]
        if missing:
            print(
                f"{PROG}: error: ONNX export needs {', '.join(missing)}: pip install 'tips-hf[export]'", file=sys.stderr
            )
            return 2

    from tips_hf import TipsProcessor

    from .exporters import export

    try:
        model = _model_class(model_dir).from_pretrained(str(model_dir))
    except (OSError, ValueError, TypeError, KeyError) as error:
        print(
            f"{PROG}: error: cannot load a TipsModel from {model_dir}: {str(error).strip().splitlines()[0]}",
            file=sys.stderr,
        )
        return 2
    try:
        processor = TipsProcessor.from_pretrained(str(model_dir))
    except (OSError, ValueError, TypeError, KeyError):
        processor = None
        print(f"{PROG}: warning: no processor files in {model_dir}; exporting the model only", file=sys.stderr)
    try:
        result = export(
            model, processor, args.output, fmt=args.format, verify=not args.no_verify, overwrite=args.overwrite
        )
    except FileExistsError as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return 2
    print(json.dumps(result.to_json()))
    return 0


def _model_class(model_dir: Path):
    """TipsModel, or the DPT class named in the folder's config (`architectures`)."""
    from tips_hf import TipsModel

    from .exporters import DENSE_KINDS

    try:
        architectures = json.loads((model_dir / "config.json").read_text()).get("architectures") or []
    except (OSError, ValueError):
        architectures = []
    dense = [name for name in architectures if name in DENSE_KINDS]
    if dense:
        from tips_hf.modeling import modeling_dense_tips

        return getattr(modeling_dense_tips, dense[0])
    return TipsModel


if __name__ == "__main__":
    sys.exit(main())
