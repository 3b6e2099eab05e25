#!/usr/bin/env python
"""How much drop-path perturbs the v2 teacher's tokens: the un-masked student view (drop-path on, what
`objective.v2_teacher: student_view` distils from) against a no-grad pass without drop-path (`clean_pass`), on a
trained toy model and validation scenes. Prints one JSON line: the mean cosine similarity of CLS and patch tokens
between the two, over `--repeats` drop-path draws, and the extra FLOPs of the clean pass per training step.

    python benchmarks/v2_teacher_check.py OUTPUT_DIR/final [--drop-path 0.1] [--images 64]
    python benchmarks/v2_teacher_check.py OUTPUT_DIR/checkpoint-250 --checkpoint   # + the targets themselves

With `--checkpoint` (a pretraining checkpoint: student, EMA heads and centres, plus the run's config.yaml one folder
up) it also compares the teacher targets (centred, sharpened softmax at the run's final τ_t): how often the target's
top prototype agrees and the mean total-variation distance between the two target distributions, CLS and patches.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from tips_hf import TipsModel
from tips_hf.data import load_scenes_dataset
from tips_hf.pretraining.trainer import set_drop_path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("model")
    parser.add_argument("--drop-path", type=float, default=0.1)
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=4)
    parser.add_argument("--size", type=int, default=84)
    parser.add_argument("--checkpoint", action="store_true", help="MODEL is a pretraining checkpoint folder")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    module = None
    if args.checkpoint:
        from tips_hf.pretraining import load_config
        from tips_hf.pretraining.checkpointing import load_module_state
        from tips_hf.pretraining.meta_arch import TipsPretrainingModel
        from tips_hf.pretraining.trainer import build_student, build_tokenizer

        config = load_config(Path(args.model).parent / "config.yaml")
        module = TipsPretrainingModel(build_student(config, len(build_tokenizer(config))), config)
        load_module_state(module, args.model, exclude=())
        model = module.student
    else:
        model = TipsModel.from_pretrained(args.model)
    set_drop_path(model, args.drop_path)
    scenes = load_scenes_dataset("validation", args.images, image_size=112)
    pixels = torch.stack([
        torch.from_numpy(np.array(row["image"].convert("RGB").resize((args.size, args.size))))
        .permute(2, 0, 1).float() / 255.0 for row in scenes
    ])
    vision = model.vision_model
    first = 1 + vision.config.num_register_tokens
    targets = {}
    with torch.no_grad():
        clean = vision.eval()(pixel_values=pixels).last_hidden_state
        cls, patches = [], []
        vision.train()
        for _ in range(args.repeats):
            noisy = vision(pixel_values=pixels).last_hidden_state
            cls.append(F.cosine_similarity(noisy[:, 0], clean[:, 0], dim=-1).mean())
            patches.append(F.cosine_similarity(noisy[:, first:], clean[:, first:], dim=-1).mean())
            if module is not None:
                tau = module.config.objective.teacher_temperature
                for name, head, center, a, b in (
                    ("cls", module.teacher_cls_head, module.dino_loss.center, noisy[:, 0], clean[:, 0]),
                    ("patch", module.teacher_patch_head, module.ibot_loss.center, noisy[:, first:], clean[:, first:]),
                ):
                    p, q = center(head(a), tau), center(head(b), tau)
                    agree = (p.argmax(-1) == q.argmax(-1)).float().mean()
                    tv = 0.5 * (p - q).abs().sum(-1).mean()
                    targets.setdefault(f"{name}_target_top1_agreement", []).append(agree)
                    targets.setdefault(f"{name}_target_total_variation", []).append(tv)
    print(json.dumps({
        "model": args.model,
        "drop_path_rate": args.drop_path,
        "cls_cosine_droppath_vs_clean": round(float(torch.stack(cls).mean()), 4),
        "patch_cosine_droppath_vs_clean": round(float(torch.stack(patches).mean()), 4),
        **{k: round(float(torch.stack(v).mean()), 4) for k, v in targets.items()},
        "images": len(pixels),
    }))


if __name__ == "__main__":
    main()
