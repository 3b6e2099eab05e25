#!/usr/bin/env python
"""The paper's ablation at toy scale: the same steps and batch, from scratch, on the embedded spatial scenes.

    python benchmarks/ablation.py --output docs/ablation --seeds 0 1            # the five recipes of the table
    python benchmarks/ablation.py --variants clip_only v2 --seeds 0 --set training.max_steps=600 ...

Variants (SPEC §3.8): 1. CLIP on alt-text only; 2. + synthetic captions (both heads); 3. + MIM (iBOT, EMA teacher);
4. the full v1 recipe (+ CLS self-distillation); 5. the v2 recipe (head-only EMA, iBOT++). Every run shares the base
config (`--config`, default the tiny CPU one) and the `--set` overrides. Writes `results.jsonl` (one line per run),
`results.md` (mean ± std over seeds) and prints the table.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

VARIANTS: dict[str, tuple[str, list[str]]] = {
    "clip_only": ("1. CLIP (CLS-1 ↔ alt-text)", [
        "objective.use_synthetic=false", "objective.distill_weight=0", "objective.mask_weight=0"]),
    "dual_caption": ("2. + synthetic captions (both heads)", [
        "objective.distill_weight=0", "objective.mask_weight=0"]),
    # rows 3-4 keep row 2's caption sampling (random short/dense), so each row changes one thing
    "dual_mim": ("3. + MIM (iBOT, EMA teacher)", ["objective.recipe=v1", "objective.distill_weight=0"]),
    "v1": ("4. + CLS self-distillation (v1 losses)", ["objective.recipe=v1"]),
    "v2": ("5. v2 recipe (head-only EMA, iBOT++)", ["objective.recipe=v2"]),
}
COLUMNS = [
    ("probe/segmentation_miou", "linear-probe mIoU"),
    ("zero_shot/segmentation_miou", "zero-shot seg mIoU"),
    ("retrieval_synthetic/image_to_text_recall@1", "I→T R@1 (synthetic)"),
    ("retrieval_synthetic/text_to_image_recall@1", "T→I R@1 (synthetic)"),
    ("retrieval_alt/image_to_text_recall@1", "I→T R@1 (alt-text)"),
    ("zero_shot/accuracy_alt_text", "zero-shot acc."),
    ("probe/depth_rmse", "depth-probe RMSE"),
]


def run(variant: str, seed: int, config: str, overrides: list[str], output: Path) -> dict:
    from tips_hf.pretraining import load_config, train

    name = f"{variant}-seed{seed}"
    config_obj = load_config(config, [
        *overrides, *VARIANTS[variant][1], f"training.seed={seed}", f"training.output_dir={output / name}",
        "training.save_steps=0", "training.report_to=none", "training.progress_bar=false",
    ])
    start = time.time()
    result = train(config_obj)
    record = {"variant": variant, "seed": seed, "wall_time_s": round(time.time() - start, 1), **result.metrics}
    curve = [json.loads(line) for line in (output / name / "metrics.jsonl").read_text().splitlines()]
    record["first_loss"] = next(r["loss"] for r in curve if "loss" in r)
    record["last_loss"] = [r["loss"] for r in curve if "loss" in r][-1]
    return record


def table(records: list[dict], variants: list[str]) -> str:
    header = "| recipe | " + " | ".join(title for _, title in COLUMNS) + " | wall time / run |"
    lines = [header, "|" + "---|" * (len(COLUMNS) + 2)]
    for variant in variants:
        rows = [r for r in records if r["variant"] == variant]
        if not rows:
            continue
        cells = []
        for key, _ in COLUMNS:
            values = [r[key] for r in rows if key in r]
            if not values:
                cells.append("–")
                continue
            mean = statistics.fmean(values)
            spread = statistics.stdev(values) if len(values) > 1 else 0.0
            cells.append(f"{mean:.3f} ± {spread:.3f}")
        wall = statistics.fmean(r["wall_time_s"] for r in rows)
        lines.append(f"| {VARIANTS[variant][0]} | " + " | ".join(cells) + f" | {wall:.0f} s |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default=str(ROOT / "training" / "configs" / "tiny-cpu.yaml"))
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--set", nargs="*", default=[], dest="overrides", help="section.key=value for every run")
    parser.add_argument("--output", default="outputs/ablation")
    args = parser.parse_args(argv)
    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    results = output / "results.jsonl"
    records = []
    start = time.time()
    for variant in args.variants:
        for seed in args.seeds:
            record = run(variant, seed, args.config, args.overrides, output / "runs")
            records.append(record)
            with open(results, "a") as handle:
                handle.write(json.dumps(record) + "\n")
            print(json.dumps({k: v for k, v in record.items() if k in ("variant", "seed", "wall_time_s",
                                                                        "first_loss", "last_loss")}), flush=True)
    markdown = table(records, args.variants)
    total = time.time() - start
    command = "python benchmarks/ablation.py " + " ".join(sys.argv[1:] if argv is None else argv)
    (output / "results.md").write_text(f"{markdown}\n\nCommand: `{command}`; total wall time {total:.0f} s.\n")
    print(markdown)
    print(f"total wall time {total:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
