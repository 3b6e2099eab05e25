"""Dense-feature tools: PCA pictures of patch features, zero-shot segmentation, probes and retrieval metrics."""

from .pca import pca_rgb, save_pca_picture

__all__ = ["pca_rgb", "save_pca_picture"]
