"""Dense-feature tools: PCA pictures of patch features, zero-shot classification and segmentation, k-NN, linear
probes and segmentation pictures. Metrics live in `tips_hf.metrics`; retrieval recall is re-exported from there for
code that imports it from `tips_hf.dense`."""

from ..metrics.retrieval import retrieval_recall, retrieval_recall_from_similarity
from .knn import knn_classify, knn_segmentation
from .pca import pca_rgb, save_pca_picture
from .probe import linear_probe_depth, linear_probe_segmentation, patch_targets
from .visualize import colorize_segmentation, palette, save_segmentation_picture, segmentation_picture
from .zero_shot import (
    BACKGROUND,
    PROMPT_TEMPLATES,
    SEGMENTATION_TEMPLATES,
    encode_labels,
    encode_texts,
    value_patch_embeds,
    zero_shot_classify,
    zero_shot_segment,
)

__all__ = [
    "BACKGROUND",
    "PROMPT_TEMPLATES",
    "SEGMENTATION_TEMPLATES",
    "colorize_segmentation",
    "encode_labels",
    "encode_texts",
    "knn_classify",
    "knn_segmentation",
    "linear_probe_depth",
    "linear_probe_segmentation",
    "palette",
    "patch_targets",
    "pca_rgb",
    "retrieval_recall",
    "retrieval_recall_from_similarity",
    "save_pca_picture",
    "save_segmentation_picture",
    "segmentation_picture",
    "zero_shot_classify",
    "value_patch_embeds",
    "zero_shot_segment",
]
