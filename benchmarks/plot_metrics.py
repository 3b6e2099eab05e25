#!/usr/bin/env python
"""Plot a pretraining run's `metrics.jsonl` as PNG line charts (PIL only; no plotting library needed).

    python benchmarks/plot_metrics.py outputs/tiny-cpu/metrics.jsonl --out docs/images/main_job_curves.png

Left panel: the losses (contrastive per head, self-distillation, MIM), each divided by its value at log K so that
"1.0" is the uniform-prediction level of that term; right panel: the evaluations logged during the run
(`training.eval_steps`), if any.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from PIL import Image, ImageDraw

COLORS = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75)]


def _panel(draw, box, series: dict[str, list[tuple[float, float]]], title: str, y_range, hline=None,
           legend_top: bool = False) -> None:
    x0, y0, x1, y1 = box
    draw.rectangle(box, outline=(0, 0, 0))
    draw.text((x0, y0 - 16), title, fill=(0, 0, 0))
    points = [p for values in series.values() for p in values]
    if not points:
        return
    xmax = max(x for x, _ in points) or 1.0
    low, high = y_range

    def to_px(x: float, y: float) -> tuple[float, float]:
        return x0 + (x1 - x0) * x / xmax, y1 - (y1 - y0) * (min(max(y, low), high) - low) / (high - low)

    for frac in (0.0, 0.25, 0.5, 0.75, 1.0):
        value = low + frac * (high - low)
        _, py = to_px(0, value)
        draw.line((x0 - 4, py, x0, py), fill=(0, 0, 0))
        draw.text((x0 - 34, py - 6), f"{value:.2f}", fill=(0, 0, 0))
        px, _ = to_px(frac * xmax, low)
        draw.line((px, y1, px, y1 + 4), fill=(0, 0, 0))
        draw.text((px - 10, y1 + 6), f"{frac * xmax:.0f}", fill=(0, 0, 0))
    if hline is not None:
        _, py = to_px(0, hline)
        for start in range(int(x0), int(x1), 8):
            draw.line((start, py, min(start + 4, x1), py), fill=(120, 120, 120))
    for i, (name, values) in enumerate(series.items()):
        color = COLORS[i % len(COLORS)]
        if len(values) > 1:
            draw.line([to_px(x, y) for x, y in values], fill=color, width=2)
        for x, y in values:
            px, py = to_px(x, y)
            draw.ellipse((px - 2, py - 2, px + 2, py + 2), fill=color)
        legend_y = y0 + 6 + 14 * i if legend_top else y1 - 14 * (len(series) - i) - 4
        draw.text((x0 + 8, legend_y), name, fill=color)


def plot(records: list[dict], out: Path, log_k: dict[str, float]) -> None:
    """Write the two-panel chart of `records` (metrics.jsonl lines) to `out`."""
    losses: dict[str, list[tuple[float, float]]] = {}
    for key, label in (("clip/alt_text_loss", "contrastive, alt-text head"),
                       ("clip/synthetic_loss", "contrastive, synthetic head"),
                       ("distill", "CLS self-distillation"), ("mask", "masked image modeling")):
        scale = log_k.get(key)
        values = [(r["step"], r[key] / scale) for r in records if key in r and scale]
        if values:
            losses[f"{label} / {scale:.2f}"] = values
    evals: dict[str, list[tuple[float, float]]] = {}
    for key, label in (("zero_shot/accuracy_synthetic", "zero-shot accuracy (synthetic head)"),
                       ("retrieval_synthetic/mean_R@1", "retrieval R@1 (synthetic head)"),
                       ("zero_shot/segmentation_miou", "zero-shot segmentation mIoU"),
                       ("probe/balanced_segmentation_object_miou", "balanced probe object mIoU")):
        values = [(r["step"], r[key]) for r in records if key in r and r.get("event") in ("eval", "end")]
        if values:
            evals[label] = values
    image = Image.new("RGB", (1000, 380), (255, 255, 255))
    draw = ImageDraw.Draw(image)
    _panel(draw, (60, 40, 480, 330), losses, "loss / log K (1.0 = uniform predictions)", (0.0, 1.2), hline=1.0)
    _panel(draw, (560, 40, 980, 330), evals, "held-out evaluation", (0.0, 1.0), legend_top=True)
    draw.text((460, 360), "optimizer step", fill=(0, 0, 0))
    out.parent.mkdir(parents=True, exist_ok=True)
    image.save(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("metrics", type=Path, help="metrics.jsonl of a run (its config.yaml is read next to it)")
    parser.add_argument("--out", type=Path, default=Path("docs/images/main_job_curves.png"))
    args = parser.parse_args(argv)
    records = [json.loads(line) for line in args.metrics.read_text().splitlines() if line.strip()]
    import yaml

    config = yaml.safe_load((args.metrics.parent / "config.yaml").read_text())
    batch = config["training"]["batch_size"]
    objective = config["objective"]
    log_k = {"clip/alt_text_loss": math.log(batch), "clip/synthetic_loss": math.log(batch),
             "distill": math.log(objective["head_prototypes"]),
             # iBOT++ (v2, masked_plus_visible) sums a masked and a visible term, each at log K when uniform
             "mask": (2.0 if objective["recipe"] == "v2" and objective["ibot_normalisation"] == "masked_plus_visible"
                      else 1.0) * math.log(objective["patch_prototypes"])}
    plot(records, args.out, log_k)
    print(args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
