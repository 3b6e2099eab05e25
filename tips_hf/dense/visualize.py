# Copyright 2026 The tips-hf authors. Licensed under the Apache License, Version 2.0.
"""Colourised segmentation maps with a legend; depth and surface-normal pictures."""

from __future__ import annotations

import colorsys
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

BACKGROUND_COLOR = (64, 64, 64)
# Sasha Trubetskoy's 20 distinct colours (without the greys, white and black), then golden-angle hues.
_BASE_PALETTE = (
    (230, 25, 75),
    (60, 180, 75),
    (0, 130, 200),
    (255, 225, 25),
    (245, 130, 48),
    (145, 30, 180),
    (70, 240, 240),
    (240, 50, 230),
    (210, 245, 60),
    (250, 190, 212),
    (0, 128, 128),
    (220, 190, 255),
    (170, 110, 40),
    (255, 250, 200),
    (128, 0, 0),
    (170, 255, 195),
    (128, 128, 0),
    (255, 215, 180),
    (0, 0, 128),
)


def palette(num_classes: int) -> np.ndarray:
    """Fixed colours for `num_classes` classes, `(num_classes, 3)` uint8: the same class always gets the same colour,
    whatever `num_classes` is."""
    colors = list(_BASE_PALETTE[:num_classes])
    for index in range(len(colors), num_classes):
        hue = (index * 0.618033988749895) % 1.0
        saturation, value = (0.85, 0.95) if index % 2 else (0.55, 0.75)
        colors.append(tuple(round(255 * c) for c in colorsys.hsv_to_rgb(hue, saturation, value)))
    return np.asarray(colors, dtype=np.uint8).reshape(num_classes, 3)


def colorize_segmentation(labels: Any, num_classes: int, background_index: int | None = None) -> np.ndarray:
    """Paint a label map.

    Args:
        labels (`np.ndarray` or `torch.Tensor` of shape `(H, W)`): class ids.
        num_classes (`int`): number of classes; ids outside `[0, num_classes)` (e.g. -1 from a background threshold,
            or 255 void) are background.
        background_index (`int`, *optional*): a class id to paint as background too (e.g. 0 when class 0 is
            "background").

    Returns:
        `np.ndarray` of shape `(H, W, 3)`, uint8 RGB; background is dark grey `(64, 64, 64)`.
    """
    labels = labels.detach().cpu().numpy() if isinstance(labels, torch.Tensor) else np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(f"labels must be (H, W), got shape {labels.shape}.")
    labels = labels.astype(np.int64)
    colors = np.concatenate([palette(num_classes), np.asarray([BACKGROUND_COLOR], dtype=np.uint8)])
    background = (labels < 0) | (labels >= num_classes)
    if background_index is not None:
        background |= labels == background_index
    return colors[np.where(background, num_classes, labels)]


def _image_array(image: Any, size: tuple[int, int]) -> np.ndarray:
    """(H, W, 3) uint8 from a PIL image, an (H, W, 3) uint8 array or a (3, H, W) [0, 1] tensor, resized to size."""
    from PIL import Image

    if isinstance(image, Image.Image):
        picture = image.convert("RGB")
    else:
        if isinstance(image, torch.Tensor):
            array = image.detach().float().clamp(0, 1).cpu()
            array = (array.permute(1, 2, 0) if array.ndim == 3 and array.shape[0] in (1, 3) else array).numpy()
            array = (array * 255).round().astype(np.uint8)
        else:
            array = np.asarray(image)
            if array.dtype != np.uint8:
                array = (np.clip(array, 0, 1) * 255).round().astype(np.uint8)
        if array.ndim == 3 and array.shape[-1] == 1:
            array = array[..., 0]
        picture = Image.fromarray(array).convert("RGB")
    if picture.size != (size[1], size[0]):
        picture = picture.resize((size[1], size[0]), Image.BILINEAR)
    return np.asarray(picture)


def segmentation_picture(
    image: Any,
    labels: Any,
    class_names: Sequence[str],
    background_index: int | None = None,
    gap: int = 4,
) -> np.ndarray:
    """The image and its coloured label map side by side, above a legend with one row per class present.

    Args:
        image (PIL image, `(H, W, 3)` uint8 array or `(3, H, W)` tensor in [0, 1]): resized to the label map.
        labels (`(H, W)` array or tensor): class ids (see [`colorize_segmentation`]).
        class_names (`Sequence[str]`): name of each class; their number is the number of classes.
        background_index (`int`, *optional*): see [`colorize_segmentation`].
        gap (`int`): white pixels between the panels.

    Returns:
        `np.ndarray` of shape `(H + legend, 2W + gap, 3)`, uint8.
    """
    from PIL import Image, ImageDraw, ImageFont

    colored = colorize_segmentation(labels, len(class_names), background_index)
    height, width = colored.shape[:2]
    left = _image_array(image, (height, width))
    label_array = np.asarray(labels.detach().cpu() if isinstance(labels, torch.Tensor) else labels).astype(np.int64)
    colors = palette(len(class_names))
    present = [int(c) for c in np.unique(label_array)]
    rows = [
        (tuple(int(v) for v in colors[c]), str(class_names[c]))
        for c in present
        if 0 <= c < len(class_names) and c != background_index
    ]
    if len(rows) < len(present):  # some pixels are background
        rows.append((BACKGROUND_COLOR, "background"))

    font = ImageFont.load_default()
    row_height, swatch, margin = 16, 12, 4
    canvas = Image.new("RGB", (2 * width + gap, height + margin + row_height * len(rows) + margin), "white")
    canvas.paste(Image.fromarray(left), (0, 0))
    canvas.paste(Image.fromarray(colored), (width + gap, 0))
    draw = ImageDraw.Draw(canvas)
    for index, (color, name) in enumerate(rows):
        top = height + margin + index * row_height
        draw.rectangle([margin, top + 2, margin + swatch, top + 2 + swatch], fill=color, outline=(0, 0, 0))
        draw.text((margin + swatch + 6, top + 2), name, fill=(0, 0, 0), font=font)
    return np.asarray(canvas)


