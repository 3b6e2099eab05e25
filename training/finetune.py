#!/usr/bin/env python
"""Fine-tune TIPS with LoRA adapters.

    accelerate launch training/finetune.py --config training/configs/finetune_segmentation_tiny.yaml [key=value ...]

Dense tasks (configs with `training.task: segmentation | depth`): a new linear/MLP head on the patch grid, the
backbone frozen or adapted with LoRA; writes OUT/adapter (LoRA + head), OUT/dense_config.json, OUT/metrics.jsonl.
Contrastive domain adaptation (configs with a `lora` section and `objective` weights, the pretraining schema): the
pretraining loop with LoRA on the chosen towers, both heads and global negatives; writes OUT/final/adapter and the
merged TipsModel in OUT/final.
"""

import argparse
import json
import sys

import yaml


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Fine-tune TIPS with LoRA (see the module docstring).")
    parser.add_argument("--config", required=True)
    parser.add_argument("--output_dir", default=None)
    parser.add_argument("--max_steps", default=None)
    parser.add_argument("overrides", nargs="*", help="section.key=value")
    args = parser.parse_intermixed_args(argv)  # section.key=value may stand before or after the options
    extra = [f"training.{k}={getattr(args, k)}" for k in ("output_dir", "max_steps") if getattr(args, k)]
    try:
        with open(args.config) as handle:
            document = yaml.safe_load(handle) or {}
    except (OSError, yaml.YAMLError) as error:
        print(f"finetune.py: error: cannot read config {args.config}: {error}", file=sys.stderr)
        return 2
    try:
        if not isinstance(document, dict):
            raise ValueError(f"{args.config}: expected a mapping of config sections.")
        if (document.get("training") or {}).get("task") in ("segmentation", "depth"):
            from tips_hf.finetuning.trainer import finetune_dense, load_dense_config

            result = finetune_dense(load_dense_config(args.config, [*extra, *args.overrides]))
            print(json.dumps(result, indent=2))
            return 0
        from tips_hf.pretraining import load_config, train

        config = load_config(args.config, [*extra, *args.overrides])
    except ValueError as error:
        print(f"finetune.py: error: {error}", file=sys.stderr)
        return 2
    result = train(config)
    print(json.dumps({"final_model": str(result.final_model_dir), **result.metrics}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
