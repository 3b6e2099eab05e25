# Copyright 2026 The tips-hf authors. Licensed under the Apache License, Version 2.0.
"""Spatial scenes: a procedural, embedded image-text dataset for offline TIPS pretraining and evaluation.

Every example is a few coloured shapes with known positions, sizes and depth order, drawn on a textured background,
together with

- a short, noisy *alt-text* (what a web crawl would give: one object, a colour, a file name, or nothing useful),
- two *synthetic captions* (a short one naming the objects, and a dense one with sizes, 3x3-grid positions and
  occlusion relations), as in the TIPS recipe where synthetic captions carry the spatial information,
- per-pixel labels: the class of the visible object (`class_mask`) and its depth order (`depth`),
- the list of objects, with their geometry.

Example `i` of a split depends only on `(seed, split, i)`, so the dataset is random-access, reproducible across
processes, and the train / validation / test splits never share an image. Rendering is numpy + PIL only, about a
millisecond per 112-px example.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import io
import json
import math
import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw

__all__ = [
    "CLASS_NAMES",
    "COLORS",
    "COLOR_RGB",
    "POSITION_PHRASES",
    "SHAPES",
    "SIZE_WORDS",
    "SPLITS",
    "SceneConfig",
    "SpatialScenes",
    "class_palette",
    "grid_cell",
    "load_scenes_dataset",
    "save_preview",
    "scene_prompts",
]

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star", "cross", "ring", "heart", "crescent")
"""Object shapes; `SHAPES[i - 1]` is class `i` of `CLASS_NAMES`."""

COLOR_RGB: dict[str, tuple[int, int, int]] = {
    "red": (215, 35, 35),
    "orange": (245, 135, 20),
    "yellow": (240, 215, 35),
    "green": (35, 165, 55),
    "cyan": (35, 200, 215),
    "blue": (35, 70, 215),
    "purple": (135, 55, 185),
    "pink": (245, 125, 185),
    "white": (245, 245, 245),
    "black": (25, 25, 25),
}
"""Nominal RGB of each colour word; rendered objects are jittered around it (see `SceneConfig.color_jitter`)."""

COLORS: tuple[str, ...] = tuple(COLOR_RGB)

CLASS_NAMES: tuple[str, ...] = ("background",) + SHAPES
"""Per-pixel / per-image classes: index 0 is the background, index `i >= 1` is `SHAPES[i - 1]`."""

SPLITS: dict[str, int] = {"train": 0, "validation": 1, "test": 2}
"""Split name -> split id mixed into the random seed (different ids give disjoint streams of scenes)."""

SIZE_WORDS: dict[str, tuple[float, float]] = {"small": (0.17, 0.24), "medium": (0.28, 0.35), "large": (0.39, 0.48)}
"""Size word -> range of the object's diameter as a fraction of the image side. The gaps keep the words unambiguous."""

# (row, column) of the 3x3 grid -> phrase used in the detailed caption. All nine are distinct, none contains another.
POSITION_PHRASES: dict[tuple[int, int], str] = {
    (0, 0): "in the top left",
    (0, 1): "at the top",
    (0, 2): "in the top right",
    (1, 0): "on the left",
    (1, 1): "in the center",
    (1, 2): "on the right",
    (2, 0): "in the bottom left",
    (2, 1): "at the bottom",
    (2, 2): "in the bottom right",
}

_TEXTURES: tuple[str, ...] = ("gradient", "striped", "checkered", "mottled")
# Texture -> (adjective for "on a ... background", phrase for "the background is ...").
_TEXTURE_WORDS = {
    "gradient": ("gradient", "a smooth gradient"),
    "striped": ("striped", "striped"),
    "checkered": ("checkered", "checkered"),
    "mottled": ("mottled", "mottled"),
}

# Bump when the rendering or the captions change, so that cached HF datasets of older versions are not reused.
_GENERATOR_VERSION = 1

_MAX_OBJECTS_LIMIT = 8


def _unit_polygon(shape: str) -> np.ndarray:
    """Vertices (N, 2) of a shape of radius ~1 centred on the origin (y pointing down)."""
    if shape == "square":
        h = 0.82
        return np.array([[-h, -h], [h, -h], [h, h], [-h, h]])
    if shape == "triangle":
        angles = np.deg2rad([-90.0, 30.0, 150.0])
        # The circumcentre of an upward triangle sits high in its bounding box; shift it down to centre the box.
        return np.stack([np.cos(angles), np.sin(angles) + 0.22], axis=1) * 1.08
    if shape == "star":
        angles = np.deg2rad(-90.0 + 36.0 * np.arange(10))
        radius = np.where(np.arange(10) % 2 == 0, 1.05, 0.45)
        return np.stack([radius * np.cos(angles), radius * np.sin(angles) + 0.08], axis=1)
    if shape == "cross":
        a, w = 0.95, 0.33
        return np.array(
            [[-w, -a], [w, -a], [w, -w], [a, -w], [a, w], [w, w], [w, a], [-w, a], [-w, w], [-a, w], [-a, -w], [-w, -w]]
        )
    if shape == "heart":
        t = np.linspace(0.0, 2.0 * np.pi, 48, endpoint=False)
        x = 16.0 * np.sin(t) ** 3
        y = -(13.0 * np.cos(t) - 5.0 * np.cos(2 * t) - 2.0 * np.cos(3 * t) - np.cos(4 * t))
        return np.stack([x / 16.5, (y + 2.5) / 15.5], axis=1)
    raise KeyError(shape)


