# Copyright 2026 The tips-hf authors. Licensed under the Apache License, Version 2.0.
"""The TIPS Gradio demo: PCA picture of the patch features, zero-shot segmentation from labels, image–text similarity
for both heads, and depth / surface normals when DPT folders are given. Everything runs locally (CPU is fine).

[`DemoModel`] holds the models and does the work (plain functions of PIL images and strings, testable without a
browser); [`build_demo`] wires it into a `gr.Blocks` app.
"""

from __future__ import annotations

import html
import inspect
import os
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

HEAD_NAMES = {"alt_text": "alt-text head (CLS-1)", "synthetic": "synthetic-caption head (CLS-2)"}
DEFAULT_LABELS = "circle, square, triangle, star, background"


def _rgb(image: Any):
    from PIL import Image

    if image is None:
        raise ValueError("Upload an image first.")
    if isinstance(image, np.ndarray):
        image = Image.fromarray(image.astype(np.uint8))
    return image.convert("RGB")


def _split_labels(text: str, separators: str = ",\n") -> list[str]:
    for separator in separators[1:]:
        text = text.replace(separator, separators[0])
    labels = [label.strip() for label in text.split(separators[0])]
    labels = [label for label in labels if label]
    if not labels:
        raise ValueError("Give at least one label (comma-separated).")
    return labels


def _to_uint8(array: np.ndarray) -> np.ndarray:
    return (np.clip(array, 0.0, 1.0) * 255).round().astype(np.uint8)


def _resize_array(array: np.ndarray, size: tuple[int, int], nearest: bool = False) -> np.ndarray:
    """(h, w, 3) uint8 → (size[1], size[0], 3) uint8; size is PIL's (width, height)."""
    from PIL import Image

    return np.asarray(Image.fromarray(array).resize(size, Image.NEAREST if nearest else Image.BILINEAR))