def save_segmentation_picture(
    path: str | os.PathLike,
    image: Any,
    labels: Any,
    class_names: Sequence[str],
    background_index: int | None = None,
) -> None:
    """Write [`segmentation_picture`] as a PNG (to a temporary name, then renamed, so readers never see half a
    file). Labels at another resolution than the image are fine: the image is resized to the label map."""
    from PIL import Image

    picture = segmentation_picture(image, labels, class_names, background_index)
    path = os.fspath(path)
    tmp = f"{path}.tmp.png"
    Image.fromarray(picture).save(tmp)
    os.replace(tmp, path)


# Anchors of a perceptually ordered dark-to-bright map (sampled from matplotlib's "magma"), interpolated linearly.
_DEPTH_ANCHORS = np.asarray(
    [(0, 0, 4), (40, 11, 84), (101, 21, 110), (159, 42, 99), (212, 72, 66), (245, 125, 21), (250, 193, 39),
     (252, 253, 191)],
    dtype=np.float64,
)


def colorize_depth(depth: Any, vmin: float | None = None, vmax: float | None = None) -> np.ndarray:
    """Paint a depth map: near is bright, far is dark (the usual depth-picture convention).

    Args:
        depth (`np.ndarray` or `torch.Tensor` of shape `(H, W)`): depth in any unit; non-finite pixels are black.
        vmin, vmax (`float`, *optional*): the depth range mapped to the colours (default: the map's 2nd and 98th
            percentiles, so that a few outliers do not flatten the picture).

    Returns:
        `np.ndarray` of shape `(H, W, 3)`, uint8 RGB.
    """
    depth = depth.detach().float().cpu().numpy() if isinstance(depth, torch.Tensor) else np.asarray(depth, float)
    if depth.ndim != 2:
        raise ValueError(f"depth must be (H, W), got shape {depth.shape}.")
    finite = np.isfinite(depth)
    values = depth[finite]
    low = vmin if vmin is not None else (float(np.percentile(values, 2)) if values.size else 0.0)
    high = vmax if vmax is not None else (float(np.percentile(values, 98)) if values.size else 1.0)
    scaled = np.clip((depth - low) / max(high - low, 1e-12), 0.0, 1.0)
    position = (1.0 - np.where(finite, scaled, 1.0)) * (len(_DEPTH_ANCHORS) - 1)  # near (0) -> brightest anchor
    lower = np.floor(position).astype(np.int64).clip(0, len(_DEPTH_ANCHORS) - 2)
    weight = (position - lower)[..., None]
    colors = _DEPTH_ANCHORS[lower] * (1 - weight) + _DEPTH_ANCHORS[lower + 1] * weight
    colors[~finite] = 0
    return colors.round().astype(np.uint8)


def colorize_normals(normals: Any) -> np.ndarray:
    """Paint surface normals `(3, H, W)` (any length; normalised here) as RGB = (n + 1) / 2, the usual convention.

    Returns:
        `np.ndarray` of shape `(H, W, 3)`, uint8; zero or non-finite vectors are grey.
    """
    normals = normals.detach().float().cpu() if isinstance(normals, torch.Tensor) else torch.as_tensor(normals)
    if normals.ndim != 3 or normals.shape[0] != 3:
        raise ValueError(f"normals must be (3, H, W), got shape {tuple(normals.shape)}.")
    unit = torch.nn.functional.normalize(torch.nan_to_num(normals.double(), 0.0), dim=0)
    return ((unit + 1) * 127.5).round().clamp(0, 255).byte().permute(1, 2, 0).numpy()


def side_by_side(image: Any, painted: np.ndarray, gap: int = 4) -> np.ndarray:
    """The image (resized to the painted map) and the painted map, separated by `gap` white pixels: (H, 2W + gap, 3)."""
    height, width = painted.shape[:2]
    canvas = np.full((height, 2 * width + gap, 3), 255, dtype=np.uint8)
    canvas[:, :width] = _image_array(image, (height, width))
    canvas[:, width + gap :] = painted
    return canvas


def save_picture(path: str | os.PathLike, picture: np.ndarray) -> None:
    """Write an (H, W, 3) uint8 picture as a PNG, atomically (temporary name, then renamed)."""
    from PIL import Image

    path = os.fspath(path)
    tmp = f"{path}.tmp.png"
    Image.fromarray(picture).save(tmp)
    os.replace(tmp, path)


__all__ = [
    "BACKGROUND_COLOR",
    "colorize_depth",
    "colorize_normals",
    "save_picture",
    "side_by_side",
    "colorize_segmentation",
    "palette",
    "save_segmentation_picture",
    "segmentation_picture",
]
