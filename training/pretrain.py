#!/usr/bin/env python
"""Pretrain TIPS.

    accelerate launch training/pretrain.py --config training/configs/tiny-cpu.yaml [--output_dir D] [--max_steps N]
        [--save_steps N] [--logging_steps N] [--eval_steps N] [--resume_from_checkpoint latest|PATH] [--seed S]
        [--section.key VALUE ...] [section.key=value ...]

Any configuration key can be overridden as `--section.key VALUE` or `section.key=value` (e.g. `objective.recipe=v1`,
`--data.num_workers 4`); `--help` lists every key with its type, default and meaning. A config may build on others
(`base: [FILE, ...]`); `--print-config` prints the resolved settings, each with the file that set it, and exits.
Writes OUTPUT_DIR/metrics.jsonl, checkpoints OUTPUT_DIR/checkpoint-<step>, TensorBoard logs, and the final
TipsModel + processor to OUTPUT_DIR/final.
"""

import argparse
import logging
import sys

from tips_hf._paths import MissingModelError
from tips_hf.pretraining import PretrainConfig, train
from tips_hf.pretraining.config import add_config_arguments, config_overrides, format_config

SHORTCUTS = ("output_dir", "max_steps", "save_steps", "logging_steps", "eval_steps", "resume_from_checkpoint", "seed")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     allow_abbrev=False)
    add_config_arguments(parser, PretrainConfig, {f"training.{name}": f"--{name}" for name in SHORTCUTS})
    args = parser.parse_intermixed_args(argv)  # section.key=value may stand before or after the options
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        config = PretrainConfig.load(args.config, config_overrides(args))
    except ValueError as error:
        print(f"pretrain.py: error: {error}", file=sys.stderr)
        return 2
    if args.print_config:
        print(format_config(config), end="")
        return 0
    try:
        result = train(config)
    except MissingModelError as error:  # a model folder that an earlier run has not written yet
        print(f"pretrain.py: error: {error}", file=sys.stderr)
        return 2
    if result.stopped_by_signal:  # the trainer has said where the checkpoint is and how to resume
        return 128 + result.stopped_by_signal
    if result.metrics:
        print("final evaluation:")
        for key, value in result.metrics.items():
            print(f"  {key:45s} {value:.4f}")
    print(f"final model: {result.final_model_dir}  ({result.wall_time_s:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