class DemoModel:
    """A TipsModel with its processor (and optional DPT depth / normals models) and the demo's computations.

    Args:
        model_dir (`str`): folder with a saved TipsModel and TipsProcessor.
        depth_dir (`str`, *optional*): folder with a saved `TipsForDepthEstimation`.
        normals_dir (`str`, *optional*): folder with a saved `TipsForNormalEstimation`.
        size (`int`, *optional*): square input side (a multiple of the patch size); default: the processor's.
        device (`str`): torch device.
    """

    def __init__(
        self,
        model_dir: str | os.PathLike,
        depth_dir: str | os.PathLike | None = None,
        normals_dir: str | os.PathLike | None = None,
        size: int | None = None,
        device: str = "cpu",
    ):
        from tips_hf import TipsModel, TipsProcessor

        self.device = device
        self.model = TipsModel.from_pretrained(str(model_dir)).to(device).eval()
        self.processor = TipsProcessor.from_pretrained(str(model_dir))
        patch = self.model.config.vision_config.patch_size
        if size is None:
            configured = getattr(self.processor.image_processor, "size", None) or {}
            size = int(configured.get("height", self.model.config.vision_config.image_size))
        if size <= 0 or size % patch:
            raise ValueError(f"size must be a positive multiple of the patch size {patch}, got {size}.")
        self.size = size
        self.depth_model = self._load_dense(depth_dir, "TipsForDepthEstimation")
        self.normals_model = self._load_dense(normals_dir, "TipsForNormalEstimation")

    def _load_dense(self, folder: str | os.PathLike | None, class_name: str):
        if folder is None:
            return None
        from tips_hf.modeling import modeling_dense_tips

        return getattr(modeling_dense_tips, class_name).from_pretrained(str(folder)).to(self.device).eval()

    # ------------------------------------------------------------------------------------------------ helpers

    def pixel_values(self, image: Any) -> torch.Tensor:
        """(1, 3, size, size) in [0, 1] via the model's image processor."""
        processed = self.processor.image_processor(
            _rgb(image), size={"height": self.size, "width": self.size}, return_tensors="pt"
        )
        return processed["pixel_values"].to(self.device)

    @torch.no_grad()
    def _features(self, image: Any):
        return self.model.get_image_features(pixel_values=self.pixel_values(image))

    # ------------------------------------------------------------------------------------------------ tabs

    @torch.no_grad()
    def pca(self, image: Any) -> np.ndarray:
        """PCA of the patch features as RGB, (H, W, 3) uint8 at the uploaded image's size (nearest upsampling, one
        block per patch)."""
        from tips_hf.dense import pca_rgb

        image = _rgb(image)
        rgb = pca_rgb(self._features(image).patch_embeds.float().cpu())[0].numpy()
        return _resize_array(_to_uint8(rgb), image.size, nearest=True)

    @torch.no_grad()
    def zero_shot(
        self, image: Any, labels_text: str, method: str | None = None, opacity: float = 0.6
    ) -> tuple[np.ndarray, str]:
        """Zero-shot segmentation: the label map blended over the image at the uploaded size, (H, W, 3) uint8, and an
        HTML legend with each label's colour and share of the pixels. `method`: `zero_shot_segment`'s (`"values"`,
        the official MaskCLIP protocol, or `"patches"`); None keeps its default."""
        from tips_hf import dense

        image = _rgb(image)
        labels = _split_labels(labels_text)
        pixel_values = self.pixel_values(image)
        # The protocol's prompt set (TCL templates) where this version has it, else the CLIP-style set.
        templates = getattr(dense, "SEGMENTATION_TEMPLATES", dense.PROMPT_TEMPLATES)
        label_embeds = dense.encode_labels(self.model, self.processor, labels, templates=templates)
        scores = segmentation_scores(self.model, pixel_values, label_embeds, method)  # (K, h, w)
        width, height = image.size
        scores = F.interpolate(scores[None].float(), size=(height, width), mode="bilinear", align_corners=False)[0]
        label_map = scores.argmax(dim=0).cpu().numpy()
        colored = dense.colorize_segmentation(label_map, len(labels))
        overlay = (1 - opacity) * np.asarray(image, dtype=np.float32) + opacity * colored.astype(np.float32)
        overlay = overlay.round().clip(0, 255).astype(np.uint8)
        colors = dense.palette(len(labels))
        shares = np.bincount(label_map.ravel(), minlength=len(labels)) / label_map.size
        rows = "".join(
            f'<li><span style="display:inline-block;width:1em;height:1em;margin-right:.4em;vertical-align:middle;'
            f'background:rgb({r},{g},{b})"></span>{html.escape(name)} — {share:.0%}</li>'
            for name, (r, g, b), share in zip(labels, colors.tolist(), shares.tolist())
        )
        return overlay, f'<ul id="zeroshot-legend-items" style="list-style:none;padding:0">{rows}</ul>'

    @torch.no_grad()
    def similarity(self, image: Any, texts_text: str) -> list[list[Any]]:
        """Rows [text, alt-text cosine, alt-text probability, synthetic cosine, synthetic probability]: cosine
        similarity of each head's CLS with every text, and the softmax over the texts at the head's temperature."""
        from tips_hf.dense import encode_texts

        texts = _split_labels(texts_text, separators="\n")
        features = self._features(image)
        text_embeds = encode_texts(self.model, self.processor, texts)
        temperature = self.model.temperature.float()
        columns = []
        for index, embeds in enumerate((features.alt_text_embeds, features.synthetic_embeds)):
            cosine = F.normalize(embeds.float(), dim=-1)[0] @ text_embeds.T
            columns += [cosine, (cosine / temperature[index]).softmax(dim=-1)]
        return [[text] + [round(float(column[row]), 4) for column in columns] for row, text in enumerate(texts)]

    def _run_dense(self, model: Any, start_with: str, image: Any) -> tuple[Any, Any]:
        """(the uploaded image as RGB, `model`'s output on it); an error saying how to start the demo when `model`
        was not loaded."""
        if model is None:
            raise ValueError(f"Start the demo with {start_with}.")
        image = _rgb(image)
        return image, model(pixel_values=self.pixel_values(image))

    @torch.no_grad()
    def depth(self, image: Any) -> np.ndarray:
        """Predicted depth as a colour map (near = bright), (H, W, 3) uint8 at the uploaded size."""
        image, output = self._run_dense(self.depth_model, "--depth DIR to predict depth", image)
        depth = output.predicted_depth.float()
        depth = depth.reshape(1, 1, *depth.shape[-2:])
        depth = F.interpolate(depth, size=image.size[::-1], mode="bilinear", align_corners=False)[0, 0]
        low, high = float(depth.min()), float(depth.max())
        near = 1.0 - (depth - low) / max(high - low, 1e-12)
        return _to_uint8(_inferno(near.cpu().numpy()))

    @torch.no_grad()
    def normals(self, image: Any) -> np.ndarray:
        """Predicted surface normals as RGB ((n + 1) / 2 of the unit vector), (H, W, 3) uint8 at the uploaded size."""
        image, output = self._run_dense(self.normals_model, "--normals DIR to predict surface normals", image)
        normals = output.predicted_normals.float()
        normals = F.interpolate(normals, size=image.size[::-1], mode="bilinear", align_corners=False)
        normals = F.normalize(normals, dim=1)[0].permute(1, 2, 0)
        return _to_uint8((normals.cpu().numpy() + 1.0) / 2.0)


