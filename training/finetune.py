#!/usr/bin/env python
"""Fine-tune TIPS with transformers' Trainer.

    accelerate launch training/finetune.py --config training/configs/finetune_segmentation_tiny.yaml
        [--output_dir D] [--max_steps N] [--section.key VALUE ...] [section.key=value ...]

`training.task` picks the job:
- segmentation | depth: a new linear / MLP head on the patch grid or the official DPT decoder, the backbone frozen or
  adapted with LoRA; writes OUT/adapter (LoRA + head), OUT/head.safetensors (frozen backbone) or OUT/model (DPT),
  OUT/dense_config.json and OUT/metrics.jsonl.
- contrastive: both heads against their captions (alt-text, synthetic), negatives from every process, LoRA on
  `lora.preset`; writes the merged TipsModel in OUT/final (its adapter in OUT/final/adapter) and OUT/metrics.jsonl.
Every task runs on `transformers.Trainer` (`tips_hf.finetuning`): process-count-invariant batches, gradient
accumulation, evaluation every `training.eval_steps` spread over the processes, checkpoints every
`training.save_steps`, stop-and-save on SIGTERM / SIGUSR1 (exit 128 + the signal), exact resume.
`--help` lists the settings of the schema (with `--config`, as that file sets them).
"""

import argparse
import json
import sys

from tips_hf._paths import MissingModelError
from tips_hf.finetuning import FinetuneConfig, finetune, finetune_schema
from tips_hf.pretraining.config import add_config_arguments, config_overrides, format_config


def main(argv: list[str] | None = None) -> int:
    first = argparse.ArgumentParser(add_help=False)
    first.add_argument("--config")
    known, _ = first.parse_known_args(argv)
    try:
        if finetune_schema(known.config) is not FinetuneConfig:
            raise ValueError(
                f"{known.config} is a pretraining config (it sets no training.task); run it with training/pretrain.py "
                "(its lora section adapts with LoRA), or set training.task: segmentation | depth | contrastive."
            )
    except ValueError as error:
        print(f"finetune.py: error: {error}", file=sys.stderr)
        return 2
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     allow_abbrev=False)
    add_config_arguments(parser, FinetuneConfig,
                         {"training.output_dir": "--output_dir", "training.max_steps": "--max_steps"})
    args = parser.parse_intermixed_args(argv)  # section.key=value may stand before or after the options
    if args.config is None:
        parser.error("--config is required")
    try:
        config = FinetuneConfig.load(args.config, config_overrides(args))
    except ValueError as error:
        print(f"finetune.py: error: {error}", file=sys.stderr)
        return 2
    if args.print_config:
        print(format_config(config), end="")
        return 0
    try:
        result = finetune(config)
    except MissingModelError as error:  # a model folder that an earlier run has not written yet
        print(f"finetune.py: error: {error}", file=sys.stderr)
        return 2
    print(json.dumps(result, indent=2))
    return 128 + result["stopped_by_signal"] if result.get("stopped_by_signal") else 0


if __name__ == "__main__":
    sys.exit(main())
