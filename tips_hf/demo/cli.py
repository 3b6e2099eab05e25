# Copyright 2026 The tips-hf authors. Licensed under the Apache License, Version 2.0.
"""`tips-demo`: serve the TIPS Gradio demo for a saved model folder, locally and offline.

    tips-demo --model DIR [--port P] [--host 127.0.0.1] [--share false] [--depth DIR] [--normals DIR] [--size N]

Tabs: PCA of the patch features, zero-shot segmentation from your labels, image–text similarity for both heads, and
depth / surface normals when DPT folders (`TipsForDepthEstimation` / `TipsForNormalEstimation`) are given.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

PROG = "tips-demo"


def _boolean(text: str) -> bool:
    value = text.strip().lower()
    if value in ("true", "1", "yes"):
        return True
    if value in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True, help="folder with a saved TipsModel and TipsProcessor")
    parser.add_argument("--port", type=int, default=7860, help="port to serve on (default 7860)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    parser.add_argument(
        "--share", type=_boolean, default=False, help="create a public gradio.live link (default false)"
    )
    parser.add_argument("--depth", default=None, help="folder with a saved TipsForDepthEstimation (adds a tab)")
    parser.add_argument("--normals", default=None, help="folder with a saved TipsForNormalEstimation (adds a tab)")
    parser.add_argument("--size", type=int, default=None, help="square input side (default: the processor's)")
    parser.add_argument("--device", default="cpu", help="torch device (default cpu)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point: serves until interrupted; returns 2 for input errors."""
    args = build_parser().parse_args(argv)
    for flag in ("model", "depth", "normals"):
        folder = getattr(args, flag)
        if folder is not None and not Path(folder).is_dir():
            print(f"{PROG}: error: --{flag} folder not found: {folder}", file=sys.stderr)
            return 2
    try:
        import gradio  # noqa: F401
    except ImportError:
        print(f"{PROG}: error: the demo needs gradio: pip install 'tips-hf[demo]'", file=sys.stderr)
        return 2
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # offline: no telemetry calls

    from .app import DemoModel, build_demo

    try:
        demo_model = DemoModel(args.model, args.depth, args.normals, size=args.size, device=args.device)
    except (OSError, ValueError, TypeError, KeyError) as error:
        print(f"{PROG}: error: cannot load the models: {str(error).strip().splitlines()[0]}", file=sys.stderr)
        return 2
    demo = build_demo(demo_model)
    print(f"{PROG}: serving on http://{args.host}:{args.port}", flush=True)
    demo.queue(default_concurrency_limit=1).launch(
        server_name=args.host, server_port=args.port, share=args.share, show_error=True, inbrowser=False
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