_UNIT_POLYGONS = {shape: _unit_polygon(shape) for shape in ("square", "triangle", "star", "cross", "heart")}


def grid_cell(x: float, y: float) -> tuple[int, int]:
    """(row, column) of the 3x3 grid cell holding the normalised point (x, y) in [0, 1]."""
    return min(int(y * 3.0), 2), min(int(x * 3.0), 2)


def scene_prompts(template: str = "a {}", background: str = "a textured background") -> dict[str, str]:
    """Text prompts for zero-shot classification / segmentation of `CLASS_NAMES`.

    Args:
        template (`str`, defaults to `"a {}"`): format string applied to each shape name, e.g. `"a photo of a {}"`.
        background (`str`, defaults to `"a textured background"`): prompt of class 0.

    Returns:
        `dict[str, str]`: class name -> prompt, in `CLASS_NAMES` order.
    """
    if "{}" not in template:
        raise ValueError(f"template must contain '{{}}', got {template!r}.")
    return {"background": background, **{shape: template.format(shape) for shape in SHAPES}}


def class_palette() -> np.ndarray:
    """(len(CLASS_NAMES), 3) uint8 colours to draw class masks: black background, distinct hues for the shapes."""
    colors = [(0, 0, 0)]
    for i in range(len(SHAPES)):
        hue = i / len(SHAPES)
        # HSV -> RGB at full saturation / value, by hand to avoid a colorsys loop per pixel.
        k = (np.array([5.0, 3.0, 1.0]) + hue * 6.0) % 6.0
        rgb = 1.0 - np.clip(np.minimum(k, 4.0 - k), 0.0, 1.0)
        colors.append(tuple(int(round(255 * c)) for c in rgb))
    return np.array(colors, dtype=np.uint8)


