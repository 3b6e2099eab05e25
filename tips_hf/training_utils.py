# Copyright 2026 The tips-hf authors. Licensed under the Apache License, Version 2.0.
"""Pieces for fine-tuning TIPS with `transformers.Trainer`: data collators and `compute_metrics` helpers.

- [`TipsDataCollator`]: image–caption rows of a `datasets.Dataset` → `pixel_values`, the alt-text captions
  (`input_ids`, `attention_mask`) and the synthetic captions (`synthetic_input_ids`, `synthetic_attention_mask`)
  for `TipsModel(..., return_loss=True)`: each head trains on its own caption stream.
- [`TipsContrastiveTrainer`]: `transformers.Trainer` whose contrastive loss takes its negatives from every process
  (features all-gathered with their gradients, as pretraining does), not from each process's batch alone.
- [`TipsDenseDataCollator`]: image + label-map rows (segmentation masks, depth maps) → `pixel_values`, `labels`;
  the label maps follow the image processor's geometry (nearest resize, padding with the ignore value).
- [`ContrastiveRetrievalMetrics`]: `preprocess_logits_for_metrics` + `compute_metrics` giving image↔text Recall@K of
  both heads over the whole evaluation set with the shipped `retrieval_recall` `evaluate` module.
- [`SegmentationMetrics`], [`DepthMetrics`]: the same for dense models (`mean_iou`, `depth_rmse` modules).

The collators read raw columns, so the `Trainer` needs `TrainingArguments(remove_unused_columns=False)`.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["ContrastiveRetrievalMetrics", "DepthMetrics", "SegmentationMetrics", "TipsContrastiveTrainer",  # noqa: F822
           "TipsDataCollator", "TipsDenseDataCollator", "global_contrastive_loss"]


def global_contrastive_loss(outputs: Any, temperature: torch.Tensor) -> torch.Tensor:
    r"""The contrastive loss of a [`TipsModel`] output with negatives from the global batch.

    The mean of both heads' symmetric InfoNCE (CLS-1 against `text_embeds`, CLS-2 against `synthetic_text_embeds`, or
    `text_embeds` without them), as `TipsModel(..., return_loss=True)` computes it, but with every process's image
    and text embeddings all-gathered *with* their gradients (pretraining's `DualCaptionContrastiveLoss`): each
    process scores its own rows against all texts / images, and the mean over processes (DDP's gradient average) is
    the loss of the whole batch. Equal to the model's own loss in one process. Every process must call it with the
    same batch size (accelerate's default `even_batches` gives them that).

    Args:
        outputs ([`TipsOutput`]): with `image_embeds`, `synthetic_image_embeds` and the text embeddings (L2-normalised).
        temperature (`torch.Tensor` of shape `(2,)`): the model's `temperature` (alt-text, synthetic).
    """
    from .losses.contrastive import DualCaptionContrastiveLoss

    if outputs.image_embeds is None or (outputs.text_embeds is None and outputs.synthetic_text_embeds is None):
        raise ValueError("the contrastive loss needs the outputs of TipsModel called with pixel_values and input_ids "
                         "(or synthetic_input_ids).")
    synthetic = outputs.synthetic_text_embeds if outputs.synthetic_text_embeds is not None else outputs.text_embeds
    return DualCaptionContrastiveLoss("softmax")(outputs.image_embeds, outputs.synthetic_image_embeds,
                                                 outputs.text_embeds, synthetic, temperature)["loss"]


@functools.cache
def _contrastive_trainer() -> type:
    from transformers import Trainer

    class TipsContrastiveTrainer(Trainer):
        r"""`transformers.Trainer` for contrastive fine-tuning of [`TipsModel`] (bare or wrapped by peft) with
        global negatives: [`global_contrastive_loss`] instead of the model's in-batch `return_loss`. Use it as
        `Trainer`, with [`TipsDataCollator`] (its `return_loss` flag still makes evaluation report `eval_loss`)."""

        loss_is_scaled_for_ga = False  # a batch mean: Trainer divides it by the accumulation steps

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            outputs = model(**{key: value for key, value in inputs.items() if key != "return_loss"})
            loss = global_contrastive_loss(outputs, self.accelerator.unwrap_model(model).temperature)
            return (loss, outputs) if return_outputs else loss

    TipsContrastiveTrainer.__module__ = __name__
    return TipsContrastiveTrainer


def __getattr__(name: str) -> Any:
    # Built on first use: importing this module needs no accelerate (which transformers' Trainer requires).
    if name == "TipsContrastiveTrainer":
        return _contrastive_trainer()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _column(rows: Sequence[Mapping[str, Any]], column: str, role: str) -> list[Any]:
    """The values of `column` in every row, or a ValueError naming the column and the keys that exist."""
    if not rows:
        raise ValueError("the collator got an empty batch.")
    if column not in rows[0]:
        raise ValueError(
            f"{role} column {column!r} is not in the rows (keys: {sorted(rows[0])}); pass {role.replace(' ', '_')}"
            f"_column=..., and TrainingArguments(remove_unused_columns=False) so that Trainer keeps raw columns."
        )
    return [row[column] for row in rows]


class TipsDataCollator:
    r"""Collates image–caption rows for contrastive fine-tuning of [`TipsModel`] under `Trainer`.

    Args:
        processor ([`TipsProcessor`]): resizes the images and tokenises both caption streams (padded/cut to 64
            tokens by default, as the official pipeline does).
        image_column (`str`, defaults to `"image"`): PIL images, arrays or tensors (what `datasets` decodes).
        text_column (`str`, defaults to `"alt_text"`): the captions of the alt-text head (CLS-1).
        synthetic_column (`str` or `None`, defaults to `"synthetic_caption"`): the captions of the synthetic-caption
            head (CLS-2). A row may hold a list of captions (e.g. the scenes' `synthetic_captions`): one is drawn at
            random per row and batch. `None`: both heads train on `text_column`.
        return_loss (`bool`, defaults to `True`): put `return_loss=True` in every batch (Trainer then also computes the
            evaluation loss of a model without `labels`).
        seed (`int`, *optional*): seed of the generator that draws among several synthetic captions; by default the
            global torch RNG (seeded by `Trainer`).
        text_kwargs (`dict`, *optional*): tokenizer options for both streams, e.g. `{"padding": "longest"}` to pad
            to the batch's longest caption (padding is masked out, so only the cost changes).

    Returns (from `__call__`): a dict of `pixel_values` (B, 3, H, W), `input_ids` / `attention_mask` (B, L),
    `synthetic_input_ids` / `synthetic_attention_mask` (B, L) and `return_loss`.
    """

    def __init__(
        self,
        processor: Any,
        image_column: str = "image",
        text_column: str = "alt_text",
        synthetic_column: str | None = "synthetic_caption",
        return_loss: bool = True,
        seed: int | None = None,
        text_kwargs: dict[str, Any] | None = None,
    ):
        self.processor = processor
        self.image_column, self.text_column, self.synthetic_column = image_column, text_column, synthetic_column
        self.return_loss = return_loss
        self.generator = torch.Generator().manual_seed(seed) if seed is not None else None
        self.text_kwargs = dict(text_kwargs or {})

    def _pick(self, captions: list[Any]) -> list[str]:
        picked = []
        for index, caption in enumerate(captions):
            if isinstance(caption, (list, tuple)):
                if not caption:
                    raise ValueError(f"synthetic column {self.synthetic_column!r}: row {index} has no caption.")
                caption = caption[int(torch.randint(len(caption), (), generator=self.generator))]
            picked.append(caption)
        return picked

    def _check_texts(self, texts: list[Any], column: str) -> list[str]:
        for index, text in enumerate(texts):
            if not isinstance(text, str):
                raise ValueError(f"caption column {column!r}: row {index} holds {type(text).__name__}, not a string.")
        return texts

    def __call__(self, rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        images = _column(rows, self.image_column, "image")
        texts = self._check_texts(_column(rows, self.text_column, "text"), self.text_column)
        batch = dict(self.processor(images=images, text=texts, return_tensors="pt", **self.text_kwargs))
        if self.synthetic_column is not None:
            captions = self._check_texts(self._pick(_column(rows, self.synthetic_column, "synthetic")),
                                         self.synthetic_column)
            synthetic = self.processor(text=captions, return_tensors="pt", **self.text_kwargs)
            batch["synthetic_input_ids"] = synthetic["input_ids"]
            batch["synthetic_attention_mask"] = synthetic["attention_mask"]
        if self.return_loss:
            batch["return_loss"] = True
        return batch


@dataclass
class TipsDenseDataCollator:
    r"""Collates image + label-map rows (semantic segmentation or depth) for dense fine-tuning under `Trainer`.

    Images go through the image processor; every label map then follows the image's geometry: resized with nearest
    neighbour to the processor's output size (`do_resize=True`), and centre-padded like the image (the extra pixel
    bottom/right) with the ignore value, so padding is never scored.

    Args:
        image_processor ([`TipsImageProcessor`] or [`TipsProcessor`]): the processor's image part is used.
        image_column (`str`, defaults to `"image"`).
        label_column (`str`, defaults to `"class_mask"`): (H, W) maps as PIL images (e.g. `datasets.Image(mode="L")`),
            arrays or tensors; for the scenes, `"class_mask"` (segmentation) or `"depth"`.
        task (`str`, defaults to `"segmentation"`): `"segmentation"` → int64 class ids; `"depth"` → float32 depths.
        ignore_index (`int`, defaults to 255): segmentation pixels that are not scored (padding gets this value).
        invalid_depth (`float`, *optional*): depth value marking invalid pixels (e.g. 0 for sparse LiDAR maps); such
            pixels and the padding become NaN, which the depth losses and `depth_rmse` skip.

    Returns (from `__call__`): `{"pixel_values": (B, 3, H, W), "labels": (B, H, W)}`.
    """

    image_processor: Any
    image_column: str = "image"
    label_column: str = "class_mask"
    task: str = "segmentation"
    ignore_index: int = 255
    invalid_depth: float | None = None

    def __post_init__(self):
        if self.task not in ("segmentation", "depth"):
            raise ValueError(f"task must be 'segmentation' or 'depth', got {self.task!r}.")
        self.image_processor = getattr(self.image_processor, "image_processor", self.image_processor)

    def _label(self, value: Any, index: int) -> torch.Tensor:
        if hasattr(value, "detach"):
            array = value.detach().cpu()
        else:
            array = torch.from_numpy(np.array(value))  # PIL image, array or nested lists; a copy we may modify
        if array.ndim == 3 and 1 in (array.shape[0], array.shape[-1]):
            array = array.squeeze(0 if array.shape[0] == 1 else -1)
        if array.ndim != 2:
            raise ValueError(
                f"label column {self.label_column!r}: row {index} is not a 2-D map (shape {tuple(array.shape)})."
            )
        if self.task == "segmentation":
            if array.is_floating_point() and not torch.equal(array, array.round()):
                raise ValueError(f"label column {self.label_column!r}: row {index} holds non-integer class ids.")
            return array.long()
        array = array.float()
        if self.invalid_depth is not None:
            array[array == self.invalid_depth] = float("nan")
        return array

    def _fit(self, label: torch.Tensor, height: int, width: int) -> torch.Tensor:
        """Nearest-resize `label` to the processor's resize size, then centre-pad to (height, width)."""
        processor = self.image_processor
        if processor.do_resize:
            size = (processor.size["height"], processor.size["width"])
            if tuple(label.shape) != size:
                # Nearest keeps class ids and depths intact (no blend across object borders).
                label = F.interpolate(label[None, None].double(), size=size, mode="nearest")[0, 0].to(label.dtype)
        pad_h, pad_w = height - label.shape[0], width - label.shape[1]
        if pad_h < 0 or pad_w < 0:
            raise ValueError(f"label map {tuple(label.shape)} is larger than the processed image {(height, width)}.")
        if pad_h or pad_w:
            fill = self.ignore_index if self.task == "segmentation" else float("nan")
            label = F.pad(label, (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2), value=fill)
        return label

    def __call__(self, rows: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        images = _column(rows, self.image_column, "image")
        labels = _column(rows, self.label_column, "label")
        pixel_values = self.image_processor(images=images, return_tensors="pt")["pixel_values"]
        height, width = pixel_values.shape[-2:]
        maps = [self._fit(self._label(value, i), height, width) for i, value in enumerate(labels)]
        return {"pixel_values": pixel_values, "labels": torch.stack(maps)}


class ContrastiveRetrievalMetrics:
    r"""Image↔text Recall@K of both TIPS heads over a whole evaluation set, for `Trainer`.

    Pass the instance as `compute_metrics` and its `preprocess_logits_for_metrics` method as
    `preprocess_logits_for_metrics`: per batch the latter keeps only the normalised embeddings (not the (B, B) logits
    of each batch, which cannot rank across batches), and `compute_metrics` scores every image against every text
    of the evaluation set with the shipped `retrieval_recall` `evaluate` module (paired-embeddings form).

    Args:
        ks (`tuple[int]`, defaults to `(1, 5)`): the K values.

    Returns (from `__call__`): `alt_text_image_to_text_recall@K`, `alt_text_text_to_image_recall@K` (CLS-1 against
    the `input_ids` captions) and `synthetic_...` (CLS-2 against `synthetic_input_ids`, or `input_ids` without them).
    """

    # Fields of a `TipsOutput` with images and texts, in order, without `loss` (which Trainer removes).
    _FIELDS = ("logits_per_image", "logits_per_text", "synthetic_logits_per_image", "synthetic_logits_per_text",
               "image_embeds", "synthetic_image_embeds", "text_embeds", "text_model_output", "vision_model_output",
               "synthetic_text_embeds", "synthetic_text_model_output")

    def __init__(self, ks: tuple[int, ...] = (1, 5)):
        from .metrics import load_metric

        self.ks = tuple(ks)
        self.metric = load_metric("retrieval_recall")

    def preprocess_logits_for_metrics(self, logits: tuple[Any, ...], labels: Any) -> tuple[torch.Tensor, ...]:
        """Trainer hands the output values in `TipsOutput` field order; keep the embeddings of both heads."""
        if not isinstance(logits, (tuple, list)) or len(logits) not in (9, 11):
            raise ValueError(
                "ContrastiveRetrievalMetrics expects the outputs of TipsModel called with pixel_values and input_ids "
                f"(and optionally synthetic_input_ids), got {len(logits) if isinstance(logits, (tuple, list)) else 1}"
                " output values; do not set keys_to_ignore_at_inference on the config."
            )
        fields = dict(zip(self._FIELDS, logits))
        synthetic_texts = fields.get("synthetic_text_embeds", fields["text_embeds"])
        return fields["image_embeds"], fields["synthetic_image_embeds"], fields["text_embeds"], synthetic_texts

    def __call__(self, eval_prediction: Any) -> dict[str, float]:
        image_embeds, synthetic_image_embeds, text_embeds, synthetic_text_embeds = eval_prediction.predictions
        scores = {}
        for head, images, texts in (("alt_text", image_embeds, text_embeds),
                                    ("synthetic", synthetic_image_embeds, synthetic_text_embeds)):
            result = self.metric.compute(predictions=np.asarray(images), references=np.asarray(texts), ks=self.ks)
            scores.update({f"{head}_{key}": float(value) for key, value in result.items()})
        return scores


def _first(logits: Any) -> torch.Tensor:
    """The first output value (segmentation `logits`, `predicted_depth`): Trainer passes a tensor or a tuple."""
    return logits[0] if isinstance(logits, (tuple, list)) else logits


class _StreamedScores:
    """`compute_metrics` of `Trainer` in both of its modes: called once on the whole evaluation set
    (`compute_result` not passed), or, with `TrainingArguments(batch_eval_metrics=True)`, once per batch with the batch
    of every process gathered and `compute_result=True` on the last one. In the second mode only a few sums are kept
    between batches (not the (N, H, W) predictions), and the scores are those of the whole set all the same."""

    def __init__(self):
        self._total = None

    def _sums(self, predictions: Any, references: Any) -> np.ndarray:
        raise NotImplementedError

    def _scores(self, sums: np.ndarray) -> dict[str, float]:
        raise NotImplementedError

    def __call__(self, eval_prediction: Any, compute_result: bool | None = None) -> dict[str, float]:
        sums = self._sums(eval_prediction.predictions, eval_prediction.label_ids)
        if compute_result is None:
            return self._scores(sums)
        self._total = sums if self._total is None else self._total + sums
        if not compute_result:
            return {}
        total, self._total = self._total, None  # the next evaluation starts from zero
        return self._scores(total)


def _numpy(value: Any) -> np.ndarray:
    return value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)


class SegmentationMetrics(_StreamedScores):
    r"""Mean IoU of a segmentation model under `Trainer` (the maths of the shipped `mean_iou` module:
    [`tips_hf.metrics.segmentation_confusion_matrix`] and [`tips_hf.metrics.iou_from_confusion`]).

    `preprocess_logits_for_metrics` upsamples each batch's `(B, C, h, w)` logits bilinearly to the label size (as the
    models' losses do) and keeps the arg-max class map. With `TrainingArguments(batch_eval_metrics=True)` each batch
    only adds to a `(C, C)` pixel confusion matrix, so a distributed evaluation keeps no predictions.

    Args:
        num_labels (`int`): number of classes.
        ignore_index (`int`, defaults to 255): label value that is not scored.
        background_class (`bool`, defaults to `False`): class 0 is a background (the embedded scenes): also report
            `object_mean_iou`, the mean IoU of the other classes, which a model predicting the background everywhere
            cannot raise.

    Returns (from `__call__`): `mean_iou`, `pixel_accuracy`, `mean_accuracy` (and `object_mean_iou`).
    """

    def __init__(self, num_labels: int, ignore_index: int = 255, background_class: bool = False):
        super().__init__()
        self.num_labels, self.ignore_index, self.background_class = num_labels, ignore_index, background_class

    def preprocess_logits_for_metrics(self, logits: Any, labels: torch.Tensor) -> torch.Tensor:
        logits = _first(logits)
        return F.interpolate(logits.float(), size=labels.shape[-2:], mode="bilinear", align_corners=False).argmax(1)

    def _sums(self, predictions: Any, references: Any) -> np.ndarray:
        from .metrics import segmentation_confusion_matrix

        return segmentation_confusion_matrix(_numpy(predictions), _numpy(references), self.num_labels,
                                             self.ignore_index)

    def _scores(self, sums: np.ndarray) -> dict[str, float]:
        from .metrics import iou_from_confusion

        scores = iou_from_confusion(sums)
        out = {key: float(scores[key]) for key in ("mean_iou", "pixel_accuracy", "mean_accuracy")}
        if self.background_class:
            from .pretraining.evaluation import object_miou

            out["object_mean_iou"] = object_miou(scores)
        return out


class DepthMetrics(_StreamedScores):
    r"""Depth RMSE / AbsRel of a depth model under `Trainer` (the maths of the shipped `depth_rmse` module:
    [`tips_hf.metrics.depth_error_sums`]).

    `preprocess_logits_for_metrics` upsamples each batch's `(B, h, w)` `predicted_depth` (or `(B, 1, h, w)` logits)
    bilinearly to the label size; pixels whose label is not finite or not > 0 (missing depth, e.g. NYU's zeros) are not
    scored, as in the depth losses. With `TrainingArguments(batch_eval_metrics=True)` each batch only adds to four sums.

    Returns (from `__call__`): `rmse`, `abs_rel`.
    """

    def preprocess_logits_for_metrics(self, logits: Any, labels: torch.Tensor) -> torch.Tensor:
        depth = _first(logits)
        depth = depth[:, None] if depth.ndim == 3 else depth[:, :1]
        return F.interpolate(depth.float(), size=labels.shape[-2:], mode="bilinear", align_corners=False)[:, 0]

    def _sums(self, predictions: Any, references: Any) -> np.ndarray:
        from .metrics import depth_error_sums

        references = _numpy(references).astype(np.float32)
        valid = np.isfinite(references) & (np.nan_to_num(references) > 0)
        return depth_error_sums(_numpy(predictions).astype(np.float32), references, valid_mask=valid)

    def _scores(self, sums: np.ndarray) -> dict[str, float]:
        from .metrics import depth_errors_from_sums

        scores = depth_errors_from_sums(sums)
        return {"rmse": scores["rmse"], "abs_rel": scores["abs_rel"]}