def segmentation_methods() -> tuple[str, ...]:
    """The `method` choices of the installed `zero_shot_segment` (empty for a version without the option)."""
    from tips_hf.dense import zero_shot

    return tuple(getattr(zero_shot, "SEGMENTATION_METHODS", ()))


def segmentation_scores(
    model, pixel_values: torch.Tensor, label_embeds: torch.Tensor, method: str | None = None
) -> torch.Tensor:
    """Per-label scores `(K, h, w)` of one image from `tips_hf.dense.zero_shot_segment`, whichever of its signatures
    is installed: the protocol one returns `{"scores": (B, K, H, W), ...}` (`mode` left at its default, one pass over
    the image), the earlier one `{"logits": (B, K, h, w), ...}`."""
    from tips_hf.dense import zero_shot_segment

    parameters = inspect.signature(zero_shot_segment).parameters
    kwargs = {"output_size": tuple(pixel_values.shape[-2:])} if "output_size" in parameters else {}
    if method is not None and "method" in parameters:
        kwargs["method"] = method
    result = zero_shot_segment(model, pixel_values, label_embeds, **kwargs)
    scores = result["scores"] if "scores" in result else result["logits"]
    return scores[0]


def _inferno(values: np.ndarray) -> np.ndarray:
    """A small perceptual colour ramp (black → purple → orange → yellow) for [0, 1] values: (H, W) → (H, W, 3)."""
    stops = np.array([[0.0, 0.0, 0.02], [0.34, 0.06, 0.43], [0.73, 0.21, 0.33], [0.98, 0.55, 0.04], [0.99, 1.0, 0.64]])
    position = np.clip(values, 0.0, 1.0) * (len(stops) - 1)
    low = np.floor(position).astype(int).clip(0, len(stops) - 2)
    fraction = (position - low)[..., None]
    return stops[low] * (1 - fraction) + stops[low + 1] * fraction


