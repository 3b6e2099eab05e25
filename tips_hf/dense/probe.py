# Copyright 2026 The tips-hf authors. Licensed under the Apache License, Version 2.0.
"""Linear probes on frozen patch features: semantic segmentation and depth.

A linear map is fitted on the patch grid (targets: the label/depth map reduced to one value per patch), then its
outputs are upsampled bilinearly to the label resolution and scored with the `tips_hf.metrics` functions (the maths
behind the `mean_iou` and `depth_rmse` evaluate modules). Two fitting methods, both deterministic:

- `"ridge"` (default): closed-form least squares on standardised features (one-hot targets for segmentation);
  a second on CPU for ~25k patches × 192 dims.
- `"logistic"` (segmentation only): softmax regression trained full-batch with L-BFGS.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..metrics import depth_errors, iou_from_confusion, segmentation_confusion_matrix

_NO_TARGET = -1
_CHUNK = 64  # images per block when reducing or upsampling (bounds memory)


def _cell_index(size: int, cells: int, device: torch.device) -> torch.Tensor:
    """Patch-grid cell of every pixel row (or column): floor(i * cells / size), any ratio."""
    return torch.div(torch.arange(size, device=device) * cells, size, rounding_mode="floor")


def _pixel_to_cell(height: int, width: int, h: int, w: int, device: torch.device) -> torch.Tensor:
    rows, cols = _cell_index(height, h, device), _cell_index(width, w, device)
    return (rows[:, None] * w + cols[None, :]).reshape(-1)  # (H*W,)


def patch_targets(
    masks: torch.Tensor,
    grid_size: tuple[int, int],
    num_classes: int,
    ignore_index: int | None = None,
    mode: str = "majority",
) -> torch.Tensor:
    """Reduce label maps to the patch grid.

    Args:
        masks (`torch.LongTensor` of shape `(N, H, W)`): class ids; `ignore_index` marks void pixels.
        grid_size (`tuple[int, int]`): the patch grid `(h, w)`.
        num_classes (`int`): number of classes `C`.
        ignore_index (`int`, *optional*): void label.
        mode (`str`): `"majority"` (most frequent non-void label among the pixels of each cell, ties to the lowest
            id) or `"nearest"` (the pixel at the cell centre).

    Returns:
        `torch.LongTensor` of shape `(N, h, w)`: one label per cell, -1 where the cell has no (non-void) label.
    """
    masks = torch.as_tensor(masks).long()
    num, height, width = masks.shape
    h, w = grid_size
    if mode == "nearest":
        rows = ((torch.arange(h, device=masks.device) * 2 + 1) * height) // (2 * h)
        cols = ((torch.arange(w, device=masks.device) * 2 + 1) * width) // (2 * w)
        targets = masks[:, rows][:, :, cols].clone()
    elif mode == "majority":
        cell = _pixel_to_cell(height, width, h, w, masks.device)
        targets = torch.empty(num, h, w, dtype=torch.long, device=masks.device)
        for start in range(0, num, _CHUNK):
            block = masks[start : start + _CHUNK].reshape(-1, height * width)
            valid = (block >= 0) & (block < num_classes)
            if ignore_index is not None:
                valid &= block != ignore_index
            image = torch.arange(block.shape[0], device=masks.device)[:, None]
            index = ((image * h * w + cell[None, :]) * num_classes + block.clamp(0, num_classes - 1))[valid]
            counts = torch.bincount(index, minlength=block.shape[0] * h * w * num_classes)
            counts = counts.reshape(block.shape[0], h, w, num_classes)
            best = counts.argmax(dim=-1)
            targets[start : start + block.shape[0]] = torch.where(counts.sum(dim=-1) > 0, best, _NO_TARGET)
        return targets
    else:
        raise ValueError(f"mode must be 'majority' or 'nearest', got {mode!r}.")
    void = (targets < 0) | (targets >= num_classes)
    if ignore_index is not None:
        void |= targets == ignore_index
    return torch.where(void, _NO_TARGET, targets)


def _patch_mean(
    depth: torch.Tensor, valid: torch.Tensor, grid_size: tuple[int, int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean of the valid depths of every cell, (N, h, w), and whether the cell had any."""
    num, height, width = depth.shape
    h, w = grid_size
    cell = _pixel_to_cell(height, width, h, w, depth.device)
    index = (torch.arange(num, device=depth.device)[:, None] * h * w + cell[None, :]).reshape(-1)
    keep = valid.reshape(-1)
    sums = torch.bincount(index[keep], weights=depth.reshape(-1)[keep].double(), minlength=num * h * w)
    counts = torch.bincount(index[keep], minlength=num * h * w)
    return (sums / counts.clamp_min(1)).reshape(num, h, w), (counts > 0).reshape(num, h, w)


