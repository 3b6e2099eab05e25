# Copyright 2026 The tips-hf authors. Licensed under the Apache License, Version 2.0.
"""Readers for the dense benchmarks' own layouts (ADE20K, PASCAL VOC, NYU Depth v2) and their `datasets` forms.

Each reader returns a list of records `(image, target, name)` where `image` and `target` are paths (or row values
of a `datasets` dataset) and `name` identifies the example in error messages; the task modules decode them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .common import IMAGE_COLUMNS as COMMON_IMAGE_COLUMNS
from .common import EvalError, EvalOptions, evenly_spaced, load_hf, pick_column, read_label_map

IMAGE_COLUMNS = (*COMMON_IMAGE_COLUMNS, "pixel_values")
SEGMENTATION_COLUMNS = ("annotation", "label", "mask", "segmentation", "semantic_segmentation", "gt")
DEPTH_COLUMNS = ("depth_map", "depth", "depth_gt")

# NYU Depth v2 evaluation conventions (Eigen et al. 2014; used by BTS, AdaBins, DINOv2): depth in metres, valid
# between 1e-3 and 10, scored inside the Eigen crop of the 480×640 maps (rows 45:471, columns 41:601).
NYU_MIN_DEPTH, NYU_MAX_DEPTH = 1e-3, 10.0
EIGEN_CROP = (45, 471, 41, 601)


def ade20k_records(root: Path, split: str, limit: int | None) -> list[tuple[Path, Path, str]]:
    """`ADEChallengeData2016/{images,annotations}/<split>/` (`.jpg` images, `.png` maps with the same stem)."""
    base = root / "ADEChallengeData2016" if (root / "ADEChallengeData2016").is_dir() else root
    images, annotations = base / "images" / split, base / "annotations" / split
    for folder in (images, annotations):
        if not folder.is_dir():
            raise EvalError(
                f"{folder}: folder not found (ADE20K layout: images/<split>/*.jpg, annotations/<split>/*.png)"
            )
    files = sorted(p for p in images.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    if not files:
        raise EvalError(f"{images}: no image")
    records = []
    for index in evenly_spaced(len(files), limit):
        image = files[index]
        label = annotations / f"{image.stem}.png"
        if not label.is_file():
            raise EvalError(f"{image}: no annotation {label}")
        records.append((image, label, str(image)))
    return records


def voc_records(root: Path, split: str, limit: int | None) -> list[tuple[Path, Path, str]]:
    """`VOCdevkit/VOC2012/{ImageSets/Segmentation/<split>.txt, JPEGImages/<id>.jpg, SegmentationClass/<id>.png}`;
    ids missing from `SegmentationClass` are looked up in `SegmentationClassAug` (the SBD-augmented `trainaug`)."""
    base = root
    for candidate in (root / "VOCdevkit" / "VOC2012", root / "VOC2012"):
        if candidate.is_dir():
            base = candidate
    list_file = base / "ImageSets" / "Segmentation" / f"{split}.txt"
    if not list_file.is_file():
        raise EvalError(f"{list_file}: split list not found (PASCAL VOC layout: ImageSets/Segmentation/<split>.txt)")
    ids = [line.split()[0] for line in list_file.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not ids:
        raise EvalError(f"{list_file}: no image id")
    records = []
    for index in evenly_spaced(len(ids), limit):
        image_id = ids[index]
        image = base / "JPEGImages" / f"{image_id}.jpg"
        if not image.is_file():
            raise EvalError(f"{list_file}: image of id {image_id!r} not found: {image}")
        for folder in ("SegmentationClass", "SegmentationClassAug"):
            label = base / folder / f"{image_id}.png"
            if label.is_file():
                break
        else:
            raise EvalError(f"{list_file}: no label map for id {image_id!r} in {base / 'SegmentationClass'}")
        records.append((image, label, str(image)))
    return records


def nyu_records(root: Path, split: str, limit: int | None) -> list[tuple[Path, Path, str]]:
    """NYU Depth v2 as BTS / DINOv2 use it: a list file `<root>/<split>.txt` (or `nyu_<split>.txt`) with lines
    `rgb_path depth_path [focal]` relative to `<root>`, `<root>/sync` or `<root>/official_splits/<split>` (BTS's
    `nyudepthv2_{train,test}_files_with_gt.txt` work as they are; a leading `/` is allowed), or else every `rgb_*.jpg` under
    `<root>/<split>/` with its `sync_depth_*.png` (or `depth_*.png` / `.npy`) beside it. Depth PNGs are uint16
    millimetres."""
    records = []
    for name in (f"{split}.txt", f"nyu_{split}.txt", f"nyudepthv2_{split}_files_with_gt.txt"):
        list_file = root / name
        if list_file.is_file():
            lines = [line.split() for line in list_file.read_text(encoding="utf-8").splitlines() if line.strip()]
            for number, parts in enumerate(lines, 1):
                if len(parts) < 2:
                    raise EvalError(f"{list_file}:{number}: expected 'rgb_path depth_path [focal]'")
                # BTS lists are relative to `sync/` (train) and `official_splits/test/` (test).
                bases = (root, root / "sync", root / "official_splits" / split)
                base = next((b for b in bases if (b / parts[0].lstrip("/")).is_file()), root)
                image, depth = (base / part.lstrip("/") for part in parts[:2])
                for path in (image, depth):
                    if not path.is_file():
                        raise EvalError(f"{list_file}:{number}: file not found: {path}")
                records.append((image, depth, str(image)))
            break
    else:
        folder = root / split
        if not folder.is_dir():
            raise EvalError(
                f"{root}: neither a list file {split}.txt nor a folder {folder} (NYU layout: rgb_*.jpg + sync_depth_*.png)"
            )
        for image in sorted(folder.rglob("rgb_*")):
            if image.suffix.lower() not in (".jpg", ".jpeg", ".png"):
                continue
            stem = image.stem[len("rgb_") :]
            for candidate in (f"sync_depth_{stem}.png", f"depth_{stem}.png", f"depth_{stem}.npy"):
                if (image.parent / candidate).is_file():
                    records.append((image, image.parent / candidate, str(image)))
                    break
            else:
                raise EvalError(f"{image}: no depth map beside it (sync_depth_{stem}.png)")
    if not records:
        raise EvalError(f"{root}: no NYU example in split {split!r}")
    return [records[i] for i in evenly_spaced(len(records), limit)]


def hf_records(data: Any, split: str, options: EvalOptions, target_columns: tuple[str, ...], what: str) -> list:
    dataset = load_hf(data, split, options)
    columns = list(dataset.column_names or [])
    image_column = pick_column(columns, options.image_column, IMAGE_COLUMNS, "image")
    target_column = pick_column(columns, options.label_column, target_columns, what)
    rows = dataset if hasattr(dataset, "__len__") else list(dataset)
    return [_HFRecord(rows, i, image_column, target_column) for i in range(len(rows))]


class _HFRecord(tuple):
    """(image, target, name) of row `index`, decoded only when read (so that workers decode in parallel)."""

    def __new__(cls, rows: Any, index: int, image_column: str, target_column: str):
        return super().__new__(cls, (rows, index, image_column, target_column))

    def unpack(self) -> tuple[Any, Any, str]:
        rows, index, image_column, target_column = self
        row = rows[index]
        return row[image_column], row[target_column], f"row {index}"


def unpack(record: Any) -> tuple[Any, Any, str]:
    return record.unpack() if isinstance(record, _HFRecord) else record


def segmentation_target(source: Any, name: str, reduce_zero_label: bool, num_classes: int) -> np.ndarray:
    """Label map as int64 with 255 for void; ADE20K's raw maps (0 = "other", k = class k - 1) are shifted when
    `reduce_zero_label`. Values outside `[0, num_classes)` other than 255 are an error naming the example."""
    labels = read_label_map(source, name).astype(np.int64)
    if reduce_zero_label:
        labels = np.where((labels == 0) | (labels == 255), 255, labels - 1)
    bad = (labels != 255) & ((labels < 0) | (labels >= num_classes))
    if bad.any():
        raise EvalError(
            f"{name}: label values {sorted(set(labels[bad].tolist()))[:5]} outside [0, {num_classes}) and not 255"
        )
    return labels


def depth_target(source: Any, name: str, scale: float) -> np.ndarray:
    """Depth in metres: integer maps are divided by `scale` (1000 for NYU's millimetre PNGs), float maps are taken
    as metres."""
    depth = read_label_map(source, name)
    return depth.astype(np.float32) / scale if np.issubdtype(depth.dtype, np.integer) else depth.astype(np.float32)


def nyu_valid_mask(depth: np.ndarray, eigen_crop: bool) -> np.ndarray:
    valid = np.isfinite(depth) & (depth > NYU_MIN_DEPTH) & (depth < NYU_MAX_DEPTH)
    if eigen_crop and depth.shape == (480, 640):
        crop = np.zeros_like(valid)
        top, bottom, left, right = EIGEN_CROP
        crop[top:bottom, left:right] = True
        valid &= crop
    return valid
