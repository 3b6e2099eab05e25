"""Run the main job (or the supervised bound) on scene variants that `SceneConfig` does not offer: another set of
shapes, or fewer object colours. A research harness for docs/results.md, not part of the package.

    python docs/tuning/scene_variants.py --shapes circle,ring,crescent,triangle,cross,bar,corner,star \
        --colors red,green,blue,yellow -- training/pretrain.py --config training/configs/tiny-cpu.yaml eval.split=test
    python docs/tuning/scene_variants.py --shapes ... -- benchmarks/shape_upper_bound.py --steps 800

It replaces the scenes module's shape and colour lists in this process (the classes, the captions, the zero-shot
prompts and the masks all follow them), and, when a script after `--` is `training/pretrain.py`, builds a
SentencePiece tokenizer on the variant's captions so that every new word is one token, as in the committed scenes.
New shapes: `bar` (a 3.3:1 rectangle) and `corner` (an L), besides the eight of `tips_hf.data.SHAPES`.
"""

from __future__ import annotations

import argparse
import runpy
import sys
import tempfile
from pathlib import Path

import numpy as np

NEW_POLYGONS = {
    "bar": np.array([[-1.0, -0.3], [1.0, -0.3], [1.0, 0.3], [-1.0, 0.3]]),
    "corner": np.array([[-0.85, -0.9], [-0.2, -0.9], [-0.2, 0.3], [0.85, 0.3], [0.85, 0.9], [-0.85, 0.9]]),
}


def patch_scenes(shapes: list[str] | None, colors: list[str] | None) -> None:
    import tips_hf.data as data
    from tips_hf.data import scenes

    scenes._UNIT_POLYGONS.update(NEW_POLYGONS)
    if shapes:
        unknown = sorted(set(shapes) - set(scenes.SHAPES) - set(NEW_POLYGONS))
        if unknown:
            raise SystemExit(f"--shapes: unknown {unknown}; known: {[*scenes.SHAPES, *NEW_POLYGONS]}")
        scenes.SHAPES = data.SHAPES = tuple(shapes)
        scenes.CLASS_NAMES = data.CLASS_NAMES = ("background", *shapes)
    if colors:
        unknown = sorted(set(colors) - set(scenes.COLOR_RGB))
        if unknown:
            raise SystemExit(f"--colors: unknown {unknown}; known: {list(scenes.COLOR_RGB)}")
        scenes.COLORS = data.COLORS = tuple(colors)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shapes", type=lambda s: s.split(","), help="comma-separated shape names (8 keep chance 1/8)")
    parser.add_argument("--colors", type=lambda s: s.split(","), help="comma-separated colour names")
    parser.add_argument("script", help="the script to run, then its arguments")
    parser.add_argument("args", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    patch_scenes(args.shapes, args.colors)
    argv = list(args.args)
    if Path(args.script).name == "pretrain.py" and not any(a.startswith("model.tokenizer") for a in argv):
        from tips_hf.data.build_tokenizer import build

        tokenizer = build(Path(tempfile.mkdtemp()) / "variant_tokenizer.model")
        argv.append(f"model.tokenizer={tokenizer}")
    sys.argv = [args.script, *argv]
    runpy.run_path(args.script, run_name="__main__")


if __name__ == "__main__":
    main()
