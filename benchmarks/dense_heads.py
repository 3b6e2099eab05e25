"""Compare dense heads (linear, MLP, DPT; frozen backbone or LoRA) on a pretrained backbone, on the embedded scenes.

Each row is `training/finetune.py` with a shipped config (`finetune_{segmentation,depth}[_dpt]_tiny.yaml`: 300 steps,
batch 32, each head with its config's learning rate) and `model.head` / `lora.enabled` overridden, in this process.

    python benchmarks/dense_heads.py [--base outputs/tiny-cpu/final] [--out docs/dense_heads.jsonl]

Writes one JSON line per run (task, head, LoRA, trainable parameters, held-out scores, seconds) and prints a Markdown
table. Segmentation reports mIoU over all 9 classes and over the 8 shapes (`object_mean_iou`: a head that predicts
the background everywhere scores 0 there); depth reports the RMSE of the drawing order.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from tips_hf.finetuning import finetune, load_finetune_config

CONFIGS = {
    ("segmentation", "dpt"): "training/configs/finetune_segmentation_dpt_tiny.yaml",
    ("segmentation", "patch"): "training/configs/finetune_segmentation_tiny.yaml",
    ("depth", "dpt"): "training/configs/finetune_depth_dpt_tiny.yaml",
    ("depth", "patch"): "training/configs/finetune_depth_tiny.yaml",
}
RUNS = [("linear", False), ("mlp", False), ("mlp", True), ("dpt", False), ("dpt", True)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", default="outputs/tiny-cpu/final", help="the pretrained TipsModel folder")
    parser.add_argument("--out", type=Path, default=Path("docs/dense_heads.jsonl"))
    parser.add_argument("--tasks", nargs="+", default=["segmentation", "depth"])
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as work:
        for task in args.tasks:
            for head, lora in RUNS:
                path = CONFIGS[(task, "dpt" if head == "dpt" else "patch")]
                config = load_finetune_config(path, [
                    f"model.base={args.base}", f"model.head={head}", f"lora.enabled={str(lora).lower()}",
                    f"training.output_dir={work}/{task}-{head}-{lora}",
                ])
                result = finetune(config)
                row = {"task": task, "head": head, "lora": lora, "config": path,
                       "trainable_parameters": result["trainable_parameters"], **result["eval"],
                       "seconds": result["wall_time_s"]}
                rows.append(row)
                print(json.dumps(row), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in rows))
    tmp.replace(args.out)
    print("\n| task | head | LoRA | trainable | mIoU (all / shapes) or RMSE | s |\n|---|---|---|---|---|---|")
    for r in rows:
        score = (f"{r['mean_iou']:.3f} / {r['object_mean_iou']:.3f}" if r["task"] == "segmentation"
                 else f"{r['rmse']:.3f}")
        print(f"| {r['task']} | {r['head']} | {'yes' if r['lora'] else 'no'} | {r['trainable_parameters']:,} | "
              f"{score} | {r['seconds']:.0f} |")


if __name__ == "__main__":
    main()
