"""Helpers of the dense fine-tuning tests: the evaluation of a fine-tuned model written out independently of
`tips_hf.finetuning.evaluate_dense`, and the losses a run logged."""

from __future__ import annotations

import json

import torch


def scores_by_hand(model, config, missing_depth: float | None = None) -> dict[str, float]:
    """The evaluation of a fine-tuned dense model written out: its predictions on the evaluation split (bilinear to the
    label size), then mean IoU over the classes present in prediction or reference and pixel accuracy (255 ignored),
    or the RMSE over finite depths (and, with `missing_depth`, depths above it only)."""
    from tips_hf.finetuning.data import DenseDataset

    task = config.training.task
    data = DenseDataset(config.data, task, config.data.eval_split, config.data.eval_examples, config.training.seed)
    pixels = torch.stack([data[i]["pixel_values"] for i in range(len(data))]).float() / 255
    labels = torch.stack([data[i]["labels"] for i in range(len(data))])
    with torch.no_grad():
        out = model.eval()(pixel_values=pixels)
    maps = out.predicted_depth[:, None] if getattr(out, "predicted_depth", None) is not None else out.logits
    maps = torch.nn.functional.interpolate(maps, size=labels.shape[-2:], mode="bilinear", align_corners=False)
    if task == "depth":
        valid = torch.isfinite(labels)
        if missing_depth is not None:
            valid &= labels > missing_depth
        return {"rmse": float(((maps[:, 0] - labels)[valid].double() ** 2).mean().sqrt())}
    predicted, scored = maps.argmax(1), labels != 255
    ious = []
    for c in range(int(max(predicted.max(), labels[scored].max())) + 1):
        mine, theirs = (predicted == c) & scored, (labels == c) & scored
        if (mine | theirs).any():
            ious.append(float((mine & theirs).sum() / (mine | theirs).sum()))
    return {"mean_iou": sum(ious) / len(ious),
            "pixel_accuracy": float(((predicted == labels) & scored).sum() / scored.sum())}


def logged_losses(out) -> list[float]:
    return [json.loads(line)["loss"] for line in (out / "metrics.jsonl").read_text().splitlines() if '"loss"' in line]
