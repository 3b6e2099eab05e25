"""Embedded datasets: procedural spatial scenes for offline TIPS pretraining and dense evaluation."""

from .scenes import (
    CLASS_NAMES,
    COLOR_RGB,
    COLORS,
    POSITION_PHRASES,
    SHAPES,
    SIZE_WORDS,
    SPLITS,
    SceneConfig,
    SpatialScenes,
    class_palette,
    grid_cell,
    load_scenes_dataset,
    save_preview,
    scene_prompts,
)

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
