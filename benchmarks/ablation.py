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
import math
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
    ("retrieval_synthetic/mean_R@1", "R@1 synthetic head (mean of I→T, T→I)", True),
    ("retrieval_alt/mean_R@1", "R@1 alt-text head", True),
    ("zero_shot/accuracy_alt_text", "zero-shot acc. (alt-text head)", True),
    ("zero_shot/accuracy_synthetic", "zero-shot acc. (synthetic head)", True),
    ("zero_shot/segmentation_object_miou", "zero-shot seg. object mIoU (values)", True),
    ("zero_shot/segmentation_object_miou_patches", "zero-shot seg. object mIoU (patches)", True),
    ("probe/balanced_segmentation_object_miou", "balanced linear-probe object mIoU", True),
    ("knn/segmentation_object_miou", "patch k-NN object mIoU", True),
    ("probe/depth_order_accuracy", "depth-order acc.", True),
    ("probe/depth_rmse", "depth-probe RMSE", False),
]


def _stats(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


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
    objective = config_obj.objective
    mask_terms = 2.0 if objective.recipe == "v2" and objective.ibot_normalisation == "masked_plus_visible" else 1.0
    levels = {"distill": math.log(objective.head_prototypes), "mask": mask_terms * math.log(objective.patch_prototypes)}
    for key, level in levels.items():
        values = [r[key] for r in curve if key in r]
        if values:
            record[f"{key}_first"], record[f"{key}_last"] = values[0], values[-1]
            record[f"{key}_over_log_k"] = values[-1] / level
    return record


def table(records: list[dict], variants: list[str]) -> str:
    """Mean ± std over seeds per recipe; a cell is marked ▲ / ▼ when the interval mean ± std lies entirely above /
    below the previous row's (better / worse by the "spreads do not overlap" rule; ≈ otherwise)."""
    header = "| recipe | " + " | ".join(title for _, title, _ in COLUMNS) + " | seeds | wall time / run |"
    lines = [header, "|" + "---|" * (len(COLUMNS) + 3)]
    previous: dict[str, tuple[float, float]] = {}
    for variant in variants:
        rows = [r for r in records if r["variant"] == variant]
        if not rows:
            continue
        cells, current = [], {}
        for key, _, higher_is_better in COLUMNS:
            values = [r[key] for r in rows if key in r and r[key] == r[key]]  # NaN-free
            if not values:
                cells.append("–")
                continue
            mean, spread = current[key] = _stats(values)
            mark = ""
            if key in previous:
                before, before_spread = previous[key]
                if mean - spread > before + before_spread:
                    mark = " ▲" if higher_is_better else " ▼"
                elif mean + spread < before - before_spread:
                    mark = " ▼" if higher_is_better else " ▲"
                else:
                    mark = " ≈"
            cells.append(f"{mean:.3f} ± {spread:.3f}{mark}")
        previous = current
        wall = statistics.fmean(r["wall_time_s"] for r in rows)
        lines.append(f"| {VARIANTS[variant][0]} | " + " | ".join(cells) + f" | {len(rows)} | {wall:.0f} s |")
    return "\n".join(lines)


def loss_table(records: list[dict], variants: list[str]) -> str:
    """Final self-supervised losses against their uniform level log K (mean ± std over seeds)."""
    lines = ["| recipe | final CLS self-distillation / log K | final MIM / its log-K level |", "|---|---|---|"]
    for variant in variants:
        rows = [r for r in records if r["variant"] == variant]
        cells = []
        for key in ("distill_over_log_k", "mask_over_log_k"):
            values = [r[key] for r in rows if key in r]
            cells.append("{:.3f} ± {:.3f}".format(*_stats(values)) if values else "–")
        if rows:
            lines.append(f"| {VARIANTS[variant][0]} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default=str(ROOT / "training" / "configs" / "tiny-cpu.yaml"))
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--set", nargs="*", default=[], dest="overrides", help="section.key=value for every run")
    parser.add_argument("--output", default="outputs/ablation")
    parser.add_argument("--resume", action="store_true",
                        help="keep the runs already in OUTPUT/results.jsonl and run only the missing ones")
    parser.add_argument("--table-only", action="store_true", help="rebuild results.md from results.jsonl")
    args = parser.parse_args(argv)
    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    results = output / "results.jsonl"
    records = []
    if (args.resume or args.table_only) and results.is_file():
        records = [json.loads(line) for line in results.read_text().splitlines() if line.strip()]
    elif results.is_file():
        results.unlink()  # a fresh ablation
    done = {(r["variant"], r["seed"]) for r in records}
    start = time.time()
    # Seed-major order: an interrupted ablation still has every recipe for the seeds it finished.
    for seed in [] if args.table_only else args.seeds:
        for variant in args.variants:
            if (variant, seed) in done:
                continue
            record = run(variant, seed, args.config, args.overrides, output / "runs")
            records.append(record)
            with open(results, "a") as handle:
                handle.write(json.dumps(record) + "\n")
            print(json.dumps({k: v for k, v in record.items() if k in ("variant", "seed", "wall_time_s",
                                                                        "first_loss", "last_loss")}), flush=True)
    markdown = table(records, args.variants) + "\n\n" + loss_table(records, args.variants)
    total = time.time() - start
    command = "python benchmarks/ablation.py " + " ".join(sys.argv[1:] if argv is None else argv)
    (output / "results.md").write_text(f"{markdown}\n\nCommand: `{command}`; total wall time {total:.0f} s.\n")
    print(markdown)
    print(f"total wall time {total:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
