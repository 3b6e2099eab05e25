"""tips-demo tested as a person uses it: served on a free localhost port, driven in headless Chromium (Playwright with
the system's Chromium), zero-shot segmentation of an uploaded scene; plus the demo's computations without a browser."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from conftest import save_tiny_model
from PIL import Image

LABELS = ["circle", "square", "star", "background"]
UPLOAD_SIZE = (168, 126)  # (width, height): non-square and not the model's 112 px, so "the right size" means something


@pytest.fixture(scope="module")
def demo_files(tmp_path_factory):
    from tips_hf.data import SpatialScenes

    folder = tmp_path_factory.mktemp("demo")
    model_dir = save_tiny_model(folder / "model", 112, text_layers=1, text_positions=64)
    scene = SpatialScenes("validation", num_examples=1)[0]["image"].resize(UPLOAD_SIZE, Image.BILINEAR)
    scene.save(folder / "scene.png")
    return model_dir, folder / "scene.png"


@pytest.fixture(scope="module")
def demo_model(demo_files):
    from tips_hf.demo import DemoModel

    return DemoModel(demo_files[0])


def test_demo_computations(demo_model, demo_files):
    from tips_hf.dense import encode_texts

    image = Image.open(demo_files[1])
    pca = demo_model.pca(image)
    assert pca.shape == (UPLOAD_SIZE[1], UPLOAD_SIZE[0], 3) and pca.dtype == np.uint8
    assert pca.min() == 0 and pca.max() == 255  # each PCA channel is min-max scaled
    overlay, legend = demo_model.zero_shot(image, ", ".join(LABELS))
    assert overlay.shape == (UPLOAD_SIZE[1], UPLOAD_SIZE[0], 3)
    assert all(label in legend for label in LABELS) and legend.count("%") == len(LABELS)
    # Every pixel is 0.4 · image + 0.6 · the colour of one of the labels (rounded).
    from tips_hf.dense import palette

    pixels = np.asarray(image.convert("RGB"), dtype=np.float64)
    candidates = np.stack([np.round(0.4 * pixels + 0.6 * color) for color in palette(len(LABELS)).astype(np.float64)])
    assert np.all(np.any(np.all(np.abs(candidates - overlay[None]) <= 1, axis=-1), axis=0))
    from tips_hf.demo.app import segmentation_methods

    if "patches" in segmentation_methods():  # the protocol's two feature choices give different maps
        assert not np.array_equal(demo_model.zero_shot(image, ", ".join(LABELS), "patches")[0], overlay)
    # Similarity rows = the model's own logits: cosine / temperature, softmax over the texts, both heads.
    texts = ["a red circle", "a blue square"]
    rows = demo_model.similarity(image, "\n".join(texts))
    model = demo_model.model
    pixel_values = demo_model.pixel_values(image)
    with torch.no_grad():
        features = model.get_image_features(pixel_values=pixel_values)
    text_embeds = encode_texts(model, demo_model.processor, texts)
    for head, embeds in enumerate((features.alt_text_embeds, features.synthetic_embeds)):
        cosine = torch.nn.functional.normalize(embeds, dim=-1)[0] @ text_embeds.T
        probs = (cosine / model.temperature[head]).softmax(-1)
        assert [row[1 + 2 * head] for row in rows] == pytest.approx(cosine.tolist(), abs=1e-4)  # 4 decimals shown
        assert [row[2 + 2 * head] for row in rows] == pytest.approx(probs.tolist(), abs=1e-4)
    with pytest.raises(ValueError, match="at least one label"):
        demo_model.zero_shot(image, " , ")
    with pytest.raises(ValueError, match="--depth"):
        demo_model.depth(image)


def test_zero_shot_tab_in_headless_chromium(demo_model, demo_files, tmp_path):
    # gradio and playwright are required (the `demo` extra, installed by CI); only a missing browser skips.
    import gradio  # noqa: F401
    import playwright  # noqa: F401

    from tips_hf.demo.browser import find_chromium, run_zero_shot, serve_demo

    chromium = find_chromium()
    if chromium is None:
        pytest.skip("no Chromium on this machine (apt-get install chromium, or set TIPS_CHROMIUM)")
    model_dir, scene = demo_files
    with serve_demo(model_dir) as url:
        run = run_zero_shot(url, scene, LABELS, tmp_path / "demo.png", chromium=chromium)

    shown = Image.open(io.BytesIO(run.output_png))
    assert shown.size == UPLOAD_SIZE
    shown = np.asarray(shown.convert("RGB"))
    assert shown.std() > 5  # not a blank picture
    # The picture in the page is the demo's own computation on the uploaded file, not something else of that size.
    expected, _ = demo_model.zero_shot(Image.open(scene), ", ".join(LABELS))
    assert np.mean(np.all(shown == expected, axis=-1)) > 0.99  # ties may flip a few argmax pixels across processes
    screenshot = Image.open(run.screenshot)
    assert screenshot.width == 1280 and screenshot.height >= 600
    assert np.asarray(screenshot.convert("L")).std() > 5


def test_depth_and_normals_pictures(demo_files, tmp_path):
    dense = pytest.importorskip("tips_hf.modeling.modeling_dense_tips", reason="the DPT models (issue 12) are not in this tree")
    from tips_hf.demo import DemoModel
    from tips_hf.modeling.configuration_dense_tips import TipsDPTConfig

    torch.manual_seed(0)
    vision = dict(hidden_size=32, num_hidden_layers=4, num_attention_heads=4, intermediate_size=64, image_size=112)
    for cls, task in ((dense.TipsForDepthEstimation, "depth"), (dense.TipsForNormalEstimation, "normals")):
        cls(TipsDPTConfig(vision_config=vision, task=task, dpt_channels=16, num_depth_bins=8)).save_pretrained(
            tmp_path / task
        )
    demo_model = DemoModel(demo_files[0], tmp_path / "depth", tmp_path / "normals")
    image = Image.open(demo_files[1])
    depth_picture, normals_picture = demo_model.depth(image), demo_model.normals(image)
    assert depth_picture.shape == normals_picture.shape == (UPLOAD_SIZE[1], UPLOAD_SIZE[0], 3)
    # Normals are shown as (n + 1) / 2 of unit vectors: decoding gives length 1 up to the 8-bit rounding.
    decoded = normals_picture.astype(np.float64) / 255 * 2 - 1
    assert np.abs(np.linalg.norm(decoded, axis=-1) - 1).max() < 0.02
    # Depth: the nearest pixel is painted with the top of the colour ramp, the farthest with its bottom.
    with torch.no_grad():
        depth = demo_model.depth_model(pixel_values=demo_model.pixel_values(image)).predicted_depth
    depth = torch.nn.functional.interpolate(
        depth.reshape(1, 1, *depth.shape[-2:]), size=(UPLOAD_SIZE[1], UPLOAD_SIZE[0]), mode="bilinear"
    )[0, 0]
    nearest = np.unravel_index(int(depth.argmin()), depth.shape)
    farthest = np.unravel_index(int(depth.argmax()), depth.shape)
    assert depth_picture[nearest].tolist() == [252, 255, 163]  # (0.99, 1.0, 0.64) * 255
    assert depth_picture[farthest].tolist() == [0, 0, 5]  # (0, 0, 0.02) * 255


def test_demo_cli_arguments(tmp_path, capsys):
    from tips_hf.demo.cli import build_parser, main

    args = build_parser().parse_args(["--model", "m", "--port", "7000", "--share", "false"])
    assert (args.port, args.share, args.host) == (7000, False, "127.0.0.1")
    assert build_parser().parse_args(["--model", "m", "--share", "True"]).share is True
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--model", "m", "--share", "maybe"])
    assert main(["--model", str(tmp_path / "missing")]) == 2
    assert "--model folder not found" in capsys.readouterr().err