@dataclass(frozen=True)
class SceneConfig:
    """Configuration of the spatial-scenes generator.

    Args:
        image_size (`int`, defaults to 112): side of the square images in pixels; a positive multiple of 14 (the TIPS
            patch size), so that images tile into whole patches.
        min_objects (`int`, defaults to 1): minimum number of objects per scene (at least 1).
        max_objects (`int`, defaults to 4): maximum number of objects per scene (at most 8). The number is drawn
            uniformly in `[min_objects, max_objects]`; objects beyond `min_objects` that cannot be placed without
            hiding another one are dropped.
        seed (`int`, defaults to 0): non-negative seed; example `i` of a split is drawn from
            `np.random.default_rng([seed, split_id, i])`.
        supersample (`int`, defaults to 2): shapes are drawn at `supersample` times the resolution and box-averaged
            down for anti-aliasing (1 disables it). Masks use the pixels whose coverage is at least one half.
        min_visible_fraction (`float`, defaults to 0.5): every object keeps at least this fraction of its silhouette
            visible after occlusion; a new object that would hide more of an earlier one is re-sampled, so captions
            only ever describe clearly visible objects.
        min_occlusion_fraction (`float`, defaults to 0.05): two objects are said to overlap ("in front of" /
            "partly hidden behind" in the detailed caption) when the nearer one hides at least this fraction of the
            farther one's silhouette.
        min_contrast (`float`, defaults to 70.0): an object's colour is re-drawn (a few times) when its mean RGB
            distance to what lies beneath it is below this, so that objects stand out from the texture.
        color_jitter (`int`, defaults to 18): per-channel uniform jitter (+/-) of an object's colour around its
            nominal `COLOR_RGB` value.
        max_shading (`float`, defaults to 0.25): maximum strength of the linear shading across each object.
        background_palette_prob (`float`, defaults to 0.35): probability that each of the two background colours is
            taken from the object colours (jittered) instead of uniformly at random, so that colour alone cannot
            segment the objects.
        max_noise_std (`float`, defaults to 6.0): the image gets Gaussian pixel noise with a standard deviation drawn
            uniformly in `[0, max_noise_std]` (0-255 scale).
        max_placement_attempts (`int`, defaults to 30): attempts to place each object before it is dropped (objects
            needed to reach `min_objects` get more attempts and fall back to the small size).
        object_scale (`float`, defaults to 1.0): multiplies every object diameter (the `SIZE_WORDS` ranges; the size
            words stay ordered and disjoint). Above 1 the objects cover more of the image: easier to learn from at
            toy scale, where a small model's CLS token first sees mostly the background. At most 2.
        background_contrast (`float`, defaults to 1.0): scales the background's deviation from its mean colour
            (texture amplitude); 1 keeps the full texture, 0 gives a flat background.
    """

    image_size: int = 112
    min_objects: int = 1
    max_objects: int = 4
    seed: int = 0
    supersample: int = 2
    min_visible_fraction: float = 0.5
    min_occlusion_fraction: float = 0.05
    min_contrast: float = 70.0
    color_jitter: int = 18
    max_shading: float = 0.25
    background_palette_prob: float = 0.35
    max_noise_std: float = 6.0
    max_placement_attempts: int = 30
    object_scale: float = 1.0
    background_contrast: float = 1.0

    def __post_init__(self) -> None:
        def is_int(value: Any) -> bool:
            return isinstance(value, (int, np.integer)) and not isinstance(value, bool)

        if not is_int(self.image_size) or self.image_size <= 0 or self.image_size % 14:
            raise ValueError(f"image_size must be a positive multiple of 14 (the patch size), got {self.image_size!r}.")
        if not is_int(self.min_objects) or self.min_objects < 1:
            raise ValueError(f"min_objects must be an integer >= 1, got {self.min_objects!r}.")
        if not is_int(self.max_objects) or not self.min_objects <= self.max_objects <= _MAX_OBJECTS_LIMIT:
            raise ValueError(
                f"max_objects must be an integer in [min_objects, {_MAX_OBJECTS_LIMIT}] = "
                f"[{self.min_objects}, {_MAX_OBJECTS_LIMIT}], got {self.max_objects!r}."
            )
        if not is_int(self.seed) or self.seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {self.seed!r}.")
        if not is_int(self.supersample) or not 1 <= self.supersample <= 4:
            raise ValueError(f"supersample must be an integer in [1, 4], got {self.supersample!r}.")
        for name in ("min_visible_fraction", "min_occlusion_fraction", "max_shading", "background_palette_prob"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be a number in [0, 1], got {value!r}.")
        for name in ("min_contrast", "color_jitter", "max_noise_std"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or value < 0:
                raise ValueError(f"{name} must be a non-negative number, got {value!r}.")
        if not is_int(self.max_placement_attempts) or self.max_placement_attempts < 1:
            raise ValueError(f"max_placement_attempts must be an integer >= 1, got {self.max_placement_attempts!r}.")
        if not isinstance(self.object_scale, (int, float)) or not 0.25 <= self.object_scale <= 2.0:
            raise ValueError(f"object_scale must be a number in [0.25, 2], got {self.object_scale!r}.")
        if not isinstance(self.background_contrast, (int, float)) or not 0.0 <= self.background_contrast <= 1.0:
            raise ValueError(f"background_contrast must be a number in [0, 1], got {self.background_contrast!r}.")

    def to_dict(self) -> dict[str, Any]:
        """The fields as a plain (JSON-serialisable) dict."""
        return {k: (int(v) if isinstance(v, np.integer) else v) for k, v in dataclasses.asdict(self).items()}


def _make_config(config: SceneConfig | None, overrides: dict[str, Any]) -> SceneConfig:
    fields = {f.name for f in dataclasses.fields(SceneConfig)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise ValueError(f"Unknown SceneConfig field(s) {unknown}; valid fields are {sorted(fields)}.")
    if config is not None and not isinstance(config, SceneConfig):
        raise ValueError(f"config must be a SceneConfig or None, got {type(config).__name__}.")
    return dataclasses.replace(config or SceneConfig(), **overrides)


# ----------------------------------------------------------------------------------------------------------- render


def _random_color(rng: np.random.Generator, palette_prob: float) -> np.ndarray:
    """A float32 RGB colour: a jittered object colour with probability `palette_prob`, else uniform."""
    if rng.random() < palette_prob:
        rgb = np.array(COLOR_RGB[COLORS[rng.integers(len(COLORS))]]) + rng.uniform(-25, 25, 3)
    else:
        rgb = rng.uniform(0, 255, 3)
    return rgb.astype(np.float32)


@functools.lru_cache(maxsize=8)
def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Normalised pixel-centre coordinates (u = x, v = y), (S, S) float32 each, read-only."""
    coords = (np.arange(size, dtype=np.float32) + 0.5) / size
    u, v = np.meshgrid(coords, coords)
    u.flags.writeable = v.flags.writeable = False
    return u, v


def _background(rng: np.random.Generator, cfg: SceneConfig) -> tuple[np.ndarray, str]:
    """A textured background (3, S, S) float32 in [0, 255] (channels first: numpy is slow on length-3 inner loops)
    and its texture name."""
    size = cfg.image_size
    u, v = _grid(size)
    texture = _TEXTURES[rng.integers(len(_TEXTURES))]
    c1, c2 = _random_color(rng, cfg.background_palette_prob), _random_color(rng, cfg.background_palette_prob)
    angle = rng.uniform(0.0, 2.0 * np.pi)
    along = u * math.cos(angle) + v * math.sin(angle)
    if texture == "gradient":
        t = (along - along.min()) / max(float(along.max() - along.min()), 1e-6)
    elif texture == "striped":
        t = 0.5 + 0.5 * np.sin(2.0 * np.pi * rng.uniform(2.5, 9.0) * along + rng.uniform(0.0, 2.0 * np.pi))
        t = np.clip((t - 0.5) * rng.uniform(1.0, 4.0) + 0.5, 0.0, 1.0)  # from soft waves to hard stripes
    elif texture == "checkered":
        across = -u * math.sin(angle) + v * math.cos(angle)
        cells = rng.uniform(2.5, 8.0)
        t = ((np.floor(along * cells) + np.floor(across * cells)) % 2.0).astype(np.float32)
    else:  # mottled: smooth value noise, a random coarse grid upsampled bicubically
        coarse = int(rng.integers(3, 9))
        noise = Image.fromarray(rng.integers(0, 256, (coarse, coarse), dtype=np.uint8))  # 8-bit: fast resampling
        t = np.asarray(noise.resize((size, size), Image.BICUBIC), dtype=np.float32) * (1.0 / 255.0)
    # A faint second gradient (lighting) so that no texture is perfectly periodic or flat.
    light = 1.0 + rng.uniform(-0.2, 0.2) * (along - 0.5)
    image = (c1[:, None, None] + ((c2 - c1) * cfg.background_contrast)[:, None, None] * t[None]) * light[None]
    return image.astype(np.float32, copy=False), texture


def _silhouette(
    shape: str, cx: float, cy: float, radius: float, angle: float, size: int, k: int
) -> tuple[np.ndarray, tuple[slice, slice]]:
    """Anti-aliased coverage (uint8, 0-255) of one shape, and the (rows, columns) slices of the image it covers.

    Only the shape's bounding box is drawn, on a canvas `k` times finer, then box-averaged down."""
    x0, y0 = max(int((cx - radius) * size) - 1, 0), max(int((cy - radius) * size) - 1, 0)
    x1, y1 = min(int(math.ceil((cx + radius) * size)) + 1, size), min(int(math.ceil((cy + radius) * size)) + 1, size)
    layer = Image.new("L", ((x1 - x0) * k, (y1 - y0) * k), 0)
    draw = ImageDraw.Draw(layer)
    x, y, r = (cx * size - x0) * k, (cy * size - y0) * k, radius * size * k
    if shape in ("circle", "ring", "crescent"):
        draw.ellipse((x - r, y - r, x + r, y + r), fill=255)
        if shape == "ring":
            ri = 0.55 * r
            draw.ellipse((x - ri, y - ri, x + ri, y + ri), fill=0)
        elif shape == "crescent":
            # Bite out an offset disc; `angle` (any direction) says where the bite is.
            bx, by, rb = x + 0.5 * r * math.cos(angle), y + 0.5 * r * math.sin(angle), 0.85 * r
            draw.ellipse((bx - rb, by - rb, bx + rb, by + rb), fill=0)
    else:
        cos, sin = math.cos(angle), math.sin(angle)
        pts = _UNIT_POLYGONS[shape] @ np.array([[cos, sin], [-sin, cos]]) * r + (x, y)
        draw.polygon(pts.ravel().tolist(), fill=255)
    if k > 1:
        layer = layer.reduce(k)
    coverage = np.frombuffer(layer.tobytes(), np.uint8).reshape(layer.height, layer.width)
    return coverage, (slice(y0, y1), slice(x0, x1))


@dataclass
class _Object:
    shape: str
    color: str
    size: str
    mask: np.ndarray  # (S, S) bool silhouette before occlusion (coverage >= 1/2)
    area: int


def _render_scene(cfg: SceneConfig, split_id: int, index: int) -> dict[str, Any]:
    rng = np.random.default_rng([cfg.seed, split_id, index])
    size, k = cfg.image_size, cfg.supersample
    u, v = _grid(size)
    composite, texture = _background(rng, cfg)

    objects: list[_Object] = []
    visible: list[np.ndarray] = []
    target = int(rng.integers(cfg.min_objects, cfg.max_objects + 1))
    for slot in range(target):
        required = slot < cfg.min_objects
        attempts = cfg.max_placement_attempts * (3 if required else 1)
        for attempt in range(attempts):
            fallback = required and attempt >= cfg.max_placement_attempts
            size_word = "small" if fallback else tuple(SIZE_WORDS)[rng.integers(len(SIZE_WORDS))]
            radius = min(float(rng.uniform(*SIZE_WORDS[size_word])) * cfg.object_scale / 2, 0.48)
            shape = SHAPES[rng.integers(len(SHAPES))]
            cx, cy = (float(c) for c in rng.uniform(radius + 0.01, 0.99 - radius, 2))
            angle = rng.uniform(0.0, 2.0 * np.pi) if shape == "crescent" else np.deg2rad(rng.uniform(-25.0, 25.0))
            coverage, window = _silhouette(shape, cx, cy, radius, angle, size, k)
            local = coverage >= 128
            area = int(np.count_nonzero(local))
            # It must not hide too much of an earlier object (only the window can change).
            if area and all(
                np.count_nonzero(vis) - np.count_nonzero(vis[window] & local) >= cfg.min_visible_fraction * obj.area
                for obj, vis in zip(objects, visible)
            ):
                break
        else:
            if required:
                raise RuntimeError(f"Could not place {cfg.min_objects} objects; lower min_objects for this image_size.")
            continue
        mask = np.zeros((size, size), bool)
        mask[window] = local

        # Colour: not the colour of an object it overlaps (they would merge), and contrasting with what is beneath.
        beneath = {obj.color for obj in objects if np.any(obj.mask[window] & local)}
        candidates = [c for c in COLORS if c not in beneath]
        rows, cols = window
        under = composite[:, rows, cols][:, local][:, ::3]  # (3, n) colours beneath the new object (subsampled)
        best, best_contrast = None, -1.0
        for i in rng.permutation(len(candidates))[:4]:
            name = candidates[i]
            jitter = rng.uniform(-1.0, 1.0, 3) * cfg.color_jitter
            rgb = np.clip(np.array(COLOR_RGB[name]) + jitter, 0, 255).astype(np.float32)
            contrast = float(np.sqrt(((under - rgb[:, None]) ** 2).sum(axis=0)).mean())
            if contrast > best_contrast:
                best, best_contrast = (name, rgb), contrast
            if contrast >= cfg.min_contrast:
                break
        color, rgb = best

        # Composite with a linear shading across the object, through the anti-aliased coverage.
        shade_dir = rng.uniform(0.0, 2.0 * np.pi)
        shade = float(rng.uniform(0.0, cfg.max_shading)) / radius
        proj = (u[window] - cx) * math.cos(shade_dir) + (v[window] - cy) * math.sin(shade_dir)
        fill = rgb[:, None, None] * (1.0 + np.clip(shade * proj, -cfg.max_shading, cfg.max_shading))[None]
        alpha = coverage.astype(np.float32) * (1.0 / 255.0)
        composite[:, rows, cols] += (fill - composite[:, rows, cols]) * alpha[None]

        visible = [vis & ~mask for vis in visible] + [mask]
        objects.append(_Object(shape, color, size_word, mask, area))

    noise_std = float(rng.uniform(0.0, cfg.max_noise_std))
    if noise_std > 0:
        # Grey uniform noise of that standard deviation: several times cheaper to draw than RGB Gaussian noise.
        composite += (rng.random((size, size), dtype=np.float32) - 0.5) * (noise_std * math.sqrt(12.0))
    image = np.ascontiguousarray(np.clip(np.rint(composite), 0, 255).astype(np.uint8).transpose(1, 2, 0))

    class_mask = np.zeros((size, size), np.uint8)
    depth = np.zeros((size, size), np.uint8)
    records = []
    for d, (obj, vis) in enumerate(zip(objects, visible), start=1):
        class_index = SHAPES.index(obj.shape) + 1
        class_mask[vis] = class_index
        depth[vis] = d
        ys, xs = np.nonzero(obj.mask)
        # The centre is the silhouette's centroid (not the drawing centre): truthful for crescents and triangles.
        center = (float((xs.mean() + 0.5) / size), float((ys.mean() + 0.5) / size))
        records.append(
            {
                "shape": obj.shape,
                "color": obj.color,
                "size": obj.size,
                "center": center,
                "bbox": (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1),
                "depth": d,
                "visible_pixels": int(np.count_nonzero(vis)),
                "area": obj.area,
                "position": POSITION_PHRASES[grid_cell(*center)],
                "class_index": class_index,
            }
        )
    # Pairs (farther, nearer) where the nearer object visibly hides part of the farther one.
    occlusions = {
        (i, j)
        for i in range(len(objects))
        for j in range(i + 1, len(objects))
        if np.count_nonzero(objects[i].mask & objects[j].mask) >= max(2.0, cfg.min_occlusion_fraction * objects[i].area)
    }
    label = max(records, key=lambda r: r["visible_pixels"])["class_index"]
    short, detailed = _synthetic_captions(records, occlusions, texture)
    return {
        "image": Image.fromarray(image),
        "alt_text": _alt_text(rng, records, texture),
        "synthetic_caption": detailed,
        "synthetic_captions": [short, detailed],
        "label": label,
        "class_mask": class_mask,
        "depth": depth,
        "objects": records,
        "_masks": np.stack([obj.mask for obj in objects]),
    }


# ---------------------------------------------------------------------------------------------------------- captions


def _a(word: str) -> str:
    return f"an {word}" if word[0] in "aeiou" else f"a {word}"


def _join(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _synthetic_captions(records: list[dict], occlusions: set[tuple[int, int]], texture: str) -> tuple[str, str]:
    """(short caption: objects by prominence, no positions; detailed caption: every object in reading order)."""
    by_size = sorted(range(len(records)), key=lambda i: -records[i]["visible_pixels"])
    short = _join([_a(f"{records[i]['color']} {records[i]['shape']}") for i in by_size])
    short = f"{short} on a {_TEXTURE_WORDS[texture][0]} background."

    def name(i: int) -> str:
        r = records[i]
        twins = sum(o["color"] == r["color"] and o["shape"] == r["shape"] for o in records)
        return f"the {r['size']} {r['color']} {r['shape']}" if twins > 1 else f"the {r['color']} {r['shape']}"

    order = sorted(range(len(records)), key=lambda i: (grid_cell(*records[i]["center"]), records[i]["center"]))
    clauses = []
    for n, j in enumerate(order):
        r = records[j]
        clause = f"a {r['size']} {r['color']} {r['shape']} {r['position']}"
        # Each overlapping pair is described once, in the clause of the object mentioned second.
        front = [name(i) for i in order[:n] if (i, j) in occlusions]
        behind = [name(i) for i in order[:n] if (j, i) in occlusions]
        if behind:
            clause += ", partly hidden behind " + _join(behind)
        if front:
            clause += ", in front of " + _join(front)
        clauses.append(clause)
    detailed = "; ".join(clauses) + f". the background is {_TEXTURE_WORDS[texture][1]}."
    return short, detailed


_GENERIC_ALT = (
    "a picture", "untitled", "image", "abstract art", "wallpaper", "background pattern", "geometric design",
    "clip art", "colorful shapes", "stock photo", "artwork", "digital art", "texture", "illustration", "thumbnail",
    "no description available", "cool pattern", "design element",
)  # fmt: skip
_ALT_SUFFIXES = (" - stock image", " | free download", " #art", " vector illustration", " (2)", " hd")


def _alt_text(rng: np.random.Generator, records: list[dict], texture: str) -> str:
    """A web-alt-text-like string: often uninformative, at best one or two objects, never positions."""
    kind = rng.choice(
        ["empty", "file", "generic", "colour", "one", "two", "wrong"], p=[0.05, 0.15, 0.14, 0.12, 0.36, 0.13, 0.05]
    )
    n = int(rng.integers(10, 10000))
    if kind == "empty":
        return ""
    if kind == "file":
        return str(
            rng.choice([f"IMG_{n:04d}.jpg", f"DSC{n:05d}.JPG", f"image_{n}.png", f"photo-{n}.jpeg", "download.png",
                        f"untitled-{n % 20}.png", f"Screenshot 2021-0{n % 9 + 1}-1{n % 10}.png"])
        )  # fmt: skip
    if kind == "generic":
        return str(rng.choice(_GENERIC_ALT))
    # Web alt-text tends to be about the main subject: usually the largest object, sometimes any.
    main = (
        max(records, key=lambda r: r["visible_pixels"]) if rng.random() < 0.6 else records[rng.integers(len(records))]
    )
    if kind == "colour":
        colours = list(dict.fromkeys(r["color"] for r in records))
        text = str(
            rng.choice(
                [main["color"], " and ".join(colours[:2]), f"something {main['color']}", f"bright {main['color']}"]
            )
        )
    elif kind == "one":
        color, shape = main["color"], main["shape"]
        text = str(
            rng.choice([f"{color} {shape}", f"a {shape}", f"{shape} icon", f"{color} {shape} clipart", f"{shape} shape",
                        shape, f"the {shape}", f"{shape} on a {_TEXTURE_WORDS[texture][0]} background"])
        )  # fmt: skip
    elif kind == "two":
        others = [shape for shape in dict.fromkeys(r["shape"] for r in records) if shape != main["shape"]]
        pair = f"{main['shape']} and {others[rng.integers(len(others))]}" if others else f"{main['shape']} pattern"
        text = str(rng.choice([pair, f"shapes, {main['shape']}, {main['color']}, geometry"]))
    else:  # a wrong label, as crawled alt-text sometimes is
        text = f"{SHAPES[rng.integers(len(SHAPES))]} icon"
    if rng.random() < 0.25:
        text = text.title()
    if rng.random() < 0.2:
        text += str(rng.choice(_ALT_SUFFIXES))
    return text


# ----------------------------------------------------------------------------------------------------------- dataset


def _split_id(split: str) -> int:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {tuple(SPLITS)}, got {split!r}.")
    return SPLITS[split]


class SpatialScenes(torch.utils.data.Dataset):
    """Random-access dataset of procedurally generated spatial scenes.

    Args:
        split (`str`, defaults to `"train"`): `"train"`, `"validation"` or `"test"`; each split is a different random
            stream, so splits never share an image.
        num_examples (`int`, defaults to 2000): length of the dataset (examples are generated on the fly).
        config (`SceneConfig`, *optional*): generator settings; defaults to `SceneConfig()`.
        **overrides: `SceneConfig` fields replacing those of `config`, e.g. `image_size=224, seed=3`.

    Each item is a dict with keys `image` (PIL RGB), `alt_text`, `synthetic_caption` (detailed), `synthetic_captions`
    (`[short, detailed]`), `label` (class of the largest visible object, in `1..len(SHAPES)`), `class_mask` and
    `depth` ((H, W) uint8 arrays: class index / depth order of the visible object per pixel, 0 = background, depth 1
    = farthest object) and `objects` (list of dicts: `shape`, `color`, `size`, `center` (x, y) in [0, 1] (centroid of
    the unoccluded silhouette), `bbox` (x0, y0, x1, y1) in pixels, end exclusive, of the unoccluded silhouette,
    `depth`, `visible_pixels`, `area` (unoccluded pixels), `position` (the caption phrase), `class_index`).

    Example:

    ```python
    >>> from tips_hf.data import SpatialScenes
    >>> scenes = SpatialScenes("train", num_examples=100, seed=0)
    >>> example = scenes[5]
    >>> example["image"].size
    (112, 112)
    ```
    """

    def __init__(
        self, split: str = "train", num_examples: int = 2000, config: SceneConfig | None = None, **overrides: Any
    ):
        self.split_id = _split_id(split)
        if not isinstance(num_examples, (int, np.integer)) or isinstance(num_examples, bool) or num_examples < 1:
            raise ValueError(f"num_examples must be a positive integer, got {num_examples!r}.")
        self.split = split
        self.num_examples = int(num_examples)
        self.config = _make_config(config, overrides)

    def __len__(self) -> int:
        return self.num_examples

    def _index(self, index: int) -> int:
        if not isinstance(index, (int, np.integer)) or isinstance(index, bool):
            raise TypeError(f"SpatialScenes indices must be integers, got {type(index).__name__}.")
        if index < 0:
            index += self.num_examples
        if not 0 <= index < self.num_examples:
            raise IndexError(f"index out of range for a SpatialScenes of length {self.num_examples}.")
        return int(index)

    def __getitem__(self, index: int) -> dict[str, Any]:
        example = _render_scene(self.config, self.split_id, self._index(index))
        del example["_masks"]
        return example

    def object_masks(self, index: int) -> np.ndarray:
        """(num_objects, H, W) bool silhouettes of example `index` before occlusion, in depth order (farthest
        first): row `d - 1` is the object of depth `d`."""
        return _render_scene(self.config, self.split_id, self._index(index))["_masks"]

    def __repr__(self) -> str:
        return f"SpatialScenes(split={self.split!r}, num_examples={self.num_examples}, config={self.config})"


# -------------------------------------------------------------------------------------------------- datasets view


def _hf_features():
    import datasets

    return datasets.Features(
        {
            "image": datasets.Image(),
            "alt_text": datasets.Value("string"),
            "synthetic_caption": datasets.Value("string"),
            "synthetic_captions": datasets.Sequence(datasets.Value("string")),
            "label": datasets.ClassLabel(names=list(CLASS_NAMES)),
            "class_mask": datasets.Image(mode="L"),
            "depth": datasets.Image(mode="L"),
        }
    )


def _encode(image: Image.Image, fmt: str) -> dict[str, Any]:
    # Both lossless. Photos-like RGB images go to uncompressed BMP: ~30x faster than PNG to encode and to decode (the
    # training loader decodes every image every epoch) for ~1.7x the bytes; the flat masks compress well as PNG.
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **({"compress_level": 1} if fmt == "PNG" else {}))
    return {"bytes": buffer.getvalue(), "path": None}


def _hf_rows(split: str, num_examples: int, config: dict[str, Any], version: int):
    scenes = SpatialScenes(split, num_examples, SceneConfig(**config))
    for i in range(num_examples):
        example = scenes[i]
        yield {
            "image": _encode(example["image"], "BMP"),
            "alt_text": example["alt_text"],
            "synthetic_caption": example["synthetic_caption"],
            "synthetic_captions": example["synthetic_captions"],
            "label": example["label"],
            "class_mask": _encode(Image.fromarray(example["class_mask"]), "PNG"),
            "depth": _encode(Image.fromarray(example["depth"]), "PNG"),
        }


def load_scenes_dataset(
    split: str = "train", num_examples: int = 2000, cache_dir: str | os.PathLike | None = None, **config: Any
):
    """The spatial scenes as a `datasets.Dataset` (same examples as `SpatialScenes(split, num_examples, **config)`).

    Args:
        split (`str`, defaults to `"train"`): `"train"`, `"validation"` or `"test"`.
        num_examples (`int`, defaults to 2000): number of rows.
        cache_dir (`str` or `os.PathLike`, *optional*): where to cache the Arrow files. By default the dataset is built
            in memory and nothing is written to disk (in particular not to the global Hugging Face cache). With a
            folder, the rows are written there once under a name keyed by the split, length, configuration and
            generator version, so that different settings never collide, and later calls reuse them.
        **config: `SceneConfig` fields, e.g. `image_size=224, seed=1`.

    Returns:
        `datasets.Dataset` with features `image` (`Image`, RGB), `alt_text` and `synthetic_caption` (`string`),
        `synthetic_captions` (`Sequence(string)`: `[short, detailed]`), `label` (`ClassLabel(names=CLASS_NAMES)`),
        and `class_mask` / `depth` (`Image(mode="L")`: decode to 8-bit greyscale PIL images whose pixel values are
        the class index / depth order; `np.asarray(row["class_mask"])` gives the (H, W) uint8 array). The `objects`
        list of the torch dataset is not included. Images are stored losslessly as BMP bytes (fast to decode) and
        masks as PNG: about 40 KB per 112-px row, so 2000 rows take ~80 MB in memory; pass `cache_dir` for large
        configurations.
    """
    import datasets

    scenes = SpatialScenes(split, num_examples, **config)  # validates every argument
    gen_kwargs = {
        "split": split,
        "num_examples": scenes.num_examples,
        "config": scenes.config.to_dict(),
        "version": _GENERATOR_VERSION,
    }
    key = hashlib.sha256(json.dumps(gen_kwargs, sort_keys=True).encode()).hexdigest()[:16]
    features = _hf_features()
    if cache_dir is None:
        rows = list(_hf_rows(**gen_kwargs))
        dataset = datasets.Dataset.from_list(rows, features=features, split=datasets.NamedSplit(split))
    else:
        dataset = datasets.Dataset.from_generator(
            _hf_rows,
            features=features,
            cache_dir=os.path.join(os.fspath(cache_dir), f"spatial_scenes_{split}_{key}"),
            gen_kwargs=gen_kwargs,
            split=datasets.NamedSplit(split),
        )
    return dataset


# ----------------------------------------------------------------------------------------------------------- preview


def save_preview(
    path: str | os.PathLike = "docs/images/scenes_preview.png", rows: int = 4, cols: int = 4, scale: int = 2, **config
) -> None:
    """Write a PNG grid of the first `rows * cols` train scenes, each beside its colourised class mask.

    Args:
        path (`str` or `os.PathLike`): output file (its folder is created).
        rows (`int`, defaults to 4), cols (`int`, defaults to 4): grid size.
        scale (`int`, defaults to 2): nearest-neighbour upscaling of the picture.
        **config: `SceneConfig` fields.
    """
    scenes = SpatialScenes("train", rows * cols, **config)
    size, gap = scenes.config.image_size, 4
    palette = class_palette()
    tile_w = 2 * size + gap
    canvas = np.full((rows * (size + gap) - gap, cols * (tile_w + 2 * gap) - 2 * gap, 3), 255, np.uint8)
    for i in range(rows * cols):
        example = scenes[i]
        r, c = divmod(i, cols)
        y, x = r * (size + gap), c * (tile_w + 2 * gap)
        canvas[y : y + size, x : x + size] = np.asarray(example["image"])
        canvas[y : y + size, x + size + gap : x + tile_w] = palette[example["class_mask"]]
    picture = Image.fromarray(canvas).resize((canvas.shape[1] * scale, canvas.shape[0] * scale), Image.NEAREST)
    path = os.fspath(path)
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    picture.save(path)


if __name__ == "__main__":
    import sys

    save_preview(sys.argv[1] if len(sys.argv) > 1 else "docs/images/scenes_preview.png")