def build_demo(demo_model: DemoModel) -> Any:
    """The Gradio `Blocks` app over `demo_model`. Elements the browser test drives carry `elem_id`s
    (`zeroshot-input`, `zeroshot-labels`, `zeroshot-run`, `zeroshot-output`, …)."""
    import gradio as gr

    def guarded(fn):
        def call(*args):
            try:
                return fn(*args)
            except ValueError as error:  # bad input → a message in the page, not a stack trace
                raise gr.Error(str(error)) from None

        return call

    with gr.Blocks(title="TIPS demo", analytics_enabled=False) as demo:
        gr.Markdown(
            "# TIPS: text-image pretraining with spatial awareness\n"
            f"Model inputs are {demo_model.size}×{demo_model.size}; every output is shown at the uploaded size."
        )
        with gr.Tab("PCA of patch features", id="pca"):
            with gr.Row():
                pca_input = gr.Image(type="pil", label="Image", elem_id="pca-input")
                pca_output = gr.Image(
                    type="numpy", format="png", label="First 3 principal components as RGB", elem_id="pca-output"
                )
            gr.Button("Compute PCA", variant="primary", elem_id="pca-run").click(
                guarded(demo_model.pca), pca_input, pca_output
            )
        with gr.Tab("Zero-shot segmentation", id="zeroshot"):
            with gr.Row():
                with gr.Column():
                    zs_input = gr.Image(type="pil", label="Image", elem_id="zeroshot-input")
                    zs_labels = gr.Textbox(
                        value=DEFAULT_LABELS, label="Labels (comma-separated)", elem_id="zeroshot-labels"
                    )
                    methods = segmentation_methods()
                    zs_method = gr.Radio(
                        choices=list(methods) or ["patches"],
                        value=methods[0] if methods else "patches",
                        label="Patch features (values: MaskCLIP values trick, the official protocol)",
                        visible=bool(methods),
                        elem_id="zeroshot-method",
                    )
                    zs_run = gr.Button("Segment", variant="primary", elem_id="zeroshot-run")
                with gr.Column():
                    zs_output = gr.Image(type="numpy", format="png", label="Segmentation", elem_id="zeroshot-output")
                    zs_legend = gr.HTML(elem_id="zeroshot-legend")
            zs_run.click(
                guarded(lambda image, text, method: demo_model.zero_shot(image, text, method if methods else None)),
                [zs_input, zs_labels, zs_method],
                [zs_output, zs_legend],
            )
        with gr.Tab("Image–text similarity", id="similarity"):
            with gr.Row():
                sim_input = gr.Image(type="pil", label="Image", elem_id="similarity-input")
                sim_texts = gr.Textbox(
                    value="a red circle\na blue square\na green triangle",
                    lines=4,
                    label="Texts (one per line)",
                    elem_id="similarity-texts",
                )
            sim_output = gr.Dataframe(
                headers=["text", "alt-text cosine", "alt-text prob.", "synthetic cosine", "synthetic prob."],
                label="Both heads: cosine similarity and softmax over the texts (head temperature)",
                elem_id="similarity-output",
            )
            gr.Button("Compare", variant="primary", elem_id="similarity-run").click(
                guarded(demo_model.similarity), [sim_input, sim_texts], sim_output
            )
        if demo_model.depth_model is not None or demo_model.normals_model is not None:
            with gr.Tab("Depth and normals", id="dense"):
                dense_input = gr.Image(type="pil", label="Image", elem_id="dense-input")
                with gr.Row():
                    outputs, functions = [], []
                    if demo_model.depth_model is not None:
                        outputs.append(
                            gr.Image(type="numpy", format="png", label="Depth (near = bright)", elem_id="depth-output")
                        )
                        functions.append(demo_model.depth)
                    if demo_model.normals_model is not None:
                        outputs.append(
                            gr.Image(type="numpy", format="png", label="Surface normals", elem_id="normals-output")
                        )
                        functions.append(demo_model.normals)
                gr.Button("Predict", variant="primary", elem_id="dense-run").click(
                    guarded(lambda image: tuple(fn(image) for fn in functions)), dense_input, outputs
                )
    return demo


__all__ = ["DemoModel", "build_demo", "segmentation_methods", "segmentation_scores"]
