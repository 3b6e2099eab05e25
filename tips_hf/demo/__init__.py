"""The TIPS Gradio demo (`tips-demo`): PCA of patch features, zero-shot segmentation, image–text similarity for both
heads, depth and normals. Needs the `demo` extra (gradio); [`DemoModel`] itself needs only torch."""

from .app import DemoModel, build_demo, segmentation_scores

__all__ = ["DemoModel", "build_demo", "segmentation_scores"]
