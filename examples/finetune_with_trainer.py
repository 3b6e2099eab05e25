# Copyright 2026 The tips-hf authors. Licensed under the Apache License, Version 2.0.
"""Fine-tune a TIPS model with `transformers.Trainer` + LoRA (`peft`) on the embedded spatial scenes.

Contrastive adaptation of both heads (CLS-1 ↔ alt-text, CLS-2 ↔ synthetic caption) with `TipsContrastiveTrainer`
(`Trainer` with the loss of `TipsModel(..., return_loss=True)` over the negatives of every process), image↔text
retrieval Recall@K of both heads through `compute_metrics` (the shipped `retrieval_recall` `evaluate` module) before
and after training, then: the adapter is saved with `Trainer.save_model`, reloaded with `PeftModel.from_pretrained`,
checked to reproduce the trained model's outputs, merged with `merge_and_unload()` and saved as a plain TipsModel
folder.

    python examples/finetune_with_trainer.py --output_dir outputs/finetune-trainer

Runs as-is offline, in about a minute on 2 CPU cores. `--model` defaults to the main job's model
(`outputs/tiny-cpu/final`, written by `accelerate launch training/pretrain.py --config training/configs/tiny-cpu.yaml`);
without it, a small random TipsModel with the scenes tokenizer is fine-tuned instead (a smoke run).

Writes OUTPUT_DIR/adapter (LoRA weights), OUTPUT_DIR/merged (TipsModel + processor) and OUTPUT_DIR/results.json.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from pathlib import Path
from typing import Any

import torch

MAIN_JOB_MODEL = "outputs/tiny-cpu/final"


def build_random_model(image_size: int = 84, seed: int = 0):
    """A small random TipsModel (the main job's architecture) and a processor with the scenes tokenizer."""
    from tips_hf import TipsConfig, TipsImageProcessor, TipsModel, TipsProcessor, TipsTokenizer
    from tips_hf.data.build_tokenizer import TOKENIZER_PATH

    tokenizer = TipsTokenizer(str(TOKENIZER_PATH), model_max_length=64)
    width = dict(hidden_size=64, num_attention_heads=4, intermediate_size=256)
    config = TipsConfig(
        vision_config=dict(num_hidden_layers=3, image_size=image_size, **width),
        text_config=dict(num_hidden_layers=2, vocab_size=len(tokenizer), **width),
        temperature_init_value=0.07,
    )
    torch.manual_seed(seed)
    processor = TipsProcessor(TipsImageProcessor(size={"height": image_size, "width": image_size}), tokenizer)
    return TipsModel(config), processor


def load_model(path: str | None, image_size: int):
    """(model, processor, description): a TipsModel folder, the main job's model, or a random model."""
    from tips_hf import TipsModel, TipsProcessor

    if path is None and Path(MAIN_JOB_MODEL, "config.json").is_file():
        path = MAIN_JOB_MODEL
    if path is None or path == "random":
        if path is None:
            print(f"{MAIN_JOB_MODEL} not found (run the main job first); fine-tuning a random model instead.")
        model, processor = build_random_model(image_size)
        return model, processor, "random"
    if not Path(path, "config.json").is_file():
        raise SystemExit(f"--model {path}: not a TipsModel folder (no config.json).")
    return TipsModel.from_pretrained(path), TipsProcessor.from_pretrained(path), path


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output_dir", default="outputs/finetune-trainer")
    parser.add_argument("--model", default=None, help=f"TipsModel folder (default {MAIN_JOB_MODEL}), or 'random'")
    parser.add_argument("--max_steps", type=int, default=240)
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--learning_rate", type=float, default=1e-3)
    parser.add_argument("--lora_preset", default="all", help="tips_hf.finetuning.PRESETS (both towers by default)")
    parser.add_argument("--lora_r", type=int, default=8)
    parser.add_argument("--train_examples", type=int, default=2000)
    parser.add_argument("--eval_examples", type=int, default=200)
    parser.add_argument("--image_size", type=int, default=84, help="input side of a random model (multiple of 14)")
    parser.add_argument("--logging_steps", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    from peft import PeftModel, get_peft_model
    from transformers import TrainingArguments

    from tips_hf import TipsModel
    from tips_hf.data import load_scenes_dataset
    from tips_hf.finetuning import lora_config
    from tips_hf.training_utils import ContrastiveRetrievalMetrics, TipsContrastiveTrainer, TipsDataCollator

    args = parse_args(argv)
    start = time.time()
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    out = Path(args.output_dir)
    model, processor, source = load_model(args.model, args.image_size)
    scenes = dict(image_size=112, max_objects=2)  # the scenes the main job trained on
    train_set = load_scenes_dataset("train", args.train_examples, **scenes)
    eval_set = load_scenes_dataset("validation", args.eval_examples, **scenes)

    model = get_peft_model(model, lora_config(args.lora_preset, r=args.lora_r, alpha=2 * args.lora_r))
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    print(f"model: {source}; LoRA ({args.lora_preset}, r={args.lora_r}): {trainable:,} trainable parameters")
    # The synthetic head draws one of the short/dense captions per row (as pretraining does); padding to the batch's
    # longest caption instead of 64 tokens only changes the cost (padding is masked out).
    collator = TipsDataCollator(processor, text_column="alt_text", synthetic_column="synthetic_captions",
                                seed=args.seed, text_kwargs={"padding": "longest"})
    metrics = ContrastiveRetrievalMetrics(ks=(1, 5))
    training_args = TrainingArguments(
        output_dir=str(out / "trainer"),
        max_steps=args.max_steps,
        per_device_train_batch_size=args.batch_size,
        per_device_eval_batch_size=100,
        learning_rate=args.learning_rate,
        lr_scheduler_type="cosine",
        warmup_steps=max(1, args.max_steps // 10),
        weight_decay=0.0,
        logging_steps=args.logging_steps,
        eval_strategy="no",
        save_strategy="no",
        report_to="none",
        remove_unused_columns=False,  # the collator reads the raw image and caption columns
        dataloader_num_workers=0,
        seed=args.seed,
        use_cpu=not torch.cuda.is_available(),
        disable_tqdm=True,
    )
    trainer = TipsContrastiveTrainer(  # Trainer, with the negatives of every process (as pretraining)
        model=model,
        args=training_args,
        train_dataset=train_set,
        eval_dataset=eval_set,
        data_collator=collator,
        processing_class=processor,  # saved next to the adapter by save_model
        compute_metrics=metrics,
        preprocess_logits_for_metrics=metrics.preprocess_logits_for_metrics,
    )
    before = trainer.evaluate()
    trainer.train()
    after = trainer.evaluate()
    losses = [record["loss"] for record in trainer.state.log_history if "loss" in record]

    # Save the adapter, reload it on a fresh copy of the base model, check it reproduces the trained outputs.
    adapter_dir = out / "adapter"
    trainer.save_model(str(adapter_dir))
    batch = collator([eval_set[i] for i in range(min(16, len(eval_set)))])
    batch.pop("return_loss")
    model.eval()
    with torch.no_grad():
        trained = model(**batch)
        if source == "random":
            base, _ = build_random_model(args.image_size)
        else:
            base = TipsModel.from_pretrained(source)
        reloaded = PeftModel.from_pretrained(base, adapter_dir).eval()
        again = reloaded(**batch)
        merged = reloaded.merge_and_unload().eval()
        folded = merged(**batch)

    def gap(a: Any, b: Any) -> float:
        keys = ("image_embeds", "synthetic_image_embeds", "text_embeds", "synthetic_text_embeds")
        return max(float((a[k] - b[k]).abs().max()) for k in keys)

    merged_dir = out / "merged"
    merged.save_pretrained(merged_dir)
    processor.save_pretrained(merged_dir)
    result = {
        "model": source,
        "steps": trainer.state.global_step,
        "trainable_parameters": trainable,
        "train_loss_first": losses[0] if losses else None,
        "train_loss_last": losses[-1] if losses else None,
        "train_losses": losses,
        "eval_before": before,
        "eval_after": after,
        "reloaded_max_abs_diff": gap(trained, again),  # same weights, same ops: expected 0
        "merged_max_abs_diff": gap(trained, folded),  # W + BA folded: float32 rounding only
        "wall_time_s": round(time.time() - start, 1),
    }
    (out / "results.json").write_text(json.dumps(result, indent=2) + "\n")
    for head in ("alt_text", "synthetic"):
        key = f"{head}_image_to_text_recall@5"
        print(f"{head} head R@5 image→text: {before['eval_' + key]:.3f} → {after['eval_' + key]:.3f}")
    print(f"eval loss {before['eval_loss']:.3f} → {after['eval_loss']:.3f}; train loss {losses[0]:.3f} → "
          f"{losses[-1]:.3f}; reloaded adapter max |Δ| {result['reloaded_max_abs_diff']:.1e}, merged "
          f"{result['merged_max_abs_diff']:.1e}; {result['wall_time_s']} s → {out}")
    if not (math.isfinite(result["reloaded_max_abs_diff"]) and result["reloaded_max_abs_diff"] <= 1e-6):
        raise SystemExit("the reloaded adapter does not reproduce the trained model's outputs.")
    return result


if __name__ == "__main__":
    main()
