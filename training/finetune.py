#!/usr/bin/env python
"""Fine-tune TIPS with LoRA adapters.

    accelerate launch training/finetune.py --config training/configs/finetune_segmentation_tiny.yaml
        [--output_dir D] [--max_steps N] [--section.key VALUE ...] [section.key=value ...]

Dense tasks (configs with `training.task: segmentation | depth`): a new linear / MLP head on the patch grid or the
official DPT decoder, the backbone frozen or adapted with LoRA, trained by `transformers.Trainer`
(`tips_hf.finetuning.DenseTrainer`: process-count-invariant batches, gradient accumulation, evaluation every
`training.eval_steps` spread over the processes, checkpoints every `training.save_steps`, stop-and-save on SIGTERM /
SIGUSR1, exact resume); writes OUT/adapter (LoRA + head), OUT/head.safetensors (frozen backbone) or OUT/model (DPT),
OUT/dense_config.json and OUT/metrics.jsonl.
Contrastive domain adaptation (configs with a `lora` section and `objective` weights, the pretraining schema): the
pretraining loop with LoRA on the chosen towers, both heads and global negatives; writes OUT/final/adapter and the
merged TipsModel in OUT/final.
`--help` lists the settings of the given config's schema (the dense one without `--config`).
"""

import argparse
import json
import sys

from tips_hf._paths import MissingModelError
from tips_hf.finetuning import DenseFinetuneConfig, finetune_dense, finetune_schema
from tips_hf.pretraining import train
from tips_hf.pretraining.config import add_config_arguments, config_overrides, format_config


def main(argv: list[str] | None = None) -> int:
    first = argparse.ArgumentParser(add_help=False)
    first.add_argument("--config")
    known, _ = first.parse_known_args(argv)
    try:
        schema = finetune_schema(known.config)
    except ValueError as error:
        print(f"finetune.py: error: {error}", file=sys.stderr)
        return 2
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     allow_abbrev=False)
    add_config_arguments(parser, schema, {"training.output_dir": "--output_dir", "training.max_steps": "--max_steps"})
    args = parser.parse_intermixed_args(argv)  # section.key=value may stand before or after the options
    if args.config is None:
        parser.error("--config is required")
    try:
        config = schema.load(args.config, config_overrides(args))
    except ValueError as error:
        print(f"finetune.py: error: {error}", file=sys.stderr)
        return 2
    if args.print_config:
        print(format_config(config), end="")
        return 0
    try:
        if isinstance(config, DenseFinetuneConfig):
            result = finetune_dense(config)
            print(json.dumps(result, indent=2))
            return 128 + result["stopped_by_signal"] if result.get("stopped_by_signal") else 0
        result = train(config)
    except MissingModelError as error:  # a model folder that an earlier run has not written yet
        print(f"finetune.py: error: {error}", file=sys.stderr)
        return 2
    if result.stopped_by_signal:
        return 128 + result.stopped_by_signal
    print(json.dumps({"final_model": str(result.final_model_dir), **result.metrics}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