def _check_features(name: str, feats: torch.Tensor) -> torch.Tensor:
    feats = torch.as_tensor(feats)
    if feats.ndim != 4:
        raise ValueError(f"{name} must be (N, h, w, D) patch features, got shape {tuple(feats.shape)}.")
    return feats


def _check_maps(name: str, maps: torch.Tensor, feats: torch.Tensor, letter: str) -> None:
    """Per-pixel targets must be one `(H, W)` map per image of `feats`."""
    if maps.ndim != 3 or maps.shape[0] != feats.shape[0]:
        raise ValueError(f"{name} must be ({letter}, H, W) with {letter} = {feats.shape[0]}, got {tuple(maps.shape)}.")


def _subsample(rows: torch.Tensor, limit: int | None, seed: int) -> torch.Tensor:
    if limit is None or rows.shape[0] <= limit:
        return rows
    generator = torch.Generator().manual_seed(seed)
    keep = torch.randperm(rows.shape[0], generator=generator)[:limit].sort().values
    return rows[keep.to(rows.device)]


def _training_patches(
    feats: torch.Tensor, usable: torch.Tensor, limit: int | None, seed: int, empty: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """The flat indices of the usable training patches (a random subset of `limit` of them, drawn with `seed`) and
    their `(n, D)` features; `empty` is the error when there is none."""
    rows = _subsample(torch.nonzero(usable.reshape(-1)).squeeze(1), limit, seed)
    if rows.numel() == 0:
        raise ValueError(empty)
    return rows, feats.reshape(-1, feats.shape[-1])[rows]


class _Standardize:
    """Feature standardisation fitted on the training patches (conditions the ridge system and L-BFGS)."""

    def __init__(self, x: torch.Tensor):
        self.mean = x.mean(dim=0)
        self.std = x.std(dim=0).clamp_min(1e-6)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        x = (x.double() - self.mean) / self.std
        return torch.cat([x, torch.ones(x.shape[0], 1, dtype=x.dtype, device=x.device)], dim=1)  # bias column


def _ridge(x: torch.Tensor, y: torch.Tensor, l2: float, sample_weight: torch.Tensor | None = None) -> torch.Tensor:
    """argmin_W Σ_i s_i |x_i W - y_i|^2 + l2 * Σ_i s_i * |W_no_bias|^2, (D + 1, C); λ scales with the total weight
    (n when unweighted) so `l2` is size-free."""
    xw = x if sample_weight is None else x * sample_weight[:, None]
    total = x.shape[0] if sample_weight is None else float(sample_weight.sum())
    penalty = torch.full((x.shape[1],), l2 * total, dtype=x.dtype, device=x.device)
    penalty[-1] = 0.0  # the bias is not shrunk
    return torch.linalg.solve(xw.T @ x + torch.diag(penalty), xw.T @ y)


def _balanced_weights(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Per-sample weights 1 / (C_present · count(class)): every class present carries the same total weight, so a
    dominant class (the background) cannot win the fit by itself."""
    counts = torch.bincount(labels, minlength=num_classes).double()
    present = int((counts > 0).sum())
    return (1.0 / (present * counts.clamp_min(1)))[labels] * labels.shape[0]


def _logistic(
    x: torch.Tensor, y: torch.Tensor, num_classes: int, l2: float, max_iter: int, balanced: bool = False
) -> torch.Tensor:
    x = x.float()
    weight = torch.zeros(x.shape[1], num_classes, device=x.device, requires_grad=True)
    optimizer = torch.optim.LBFGS([weight], lr=1.0, max_iter=max_iter, line_search_fn="strong_wolfe")
    class_weight = None
    if balanced:
        counts = torch.bincount(y, minlength=num_classes).float()
        class_weight = torch.where(counts > 0, counts.sum() / (counts.clamp_min(1) * int((counts > 0).sum())), 0.0)

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = F.cross_entropy(x @ weight, y, weight=class_weight) + l2 * weight[:-1].square().sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        optimizer.step(closure)
    return weight.detach().double()


class _LinearMap:
    """A linear map on standardised patch features: `fit(x)` solves for the `(D + 1, C)` weight from the standardised
    training features `x` (bias column last); called on `(B, h, w, D)` features it gives `(B, C, h, w)` scores."""

    def __init__(self, x_raw: torch.Tensor, fit: Callable[[torch.Tensor], torch.Tensor]):
        self.standardize = _Standardize(x_raw)
        self.weight = fit(self.standardize(x_raw))

    def __call__(self, feats: torch.Tensor) -> torch.Tensor:
        num, h, w, dim = feats.shape
        x = self.standardize(feats.to(self.weight.device).reshape(-1, dim))
        return (x @ self.weight).float().reshape(num, h, w, -1).permute(0, 3, 1, 2)


def upsampled_blocks(
    patch_scores: Callable[[torch.Tensor], torch.Tensor], feats: torch.Tensor, size: tuple[int, int]
) -> Iterator[tuple[int, torch.Tensor]]:
    """`(start, scores)` for blocks of images: `patch_scores` maps `(B, h, w, ...)` patch inputs to `(B, C, h, w)`
    scores, upsampled bilinearly here to `(B, C, *size)` (blocks bound the memory of full-resolution scores)."""
    for start in range(0, feats.shape[0], _CHUNK):
        scores = patch_scores(feats[start : start + _CHUNK])
        yield start, F.interpolate(scores, size=size, mode="bilinear", align_corners=False)


def score_segmentation(
    blocks: Iterator[tuple[int, torch.Tensor]],
    masks: torch.Tensor,
    num_classes: int,
    ignore_index: int | None,
    return_predictions: bool,
) -> dict[str, Any]:
    """Argmax of each block of [`upsampled_blocks`] scored against the `(M, H, W)` label maps `masks`: the
    [`tips_hf.metrics.mean_iou`] keys, and `predictions` (`(M, H, W)` labels) when asked."""
    confusion = np.zeros((num_classes, num_classes), dtype=np.int64)
    predictions = torch.empty(masks.shape, dtype=torch.long) if return_predictions else None
    for start, scores in blocks:
        labels = scores.argmax(dim=1).cpu()
        stop = start + labels.shape[0]
        confusion += segmentation_confusion_matrix(labels, masks[start:stop], num_classes, ignore_index)
        if predictions is not None:
            predictions[start:stop] = labels
    result: dict[str, Any] = iou_from_confusion(confusion)
    if predictions is not None:
        result["predictions"] = predictions
    return result


@torch.no_grad()
def linear_probe_segmentation(
    train_feats: torch.Tensor,
    train_masks: torch.Tensor,
    test_feats: torch.Tensor,
    test_masks: torch.Tensor,
    num_classes: int,
    ignore_index: int | None = None,
    method: str = "ridge",
    l2: float = 1e-3,
    target_mode: str = "majority",
    max_iter: int = 100,
    max_train_patches: int | None = None,
    seed: int = 0,
    return_predictions: bool = False,
    class_balanced: bool = False,
) -> dict[str, Any]:
    """Fit a linear classifier on frozen patch features and score it on full-resolution label maps.

    Args:
        train_feats (`torch.Tensor` of shape `(N, h, w, D)`): training patch features (e.g. `patch_embeds`).
        train_masks (`torch.LongTensor` of shape `(N, H, W)`): training label maps; reduced to the patch grid with
            [`patch_targets`] (`target_mode`).
        test_feats (`torch.Tensor` of shape `(M, h', w', D)`): test patch features.
        test_masks (`torch.LongTensor` of shape `(M, H', W')`): test label maps (the evaluation resolution).
        num_classes (`int`): number of classes `C`.
        ignore_index (`int`, *optional*): void label, neither trained on nor scored.
        method (`str`, defaults to `"ridge"`): `"ridge"` (closed form, one-hot targets) or `"logistic"` (L-BFGS).
        l2 (`float`, defaults to 1e-3): weight penalty (ridge: λ = l2 × number of patches; logistic: on the sum of
            squared weights).
        target_mode (`str`, defaults to `"majority"`): `"majority"` or `"nearest"`.
        max_iter (`int`, defaults to 100): L-BFGS iterations (logistic only).
        max_train_patches (`int`, *optional*): fit on a random subset of this many patches (drawn with `seed`).
        seed (`int`, defaults to 0): seed of that subset; the fit itself is deterministic.
        return_predictions (`bool`): also return the predicted `(M, H', W')` label maps.
        class_balanced (`bool`, defaults to `False`): weight the training patches so that every class present has the
            same total weight (inverse-frequency weights); otherwise a dominant background class can win everywhere.

    Returns:
        `dict` with `mean_iou`, `per_category_iou`, `pixel_accuracy`, `mean_accuracy`, `per_category_accuracy` (see
        [`tips_hf.metrics.mean_iou`]) and optionally `predictions`. Test scores are upsampled bilinearly from the
        patch grid to `(H', W')` before the argmax.
    """
    train_feats, test_feats = _check_features("train_feats", train_feats), _check_features("test_feats", test_feats)
    train_masks = torch.as_tensor(train_masks).long().to(train_feats.device)
    test_masks = torch.as_tensor(test_masks).long()
    _check_maps("train_masks", train_masks, train_feats, "N")
    _check_maps("test_masks", test_masks, test_feats, "M")
    if method not in ("ridge", "logistic"):
        raise ValueError(f"method must be 'ridge' or 'logistic', got {method!r}.")
    for name, masks in (("train_masks", train_masks), ("test_masks", test_masks)):
        bad = (masks < 0) | (masks >= num_classes)
        if ignore_index is not None:
            bad &= masks != ignore_index
        if bool(bad.any()):
            raise ValueError(f"{name} hold labels outside [0, {num_classes}) that are not ignore_index={ignore_index}.")

    targets = patch_targets(train_masks, train_feats.shape[1:3], num_classes, ignore_index, target_mode).reshape(-1)
    rows, x_raw = _training_patches(
        train_feats, targets >= 0, max_train_patches, seed, "No training patch has a label (all void?)."
    )
    y = targets[rows]

    def fit(x: torch.Tensor) -> torch.Tensor:
        if method == "logistic":
            return _logistic(x, y, num_classes, l2, max_iter, balanced=class_balanced)
        sample_weight = _balanced_weights(y, num_classes) if class_balanced else None
        return _ridge(x, F.one_hot(y, num_classes).double(), l2, sample_weight)

    probe = _LinearMap(x_raw.double(), fit)
    blocks = upsampled_blocks(probe, test_feats, tuple(test_masks.shape[1:]))
    return score_segmentation(blocks, test_masks, num_classes, ignore_index, return_predictions)


@torch.no_grad()
def linear_probe_depth(
    train_feats: torch.Tensor,
    train_depth: torch.Tensor,
    test_feats: torch.Tensor,
    test_depth: torch.Tensor,
    train_valid: torch.Tensor | None = None,
    test_valid: torch.Tensor | None = None,
    l2: float = 1e-3,
    max_train_patches: int | None = None,
    seed: int = 0,
    return_predictions: bool = False,
) -> dict[str, Any]:
    """Fit a ridge regression from frozen patch features to depth and score it at full resolution.

    Args:
        train_feats (`torch.Tensor` of shape `(N, h, w, D)`): training patch features.
        train_depth (`torch.FloatTensor` of shape `(N, H, W)`): training depth; each patch's target is the mean of
            its valid pixels (finite, and `train_valid` where given).
        test_feats (`torch.Tensor` of shape `(M, h', w', D)`): test patch features.
        test_depth (`torch.FloatTensor` of shape `(M, H', W')`): test depth (the evaluation resolution).
        train_valid, test_valid (`torch.BoolTensor` of the depth shapes, *optional*): valid-pixel masks.
        l2 (`float`, defaults to 1e-3): ridge penalty (λ = l2 × number of patches).
        max_train_patches (`int`, *optional*): fit on a random subset of this many patches (drawn with `seed`).
        seed (`int`, defaults to 0): seed of that subset.
        return_predictions (`bool`): also return the predicted `(M, H', W')` depth maps.

    Returns:
        `dict` with `rmse`, `abs_rel` and `num_pixels` (see [`tips_hf.metrics.depth_errors`]) and optionally
        `predictions`. Patch predictions are upsampled bilinearly to `(H', W')`.
    """
    train_feats, test_feats = _check_features("train_feats", train_feats), _check_features("test_feats", test_feats)
    train_depth = torch.as_tensor(train_depth).float().to(train_feats.device)
    test_depth = torch.as_tensor(test_depth).float()
    _check_maps("train_depth", train_depth, train_feats, "N")
    _check_maps("test_depth", test_depth, test_feats, "M")
    valid = torch.isfinite(train_depth)
    if train_valid is not None:
        valid &= torch.as_tensor(train_valid).bool().to(valid.device)
    targets, has_target = _patch_mean(torch.nan_to_num(train_depth), valid, tuple(train_feats.shape[1:3]))
    rows, x_raw = _training_patches(
        train_feats, has_target, max_train_patches, seed, "No training patch has a valid depth."
    )
    probe = _LinearMap(x_raw.double(), lambda x: _ridge(x, targets.reshape(-1, 1)[rows], l2))

    predictions = torch.empty(test_depth.shape, dtype=torch.float32)
    for start, block in upsampled_blocks(probe, test_feats, tuple(test_depth.shape[1:])):
        predictions[start : start + block.shape[0]] = block[:, 0].cpu()
    result: dict[str, Any] = depth_errors(predictions, test_depth, valid_mask=test_valid)
    if return_predictions:
        result["predictions"] = predictions
    return result


__all__ = ["linear_probe_depth", "linear_probe_segmentation", "patch_targets"]
