"""Evaluation during and after pretraining on the embedded dataset's validation split.

Metrics (computed through the `evaluate` modules shipped in `tips_hf.metrics`):
- retrieval R@K, image↔text: the synthetic-caption head (CLS-2) against the detailed captions, and the alt-text head
  (CLS-1) against the alt-texts;
- zero-shot classification accuracy (the largest object's shape) with each head;
- zero-shot segmentation mIoU from patch–text similarity (background + shapes);
- linear-probe segmentation mIoU and depth RMSE on frozen patch features (probe fit on training images).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..dense.probe import linear_probe_depth, linear_probe_segmentation
from ..dense.retrieval import retrieval_recall
from ..dense.zero_shot import encode_labels, encode_texts, zero_shot_classify, zero_shot_segment
from .augment import eval_transform


class ScenesEvaluator:
    """Holds the evaluation images (decoded once) and scores a `TipsModel` on them."""

    def __init__(self, config, seed: int = 0):
        from ..data import CLASS_NAMES, SHAPES, SpatialScenes, scene_prompts

        data, self.eval_config = config.data, config.eval
        self.size = self.eval_config.image_size or data.global_size
        scene = dict(image_size=data.scene_image_size, seed=seed, **data.scene_options)
        validation = SpatialScenes("validation", self.eval_config.num_examples, **scene)
        train = SpatialScenes("train", self.eval_config.probe_train_examples, **scene)
        self.val = self._load(validation)
        self.train = self._load(train)
        prompts = scene_prompts()
        self.shape_names = list(SHAPES)
        self.segment_names = [prompts[name] for name in CLASS_NAMES]
        self.num_classes = len(CLASS_NAMES)

    def _load(self, scenes) -> dict[str, Any]:
        rows = [scenes[i] for i in range(len(scenes))]
        return {
            "pixels": torch.stack([eval_transform(r["image"], self.size) for r in rows]),
            "alt_text": [r["alt_text"] for r in rows],
            "detailed": [r["synthetic_captions"][-1] for r in rows],
            "label": torch.tensor([r["label"] - 1 for r in rows]),
            "class_mask": torch.from_numpy(np.stack([r["class_mask"] for r in rows])).long(),
            "depth": torch.from_numpy(np.stack([r["depth"] for r in rows])).float(),
        }

    @torch.no_grad()
    def features(self, model, pixels: torch.Tensor) -> dict[str, torch.Tensor]:
        device = next(model.parameters()).device
        dtype = next(model.parameters()).dtype
        outs = {"alt": [], "synthetic": [], "patches": []}
        for start in range(0, len(pixels), self.eval_config.batch_size):
            chunk = pixels[start : start + self.eval_config.batch_size].to(device, dtype) / 255.0
            out = model.get_image_features(pixel_values=chunk)
            outs["alt"].append(out.alt_text_embeds.float().cpu())
            outs["synthetic"].append(out.synthetic_embeds.float().cpu())
            outs["patches"].append(out.patch_embeds.float().cpu())
        return {k: torch.cat(v) for k, v in outs.items()}

    @torch.no_grad()
    def __call__(self, model, tokenizer) -> dict[str, float]:
        was_training = model.training
        model.eval()
        metrics: dict[str, float] = {}
        val = self.features(model, self.val["pixels"])
        ks = tuple(self.eval_config.retrieval_ks)
        for head, captions in (("synthetic", "detailed"), ("alt", "alt_text")):
            texts = encode_texts(model, tokenizer, self.val[captions])
            scores = retrieval_recall(val[head], texts, ks=ks)
            metrics.update({f"retrieval_{head}/{k}": float(v) for k, v in scores.items()})
        shapes = encode_labels(model, tokenizer, self.shape_names)
        for head in ("alt_text", "synthetic"):
            logits = zero_shot_classify(model, self._pixels(model, self.val["pixels"]), shapes, head=head)
            accuracy = (logits.argmax(-1).cpu() == self.val["label"]).float().mean()
            metrics[f"zero_shot/accuracy_{head}"] = float(accuracy)
        segment_labels = encode_labels(model, tokenizer, self.segment_names, templates=("{}",))
        predictions = []
        for start in range(0, len(self.val["pixels"]), self.eval_config.batch_size):
            chunk = self._pixels(model, self.val["pixels"][start : start + self.eval_config.batch_size])
            out = zero_shot_segment(model, chunk, segment_labels, output_size=tuple(self.val["class_mask"].shape[-2:]))
            predictions.append(out["labels"].cpu())
        from ..metrics import mean_iou

        zs = mean_iou(torch.cat(predictions).numpy(), self.val["class_mask"].numpy(), num_classes=self.num_classes)
        metrics["zero_shot/segmentation_miou"] = float(zs["mean_iou"])
        train = self.features(model, self.train["pixels"])
        probe = linear_probe_segmentation(
            train["patches"],
            self.train["class_mask"],
            val["patches"],
            self.val["class_mask"],
            num_classes=self.num_classes,
        )
        metrics["probe/segmentation_miou"] = float(probe["mean_iou"])
        depth = linear_probe_depth(train["patches"], self.train["depth"], val["patches"], self.val["depth"])
        metrics["probe/depth_rmse"] = float(depth["rmse"])
        model.train(was_training)
        return metrics

    def _pixels(self, model, pixels: torch.Tensor) -> torch.Tensor:
        parameter = next(model.parameters())
        return pixels.to(parameter.device, parameter.dtype) / 255.0
