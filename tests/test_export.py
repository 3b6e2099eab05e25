"""tips-export: the graph-side position resize against F.interpolate, and ONNX Runtime / torch.export programs of both
towers against eager PyTorch at two batch sizes and two image sizes (one non-square)."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from conftest import save_tiny_model

from tips_hf import TipsModel, TipsProcessor
from tips_hf.export import resize_weights
from tips_hf.export.cli import main

PATCH = 14
GRID = 4  # learned position grid of the tiny model (56 px)
# ONNX Runtime and torch.export reorder float32 sums (fused matmuls, attention); with width-32 features the differences
# measured ~1e-6, well inside the 1e-4 bound, which is the assertion.
PARITY = 1e-4
IMAGE_SHAPES = [(1, 56, 56), (3, 42, 98)]  # batch 1 at the learned grid (resize = identity); batch 3, non-square
TEXT_SHAPES = [(1, 16), (4, 5)]


def _resize(grid: torch.Tensor, size: tuple[int, int], antialias: bool) -> torch.Tensor:
    """(1, C, g, g) → (1, C, h, w) with the exported formulation (columns first, then rows)."""
    g = grid.shape[-1]
    hwc = grid[0].permute(1, 2, 0)
    rows = resize_weights(g, size[1], antialias) @ hwc
    out = resize_weights(g, size[0], antialias) @ rows.reshape(g, -1)
    return out.reshape(size[0], size[1], -1).permute(2, 0, 1)[None]


@pytest.mark.parametrize("antialias", [True, False])
def test_resize_weights_match_f_interpolate(antialias):
    torch.manual_seed(0)
    worst = 0.0
    for g in (4, 37):
        grid = torch.randn(1, 8, g, g)
        for h in (1, 3, 17, 100):
            for w in (2, 7, 50):
                expected = F.interpolate(grid, size=(h, w), mode="bilinear", align_corners=False, antialias=antialias)
                worst = max(worst, float((_resize(grid, (h, w), antialias) - expected).abs().max()))
    # Same kernel weights, different float32 summation order: a few ulps of unit-variance values. PyTorch's own plain
    # (non-antialiased) float32 kernel is 5e-6 away from its float64 result at 37 → 50, hence the looser bound there.
    assert worst < (2e-6 if antialias else 1.5e-5)


def test_resize_weights_closed_form():
    # 4 → 2 with antialiasing: support 2, centres 1 and 3; taps at distance 0.5 and 1.5 get 3/4 and 1/4 (÷ 2 = sum).
    expected = torch.tensor([[3, 3, 1, 0], [0, 1, 3, 3]], dtype=torch.float32) / 7
    torch.testing.assert_close(resize_weights(4, 2, antialias=True), expected, rtol=0, atol=1e-7)
    # 2 → 4 without antialiasing: source positions -0.25 (clamped to 0), 0.25, 0.75, 1.25.
    expected = torch.tensor([[1, 0], [0.75, 0.25], [0.25, 0.75], [0, 1]])
    torch.testing.assert_close(resize_weights(2, 4, antialias=False), expected, rtol=0, atol=1e-7)
    torch.testing.assert_close(resize_weights(5, 5), torch.eye(5), rtol=0, atol=0)  # equal sizes: exact identity


def test_resize_weights_output_width_one_is_the_two_pass_result():
    # PyTorch's antialiased kernel repeats the first row when the output width is 1 and the height changes too (it
    # returns [-0.40, -0.40] below); the exported graph computes the separable result, i.e. two single-axis passes.
    torch.manual_seed(0)
    grid = torch.randn(1, 1, 4, 4)
    two_pass = F.interpolate(
        F.interpolate(grid, size=(2, 4), mode="bilinear", antialias=True), size=(2, 1), mode="bilinear", antialias=True
    )
    torch.testing.assert_close(_resize(grid, (2, 1), True), two_pass, rtol=0, atol=1e-6)
    assert abs(float(two_pass[0, 0, 0, 0] - two_pass[0, 0, 1, 0])) > 0.1


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    def unit_scale_positions(model):
        with torch.no_grad():  # position grid and CLS at unit scale, so a wrong resize would show
            model.vision_model.embeddings.position_embeddings.normal_()

    return save_tiny_model(tmp_path_factory.mktemp("tiny_tips"), 56, prepare=unit_scale_positions)


@pytest.fixture(scope="module")
def exported(model_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("exported")
    reports = {}
    for fmt in ("onnx", "torch"):
        assert main([fmt, "--model", str(model_dir), "--output", str(root / fmt)]) == 0
        reports[fmt] = json.loads((root / fmt / "export_config.json").read_text())
    return root, reports


def _inputs(seed=0):
    generator = torch.Generator().manual_seed(seed)
    images = [torch.rand(b, 3, h, w, generator=generator) for b, h, w in IMAGE_SHAPES]
    texts = []
    for batch, length in TEXT_SHAPES:
        ids = torch.randint(1, 512, (batch, length), generator=generator)
        mask = torch.ones(batch, length, dtype=torch.long)
        if batch > 1:
            mask[1, 2:] = 0
            mask[-1] = 0  # an all-padding row: its embedding is exactly zero
        texts.append((ids * mask, mask))
    return images, texts


def _check_parity(model, vision, text):
    images, texts = _inputs()
    for pixels in images:
        with torch.no_grad():
            out = model.vision_model(pixel_values=pixels)
        got = [torch.as_tensor(x) for x in vision(pixels)]
        h, w = pixels.shape[-2:]
        assert got[0].shape == (pixels.shape[0], 2 + (h // PATCH) * (w // PATCH), 32)
        for actual, expected in zip(got, (out.last_hidden_state, out.alt_text_embeds, out.synthetic_embeds)):
            torch.testing.assert_close(actual, expected, rtol=0, atol=PARITY)
    for ids, mask in texts:
        with torch.no_grad():
            expected = model.text_model(input_ids=ids, attention_mask=mask).pooler_output
        actual = torch.as_tensor(text(ids, mask)[0])
        torch.testing.assert_close(actual, expected, rtol=0, atol=PARITY)
        if ids.shape[0] > 1:
            assert torch.equal(actual[-1], torch.zeros_like(actual[-1]))  # not NaN (see exporters.py)


def test_onnx_export_files_and_parity(model_dir, exported):
    import onnxruntime as ort

    root, reports = exported
    folder = root / "onnx"
    names = {p.name for p in folder.iterdir()}
    assert {"vision_model.onnx", "text_model.onnx", "README.md", "tokenizer.model", "processor_config.json"} <= names
    assert reports["onnx"]["opset"] == 18 and max(reports["onnx"]["parity_max_abs"].values()) <= PARITY
    vision = ort.InferenceSession(str(folder / "vision_model.onnx"), providers=["CPUExecutionProvider"])
    text = ort.InferenceSession(str(folder / "text_model.onnx"), providers=["CPUExecutionProvider"])
    assert [(i.name, i.shape) for i in vision.get_inputs()] == [
        ("pixel_values", ["batch", 3, "14*grid_h", "14*grid_w"])
    ]
    assert [o.name for o in vision.get_outputs()] == ["last_hidden_state", "alt_text_embeds", "synthetic_embeds"]
    assert [(i.name, i.shape) for i in text.get_inputs()] == [
        ("input_ids", ["batch", "length"]),
        ("attention_mask", ["batch", "length"]),
    ]
    assert [o.name for o in text.get_outputs()] == ["text_embeds"]
    model = TipsModel.from_pretrained(model_dir).eval()
    _check_parity(
        model,
        lambda x: vision.run(None, {"pixel_values": x.numpy()}),
        lambda i, m: text.run(None, {"input_ids": i.numpy(), "attention_mask": m.numpy()}),
    )
    # The processor travels with the export and feeds the graph directly.
    processor = TipsProcessor.from_pretrained(folder)
    tokens = processor(text=["a red circle"], max_length=16, return_tensors="pt")  # the tiny tower's length
    assert text.run(None, {k: tokens[k].numpy() for k in ("input_ids", "attention_mask")})[0].shape == (1, 32)


def test_torch_export_programs_parity(model_dir, exported):
    root, reports = exported
    folder = root / "torch"
    vision = torch.export.load(str(folder / "vision_model.pt2")).module()
    text = torch.export.load(str(folder / "text_model.pt2")).module()
    model = TipsModel.from_pretrained(model_dir).eval()
    with torch.no_grad():
        _check_parity(model, vision, lambda i, m: [text(i, m)])
    assert (folder / "README.md").read_text().count("vision_model.pt2") >= 1


def test_cli_errors(model_dir, exported, tmp_path, capsys):
    root, _ = exported
    assert main(["onnx", "--model", str(tmp_path / "missing"), "--output", str(tmp_path / "o")]) == 2
    assert "model directory not found" in capsys.readouterr().err
    before = sorted(p.name for p in (root / "onnx").iterdir())
    assert main(["onnx", "--model", str(model_dir), "--output", str(root / "onnx"), "--no-verify"]) == 2
    assert "not empty" in capsys.readouterr().err
    assert sorted(p.name for p in (root / "onnx").iterdir()) == before  # untouched


@pytest.mark.slow  # two exports of a DPT model: ~25 s of CPU
def test_dpt_depth_export_parity(tmp_path):
    dense = pytest.importorskip("tips_hf.modeling.modeling_dense_tips", reason="the DPT models (issue 12) are not in this tree")
    import onnxruntime as ort

    from tips_hf.modeling.configuration_dense_tips import TipsDPTConfig

    torch.manual_seed(0)
    vision = dict(hidden_size=32, num_hidden_layers=4, num_attention_heads=4, intermediate_size=64, image_size=56)
    model = dense.TipsForDepthEstimation(
        TipsDPTConfig(vision_config=vision, task="depth", dpt_channels=16, num_depth_bins=8)
    ).eval()
    with torch.no_grad():
        model.vision_model.embeddings.position_embeddings.normal_()
        model.head.weight.normal_(std=100.0)  # spread the bins: depth std ~0.2 m, far above the tolerance
    model.save_pretrained(tmp_path / "dpt")
    for fmt in ("onnx", "torch"):
        assert main([fmt, "--model", str(tmp_path / "dpt"), "--output", str(tmp_path / fmt)]) == 0
    session = ort.InferenceSession(str(tmp_path / "onnx" / "depth_model.onnx"), providers=["CPUExecutionProvider"])
    assert [(i.name, i.shape) for i in session.get_inputs()] == [
        ("pixel_values", ["batch", 3, "28*half_grid_h", "28*half_grid_w"])
    ]
    program = torch.export.load(str(tmp_path / "torch" / "depth_model.pt2")).module()
    generator = torch.Generator().manual_seed(1)
    for batch, height, width in ((1, 56, 56), (3, 56, 112)):  # even patch grids: 4×4 (learned) and 4×8
        pixels = torch.rand(batch, 3, height, width, generator=generator)
        with torch.no_grad():
            expected = model(pixel_values=pixels).predicted_depth
            from_program = program(pixels)
        assert expected.shape == (batch, 16 * (height // 28), 16 * (width // 28))
        assert float(expected.std()) > 0.05
        from_onnx = torch.as_tensor(session.run(None, {"pixel_values": pixels.numpy()})[0])
        torch.testing.assert_close(from_onnx, expected, rtol=0, atol=PARITY)
        torch.testing.assert_close(from_program, expected, rtol=0, atol=PARITY)
