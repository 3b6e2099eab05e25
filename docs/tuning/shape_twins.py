"""Run the main job with shape twins: hard in-batch negatives that differ from their scene only in shape.

    python docs/tuning/shape_twins.py -- training/pretrain.py --config training/configs/tiny-cpu.yaml eval.split=test

Training scene 2j+1 is drawn from scene 2j's random stream with every object's shape replaced by another one (the
shape list rotated by 1-7 places): the same background, colours, sizes, positions and caption wording, except where a
new silhouette changes an occlusion and the placement re-draws. Every batch keeps twins together (pairs are shuffled,
not scenes), so each scene's hardest negative differs only in shape and the contrastive loss can only separate the
two through it. The validation and test splits are untouched. A research harness for docs/results.md, not
part of the package; the labels of the twin rows are not corrected (pretraining does not read them).
"""

from __future__ import annotations

import argparse
import runpy
import sys

import torch


def patch() -> None:
    from tips_hf.data import scenes
    from tips_hf.pretraining.data import GlobalBatchSampler

    train, render = scenes._split_id("train"), scenes._render_scene

    def render_with_twins(cfg, split_id: int, index: int):
        if split_id != train or index % 2 == 0:
            return render(cfg, split_id, index)
        shapes = scenes.SHAPES
        shift = 1 + (index // 2) % (len(shapes) - 1)
        scenes.SHAPES = shapes[shift:] + shapes[:shift]  # the same draws name other shapes
        try:
            return render(cfg, split_id, index - 1)
        finally:
            scenes.SHAPES = shapes

    def pairs_together(self):
        batch, order, order_epoch = self.start_batch, None, None
        while True:
            epoch, position = divmod(batch, self.per_epoch)
            if epoch != order_epoch:
                generator = torch.Generator().manual_seed(self.seed + epoch)
                pairs = torch.randperm(self.num_samples // 2, generator=generator)
                order, order_epoch = torch.stack([2 * pairs, 2 * pairs + 1], 1).flatten(), epoch
            start = position * self.global_batch + self.rank * self.batch_size
            yield [(epoch, int(i)) for i in order[start : start + self.batch_size]]
            batch += 1

    scenes._render_scene = render_with_twins
    GlobalBatchSampler.__iter__ = pairs_together


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("script", help="the script to run (training/pretrain.py), then its arguments")
    parser.add_argument("args", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    patch()
    sys.argv = [args.script, *args.args]
    runpy.run_path(args.script, run_name="__main__")


if __name__ == "__main__":
    main()
