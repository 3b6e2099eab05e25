"""Evaluation during and after pretraining on the embedded dataset's held-out scenes (`eval.split`: `validation`,
reported; `test`, for tuning recipes).

Metrics (computed with the `tips_hf.dense` tools and the `tips_hf.metrics` functions users call):
- retrieval R@K, image↔text: the synthetic-caption head (CLS-2) against the detailed captions, and the alt-text head
  (CLS-1) against the alt-texts; `retrieval_<head>/mean_R@1` averages both directions;
- zero-shot classification accuracy (the largest object's shape) with each head, prompts in the captions' words
  ([`SCENE_TEMPLATES`]);
- zero-shot segmentation (background + shapes): the official MaskCLIP "values trick" and plain patch-text
  similarity; `*_miou` over all classes, `*_object_miou` over the 8 shape classes only (the background covers most
  pixels, so the all-class mean can hide a model that labels every patch background);
- frozen patch features: a linear segmentation probe (plain ridge, and class-balanced so that the background cannot
  win everywhere), patch-level k-NN segmentation (no training), and a depth probe scored by RMSE and by depth-order
  accuracy (which of two overlapping objects is in front, free of scale and shift). Probes and the k-NN bank use
  `eval.probe_train_examples` training scenes.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..dense.knn import knn_segmentation
from ..dense.probe import linear_probe_depth, linear_probe_segmentation
from ..dense.zero_shot import encode_labels, encode_texts, zero_shot_classify, zero_shot_segment
from ..metrics.retrieval import retrieval_recall
from .augment import eval_transform
from .data import pixels_to_model

# Zero-shot prompts in the scenes' own words (CLIP's "a photo of ..." templates use words the captions never have).
SCENE_TEMPLATES: tuple[str, ...] = ("a {}.", "the {}", "{}", "{} icon", "{} shape")
# The background class: the captions' own sentences about it ("... the background is striped.").
BACKGROUND_TEMPLATES: tuple[str, ...] = tuple(
    f"the {{}} is {texture}." for texture in ("striped", "checkered", "mottled", "a smooth gradient")
)


def object_miou(scores: dict[str, Any]) -> float:
    """Mean IoU over the shape classes (index >= 1) that occur in the prediction or the reference."""
    values = np.asarray(scores["per_category_iou"][1:], dtype=np.float64)
    return float(np.nanmean(values)) if np.isfinite(values).any() else float("nan")


class ScenesEvaluator:
    """Holds the evaluation images (decoded once) and scores a `TipsModel` on them."""

    def __init__(self, config, seed: int = 0):
        from ..data import CLASS_NAMES, SHAPES, SpatialScenes

        data, self.eval_config = config.data, config.eval
        self.data = data
        self.size = self.eval_config.image_size or data.global_size
        scene = dict(image_size=data.scene_image_size, seed=seed, **data.scene_options)
        validation = SpatialScenes(self.eval_config.split, self.eval_config.num_examples, **scene)
        train = SpatialScenes("train", self.eval_config.probe_train_examples, **scene)
        self.val = self._load(validation)
        self.train = self._load(train)
        self.shape_names = list(SHAPES)
        if tuple(CLASS_NAMES) != ("background", *SHAPES):
            raise ValueError("the scenes' classes must be the background followed by the shapes")
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
        outs = {"alt": [], "synthetic": [], "patches": []}
        for start in range(0, len(pixels), self.eval_config.batch_size):
            chunk = self._pixels(model, pixels[start : start + self.eval_config.batch_size])
            out = model.get_image_features(pixel_values=chunk)
            outs["alt"].append(out.alt_text_embeds.float().cpu())
            outs["synthetic"].append(out.synthetic_embeds.float().cpu())
            outs["patches"].append(out.patch_embeds.float().cpu())
        return {k: torch.cat(v) for k, v in outs.items()}

    @torch.no_grad()
    def __call__(self, model, tokenizer) -> dict[str, float]:
        from ..metrics import depth_order_accuracy, mean_iou

        was_training = model.training
        model.eval()
        metrics: dict[str, float] = {}
        val = self.features(model, self.val["pixels"])
        ks = tuple(self.eval_config.retrieval_ks)
        for head, captions in (("synthetic", "detailed"), ("alt", "alt_text")):
            texts = encode_texts(model, tokenizer, self.val[captions])
            scores = retrieval_recall(val[head], texts, ks=ks)
            metrics.update({f"retrieval_{head}/{k}": float(v) for k, v in scores.items()})
            r1 = [float(v) for k, v in scores.items() if k.endswith("recall@1")]
            metrics[f"retrieval_{head}/mean_R@1"] = sum(r1) / len(r1)
        shapes = encode_labels(model, tokenizer, self.shape_names, templates=SCENE_TEMPLATES)
        for head in ("alt_text", "synthetic"):
            logits = zero_shot_classify(model, self._pixels(model, self.val["pixels"]), shapes, head=head)
            accuracy = (logits.argmax(-1).cpu() == self.val["label"]).float().mean()
            metrics[f"zero_shot/accuracy_{head}"] = float(accuracy)
        background = encode_labels(model, tokenizer, ["background"], templates=BACKGROUND_TEMPLATES)
        segment_labels = torch.cat([background, shapes])  # CLASS_NAMES order
        masks = self.val["class_mask"]
        for method, suffix in (("values", ""), ("patches", "_patches")):
            predictions = []
            for start in range(0, len(self.val["pixels"]), self.eval_config.batch_size):
                chunk = self._pixels(model, self.val["pixels"][start : start + self.eval_config.batch_size])
                out = zero_shot_segment(model, chunk, segment_labels, method=method,
                                        output_size=tuple(masks.shape[-2:]))
                predictions.append(out["labels"].cpu())
            zs = mean_iou(torch.cat(predictions).numpy(), masks.numpy(), num_classes=self.num_classes)
            metrics[f"zero_shot/segmentation_miou{suffix}"] = float(zs["mean_iou"])
            metrics[f"zero_shot/segmentation_object_miou{suffix}"] = object_miou(zs)
        train = self.features(model, self.train["pixels"])
        dense = (train["patches"], self.train["class_mask"], val["patches"], masks)
        for balanced, prefix in ((False, "probe/segmentation"), (True, "probe/balanced_segmentation")):
            probe = linear_probe_segmentation(*dense, num_classes=self.num_classes, class_balanced=balanced)
            metrics[f"{prefix}_miou"] = float(probe["mean_iou"])
            metrics[f"{prefix}_object_miou"] = object_miou(probe)
        knn = knn_segmentation(*dense, num_classes=self.num_classes)
        metrics["knn/segmentation_miou"] = float(knn["mean_iou"])
        metrics["knn/segmentation_object_miou"] = object_miou(knn)
        depth = linear_probe_depth(train["patches"], self.train["depth"], val["patches"], self.val["depth"],
                                   return_predictions=True)
        metrics["probe/depth_rmse"] = float(depth["rmse"])
        # Order of the objects only (pixels of the background, depth 0, are left out): images with 2+ objects.
        order = depth_order_accuracy(depth["predictions"], self.val["depth"], valid_mask=self.val["depth"] > 0)
        metrics["probe/depth_order_accuracy"] = float(order["accuracy"])
        model.train(was_training)
        return metrics

    def _pixels(self, model, pixels: torch.Tensor) -> torch.Tensor:
        """uint8 pixels → the model's input on its device and in its dtype (normalised as in training)."""
        parameter = next(model.parameters())
        return pixels_to_model(pixels.to(parameter.device), self.data.pixel_mean, self.data.pixel_std, parameter.dtype)
