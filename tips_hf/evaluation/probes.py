# Copyright 2026 The tips-hf authors. Licensed under the Apache License, Version 2.0.
"""Frozen-feature probes (the README table's "PASCAL seg." and "NYU-depth") and the released DPT heads.

Protocol of the probes (ours: the TIPS papers' probe recipe — layers, optimiser, schedule, augmentation — is not
published with the code, so these numbers are indicative and are not expected to match the README exactly)
-----------------------------------------------------------------------------------------------------------------
- Features: the final-LayerNorm patch tokens of the last block (`get_image_features(...).patch_embeds`), images
  squared to the model's input size (448×448) with the model's `TipsImageProcessor`, frozen.
- `linear-probe-segmentation` (PASCAL VOC 2012, 21 classes, 255 = void; fit on `--train-split train`, scored on
  `--split val`): a linear classifier on the patch grid (`tips_hf.dense.linear_probe_segmentation`;
  `--probe-method logistic` (default: softmax regression, L-BFGS, the cross-entropy of a linear head) or `ridge`),
  patch targets = the majority label of each patch's pixels (label maps nearest-resized to the input size, as the
  image is); test scores upsampled bilinearly to the input size and argmaxed, and that label map nearest-resized to
  each image's original size, where it is scored (the probe function works at one resolution per call; VOC images
  differ). mIoU over the classes present in prediction or ground truth, from the confusion matrix of the whole
  split; `mean_iou_at_input_size` is the same predictions scored at 448×448.
- `depth` (NYU Depth v2, Eigen split: 24,231/795 train images in the BTS list, 654 test): ridge regression from patch
  features to the mean valid depth of each patch (`tips_hf.dense.linear_probe_depth`), predictions upsampled
  bilinearly to the 480×640 maps; RMSE in metres over valid pixels (1e-3 < d < 10 m) inside the Eigen crop.

With `--dpt FOLDER` (a `TipsForSemanticSegmentation` / `TipsForDepthEstimation` folder) nothing is fitted: the
DPT head predicts at its input size (448×448), the logits / depth are upsampled bilinearly to each label map's own
size, and the same metrics are computed (the released segmentation head has ADE20K's 150 classes: give it the
ADE20K layout; the released depth head is NYU's).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..dense.probe import linear_probe_depth, linear_probe_segmentation
from ..metrics import depth_errors, iou_from_confusion, segmentation_confusion_matrix
from .common import (
    EvalError,
    EvalOptions,
    batches,
    is_file_layout,
    is_local,
    model_image_size,
    model_input,
    open_image,
    pixels_square,
    segmentation_result,
)
from .dense_data import (
    DEPTH_COLUMNS,
    SEGMENTATION_COLUMNS,
    ade20k_records,
    depth_target,
    hf_records,
    nyu_records,
    nyu_valid_mask,
    segmentation_target,
    unpack,
    voc_records,
)

VOC_NUM_CLASSES = 21


def _segmentation_records(data: Any, split: str, options: EvalOptions) -> tuple[list, bool]:
    """Records and whether the labels are ADE20K-style (0 = ignore, k = class k - 1)."""
    if is_file_layout(data):
        root = Path(data)
        if _is_ade(data):
            return ade20k_records(root, split, options.limit), True
        return voc_records(root, split, options.limit), False
    reduce = bool(options.extra.get("reduce_zero_label", False))
    return hf_records(data, split, options, SEGMENTATION_COLUMNS, "segmentation"), reduce


def _is_ade(data: Any) -> bool:
    root = Path(data)
    return is_local(data) and ((root / "ADEChallengeData2016").is_dir() or (root / "annotations").is_dir())


def _depth_records(data: Any, split: str, options: EvalOptions) -> list:
    if is_file_layout(data):
        return nyu_records(Path(data), split, options.limit)
    return hf_records(data, split, options, DEPTH_COLUMNS, "depth")


def _resize_nearest(array: np.ndarray, size: tuple[int, int]) -> torch.Tensor:
    tensor = torch.from_numpy(np.ascontiguousarray(array))
    if tuple(tensor.shape) == size:
        return tensor
    return F.interpolate(tensor[None, None].float(), size=size, mode="nearest")[0, 0].to(tensor.dtype)


@torch.no_grad()
def _patch_features(model: Any, records: list, load: Any, options: EvalOptions, desc: str):
    """Patch features (float16 on the CPU: the stores of g/14 stay in memory) and, per other key of `load`'s
    output, the list of per-image values."""
    feats, extras = [], {}
    for batch in batches(records, load, options, desc=desc):
        out = model.get_image_features(pixel_values=model_input(model, batch["pixel_values"]))
        feats.append(out.patch_embeds.half().cpu())
        for key, value in batch.items():
            if key != "pixel_values":
                extras.setdefault(key, []).extend(_rows(value))
    if not feats:
        raise EvalError(f"{desc}: no example")
    return torch.cat(feats), extras


def _fit_device(model: Any) -> torch.device:
    return next(model.parameters()).device


# ----------------------------------------------------------------------------------------------------------------------
# Segmentation


def evaluate_linear_probe_segmentation(model: Any, processor: Any, data: Any, options: EvalOptions) -> dict[str, Any]:
    """Linear probe on frozen patch features (or, with `options.extra["dpt"]`, a DPT head); see the module doc."""
    if options.extra.get("dpt"):
        return _evaluate_dpt_segmentation(processor, data, options)
    start = time.perf_counter()
    size = model_image_size(model, processor, options.image_size)
    split, train_split = options.split or "val", options.train_split or "train"
    num_classes = int(options.extra.get("num_classes") or VOC_NUM_CLASSES)
    method = options.extra.get("probe_method") or "logistic"
    max_patches = options.extra.get("max_train_patches")
    train_records, reduce = _segmentation_records(data, train_split, options.for_training())
    test_records, _ = _segmentation_records(data, split, options)

    def load(record, keep_original: bool = False) -> dict[str, Any]:
        image, target, name = unpack(record)
        labels = segmentation_target(target, name, reduce, num_classes).astype(np.uint8)
        out = {
            "pixel_values": pixels_square(processor, open_image(image, name), size),
            "target": _resize_nearest(labels, (size, size)),
        }
        if keep_original:
            out["original"] = torch.from_numpy(labels)
        return out

    train_feats, train = _patch_features(model, train_records, load, options, "probe: train features")
    test_feats, test = _patch_features(
        model, test_records, lambda record: load(record, keep_original=True), options, "probe: eval features"
    )
    device = _fit_device(model)
    at_input_size = linear_probe_segmentation(
        train_feats.to(device),
        torch.stack(train["target"]).long(),
        test_feats.to(device),
        torch.stack(test["target"]).long(),
        num_classes=num_classes,
        ignore_index=255,
        method=method,
        max_train_patches=int(max_patches) if max_patches else None,
        return_predictions=True,
    )
    # Score each prediction against its original label map (predictions nearest-resized back to it).
    confusion = np.zeros((num_classes, num_classes), dtype=np.int64)
    for prediction, original in zip(at_input_size.pop("predictions"), test["original"]):
        prediction = _resize_nearest(prediction.numpy(), tuple(original.shape))
        confusion += segmentation_confusion_matrix(prediction, original.long(), num_classes, ignore_index=255)
    result = segmentation_result(
        "linear-probe-segmentation", iou_from_confusion(confusion), split, len(test["original"]), start,
        {
            "features": "final-LayerNorm patch tokens of the last block, frozen",
            "image_size": [size, size],
            "resize": (
                "bilinear with antialiasing (TipsImageProcessor); probe scores upsampled bilinearly to the input size, "
                "argmax, label map nearest-resized to each image's original size and scored there"
            ),
            "probe": method,
            "train_split": train_split,
            "num_train": len(train["target"]),
            "max_train_patches": max_patches,
            "num_classes": num_classes,
            "ignore_index": 255,
        },
    )  # fmt: skip
    # The same predictions scored against label maps nearest-resized to the input size (what the probe sees).
    result["metrics"]["mean_iou_at_input_size"] = at_input_size["mean_iou"]
    return result


def _load_dpt(folder: str, kind: str, device: torch.device):
    try:
        from ..modeling import modeling_dense_tips
    except ImportError as error:  # pragma: no cover - the DPT classes ship with tips_hf
        raise EvalError(f"--dpt needs tips_hf.modeling.modeling_dense_tips: {error}") from None
    cls = getattr(modeling_dense_tips, kind, None)
    if cls is None:
        raise EvalError(f"--dpt: this tips_hf has no {kind}")
    if not Path(folder).is_dir():
        raise EvalError(f"--dpt: folder not found: {folder}")
    try:
        return cls.from_pretrained(folder).to(device).eval()
    except (OSError, ValueError, TypeError, KeyError) as error:
        raise EvalError(f"--dpt: cannot load a {kind} from {folder}: {str(error).strip().splitlines()[0]}") from None


@torch.no_grad()
def _evaluate_dpt_segmentation(processor: Any, data: Any, options: EvalOptions) -> dict[str, Any]:
    from .common import resolve_device

    start = time.perf_counter()
    head = _load_dpt(options.extra["dpt"], "TipsForSemanticSegmentation", resolve_device(options.device))
    size = options.image_size or int(getattr(head.config, "image_resolution", 448))
    num_classes = int(head.config.num_labels)
    split = options.split or ("validation" if _is_ade(data) or not is_local(data) else "val")
    records, reduce = _segmentation_records(data, split, options)

    def load(record) -> dict[str, Any]:
        image, target, name = unpack(record)
        return {
            "pixel_values": pixels_square(processor, open_image(image, name), size),
            "target": torch.from_numpy(segmentation_target(target, name, reduce, num_classes)),
        }

    confusion = np.zeros((num_classes, num_classes), dtype=np.int64)
    count = 0
    for batch in batches(records, load, options, desc="DPT segmentation"):
        logits = head(pixel_values=model_input(head, batch["pixel_values"])).logits.float()
        targets = batch["target"] if isinstance(batch["target"], list) else list(batch["target"].unbind(0))
        for index, target in enumerate(targets):
            up = F.interpolate(
                logits[index : index + 1], size=tuple(target.shape), mode="bilinear", align_corners=False
            )
            confusion += segmentation_confusion_matrix(up.argmax(dim=1)[0].cpu(), target, num_classes, ignore_index=255)
            count += 1
    return segmentation_result(
        "linear-probe-segmentation", iou_from_confusion(confusion), split, count, start,
        {
            "head": f"DPT ({options.extra['dpt']})",
            "image_size": [size, size],
            "resize": "bilinear with antialiasing (TipsImageProcessor); logits upsampled bilinearly to each label map",
            "num_classes": num_classes,
            "ignore_index": 255,
        },
    )  # fmt: skip


# ----------------------------------------------------------------------------------------------------------------------
# Depth


def evaluate_depth(model: Any, processor: Any, data: Any, options: EvalOptions) -> dict[str, Any]:
    """Ridge depth probe on frozen patch features (or, with `options.extra["dpt"]`, a DPT depth head)."""
    start = time.perf_counter()
    scale = float(options.extra.get("depth_scale") or 1000.0)
    eigen_crop = bool(options.extra.get("eigen_crop", True))
    split = options.split or "test"
    dpt = options.extra.get("dpt")
    if dpt:
        from .common import resolve_device

        model = _load_dpt(dpt, "TipsForDepthEstimation", resolve_device(options.device))
        size = options.image_size or int(getattr(model.config, "image_resolution", 448))
    else:
        size = model_image_size(model, processor, options.image_size)

    def load(record) -> dict[str, Any]:
        image, target, name = unpack(record)
        depth = depth_target(target, name, scale)
        return {
            "pixel_values": pixels_square(processor, open_image(image, name), size),
            "target": torch.from_numpy(depth),
            "valid": torch.from_numpy(nyu_valid_mask(depth, eigen_crop)),
        }

    test_records = _depth_records(data, split, options)
    protocol: dict[str, Any] = {
        "image_size": [size, size],
        "resize": "bilinear with antialiasing (TipsImageProcessor); predictions upsampled bilinearly to the depth maps",
        "valid_pixels": "1e-3 < depth < 10 m" + (", Eigen crop on 480x640 maps" if eigen_crop else ""),
        "depth_scale": scale,
    }
    if dpt:
        predictions, references, masks = [], [], []
        for batch in batches(test_records, load, options, desc="DPT depth"):
            with torch.no_grad():
                depth = model(pixel_values=model_input(model, batch["pixel_values"])).predicted_depth.float()
            for index, (target, valid) in enumerate(zip(_rows(batch["target"]), _rows(batch["valid"]))):
                up = F.interpolate(depth[index : index + 1, None], size=tuple(target.shape), mode="bilinear",
                                   align_corners=False)  # fmt: skip
                predictions.append(up[0, 0].cpu().numpy())
                references.append(target.numpy())
                masks.append(valid.numpy())
        errors = depth_errors(predictions, references, valid_mask=masks)
        protocol["head"] = f"DPT ({dpt})"
        count = len(references)
    else:
        train_split = options.train_split or "train"
        train_records = _depth_records(data, train_split, options.for_training())
        train = _collect(model, train_records, load, options, "probe: train features")
        test = _collect(model, test_records, load, options, "probe: eval features")
        max_patches = options.extra.get("max_train_patches")
        device = _fit_device(model)
        errors = linear_probe_depth(
            train["feats"].to(device), train["target"], test["feats"].to(device), test["target"],
            train_valid=train["valid"], test_valid=test["valid"],
            max_train_patches=int(max_patches) if max_patches else None,
        )  # fmt: skip
        protocol.update(probe="ridge", train_split=train_split, num_train=len(train["target"]))
        protocol["features"] = "final-LayerNorm patch tokens of the last block, frozen"
        count = len(test["target"])
    return {
        "task": "depth",
        "split": split,
        "num_examples": count,
        "metrics": {"rmse": errors["rmse"], "abs_rel": errors["abs_rel"], "num_pixels": errors["num_pixels"]},
        "protocol": protocol,
        "table": {
            "columns": ["metric", "value"],
            "rows": [["RMSE (m)", errors["rmse"]], ["AbsRel", errors["abs_rel"]]],
        },
        "runtime_s": time.perf_counter() - start,
    }


def _rows(value: Any) -> list[torch.Tensor]:
    return value if isinstance(value, list) else list(value.unbind(0))


@torch.no_grad()
def _collect(model: Any, records: list, load: Any, options: EvalOptions, desc: str) -> dict[str, Any]:
    feats, targets, valids = [], [], []
    for batch in batches(records, load, options, desc=desc):
        out = model.get_image_features(pixel_values=model_input(model, batch["pixel_values"]))
        feats.append(out.patch_embeds.half().cpu())
        targets += _rows(batch["target"])
        valids += _rows(batch["valid"])
    if not feats:
        raise EvalError(f"{desc}: no example")
    shapes = {tuple(t.shape) for t in targets}
    if len(shapes) > 1:
        raise EvalError(f"{desc}: depth maps of different sizes {sorted(shapes)[:3]}; the probe scores one resolution")
    return {"feats": torch.cat(feats), "target": torch.stack(targets), "valid": torch.stack(valids)}


__all__ = ["evaluate_depth", "evaluate_linear_probe_segmentation"]
