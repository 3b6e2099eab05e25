"""Dense prediction as the official repository does it (fixtures/dense): intermediate layers, the DPT decoders converted
from their released Scenic/Flax layout, the task losses, vision-only conversion, the backbone and the Auto classes."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import REFERENCE
from dense_helpers import logged_losses, scores_by_hand

from tips_hf import (
    TipsBackbone,
    TipsForDepthEstimation,
    TipsForNormalEstimation,
    TipsForSemanticSegmentation,
    TipsVisionModel,
)
from tips_hf.conversion.dpt import convert_dpt, convert_official_vision, verify_dpt
from tips_hf.modeling.modeling_dense_tips import normals_loss, segmentation_loss, silog_loss

DENSE_DIR = REFERENCE / "dense"
DENSE_INDEX = json.loads((DENSE_DIR / "index.json").read_text())
TASKS = ("segmentation", "depth", "normals")
# Float32 rounding through at most 6 blocks and the decoder's convolutions: measured max |Δ| 1.7e-6 (features) and
# 1.3e-5 (depth in metres, an expectation over bins up to 10 m), against the official PyTorch code on CPU.
FEATURE_TOL = 1e-5
DPT_TOL = 5e-5


def dense_file(name: str, part: str):
    return DENSE_DIR / f"{name}_{part}.npz"


@pytest.fixture(scope="session")
def converted_dpt(tmp_path_factory):
    """Every (fixture, task) converted once per session with `tips-convert dpt` (library call)."""
    root = tmp_path_factory.mktemp("dpt")
    folders = {}
    for name, info in DENSE_INDEX.items():
        for task in TASKS:
            folders[name, task] = convert_dpt(
                dense_file(name, "vision"),
                dense_file(name, f"dpt_{task}"),
                root / f"{name}-{task}",
                task,
                layers=info["dpt"]["layers"],
                vision_heads=info["vision"]["num_heads"],
                progress=False,
            ).output_dir
    return folders


@pytest.fixture(scope="session")
def converted_vision(tmp_path_factory):
    root = tmp_path_factory.mktemp("vision")
    return {
        name: convert_official_vision(
            dense_file(name, "vision"), root / name, vision_heads=info["vision"]["num_heads"], progress=False
        ).output_dir
        for name, info in DENSE_INDEX.items()
    }


def _inputs(name: str):
    expected = np.load(dense_file(name, "expected"))
    for height, width in DENSE_INDEX[name]["image_sizes"]:
        size = f"{height}x{width}"
        yield size, torch.from_numpy(expected[f"pixel_values_u8_{size}"]).float() / 255.0, expected


@pytest.mark.parametrize("name", sorted(DENSE_INDEX))
def test_intermediate_layers_match_official(converted_vision, name):
    model = TipsVisionModel.from_pretrained(converted_vision[name]).eval()
    layers = DENSE_INDEX[name]["dpt"]["layers"]
    for size, pixels, expected in _inputs(name):
        with torch.no_grad():
            outputs = model.get_intermediate_layers(pixels, layers=layers, norm=True)
        assert len(outputs) == len(layers)
        for j, (patches, cls) in enumerate(outputs):
            want_patches = torch.from_numpy(expected[f"intermediate_patch_{j}_{size}"])
            assert patches.shape == want_patches.shape  # (B, D, h, w)
            torch.testing.assert_close(patches, want_patches, atol=FEATURE_TOL, rtol=0)
            torch.testing.assert_close(cls, torch.from_numpy(expected[f"intermediate_cls_{j}_{size}"]),
                                       atol=FEATURE_TOL, rtol=0)
    # An int asks for the last n blocks; the last block without the final norm is the encoder's raw output.
    pixels = next(_inputs(name))[1]
    with torch.no_grad():
        last = model.get_intermediate_layers(pixels, layers=1, norm=False)[0][1]
        raw = model(pixel_values=pixels, output_hidden_states=True).hidden_states[-1][:, 0]
    torch.testing.assert_close(last, raw, atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="block indices"):
        model.get_intermediate_layers(pixels, layers=[model.config.num_hidden_layers])


def test_vision_only_folder_loads_with_auto(converted_vision):
    from transformers import AutoBackbone, AutoModel

    folder = converted_vision["dense-mlp"]
    config = json.loads((folder / "config.json").read_text())
    assert config["model_type"] == "tips_vision_model" and config["auto_map"]["AutoModel"].endswith("TipsVisionModel")
    assert (folder / "modeling_tips.py").is_file() and (folder / "preprocessor_config.json").is_file()
    model = AutoModel.from_pretrained(folder)
    assert isinstance(model, TipsVisionModel)
    reference = np.load(dense_file("dense-mlp", "vision"))
    torch.testing.assert_close(model.embeddings.cls_token, torch.from_numpy(reference["cls_token"]), atol=0, rtol=0)
    # The backbone reads the same folder; stage k is block k - 1, after the final LayerNorm.
    layers = DENSE_INDEX["dense-mlp"]["dpt"]["layers"]
    backbone = TipsBackbone.from_pretrained(folder, out_indices=[i + 1 for i in layers]).eval()
    size, pixels, expected = next(_inputs("dense-mlp"))
    with torch.no_grad():
        maps = backbone(pixel_values=pixels).feature_maps
    assert len(maps) == len(layers)
    for j, feature_map in enumerate(maps):
        torch.testing.assert_close(feature_map, torch.from_numpy(expected[f"intermediate_patch_{j}_{size}"]),
                                   atol=FEATURE_TOL, rtol=0)
    # (transformers 5's AutoBackbone.from_pretrained asks the Hub whether a path is a repo; from_config is offline.)
    assert isinstance(AutoBackbone.from_config(backbone.config), TipsBackbone)


@pytest.mark.parametrize("name", sorted(DENSE_INDEX))
@pytest.mark.parametrize("task", TASKS)
def test_dpt_matches_official(converted_dpt, name, task):
    parity = verify_dpt(converted_dpt[name, task], dense_file(name, "expected"))
    sizes = {f"{h}x{w}" for h, w in DENSE_INDEX[name]["image_sizes"]}
    assert {k for k in parity if k.startswith("dpt_")} == {f"dpt_{task}@{s}" for s in sizes}
    assert len([k for k in parity if k.startswith("intermediate_")]) == 8 * len(sizes)
    assert max(parity.values()) < DPT_TOL, parity


def test_dpt_config_read_from_arrays(converted_dpt):
    from transformers import AutoConfig, AutoModelForDepthEstimation, AutoModelForSemanticSegmentation

    for name, info in DENSE_INDEX.items():
        dpt = info["dpt"]
        seg = AutoConfig.from_pretrained(converted_dpt[name, "segmentation"])
        assert seg.backbone_out_indices == dpt["layers"] and seg.dpt_channels == dpt["channels"]
        assert seg.post_process_channels == dpt["post_process_channels"]
        assert seg.num_labels == dpt["segmentation"]["num_classes"]
        depth = AutoConfig.from_pretrained(converted_dpt[name, "depth"])
        assert depth.num_depth_bins == dpt["depth"]["num_depth_bins"]
        assert (depth.min_depth, depth.max_depth) == (dpt["depth"]["min_depth"], dpt["depth"]["max_depth"])
    seg_model = AutoModelForSemanticSegmentation.from_pretrained(converted_dpt["dense-mlp", "segmentation"])
    depth_model = AutoModelForDepthEstimation.from_pretrained(converted_dpt["dense-mlp", "depth"])
    normals = TipsForNormalEstimation.from_pretrained(converted_dpt["dense-mlp", "normals"])
    assert isinstance(seg_model, TipsForSemanticSegmentation) and isinstance(depth_model, TipsForDepthEstimation)
    auto_map = json.loads((converted_dpt["dense-mlp", "segmentation"] / "config.json").read_text())["auto_map"]
    assert auto_map["AutoModelForSemanticSegmentation"] == "modeling_dense_tips.TipsForSemanticSegmentation"
    assert (converted_dpt["dense-mlp", "normals"] / "modeling_dense_tips.py").is_file()
    pixels = torch.rand(1, 3, 56, 70)
    with torch.no_grad():
        # A 4x5 patch grid: the coarsest level is 2x3 (stride 2), doubled by each of the four fusion blocks: 32x48.
        assert seg_model(pixel_values=pixels).logits.shape == (1, 6, 32, 48)
        assert depth_model(pixel_values=pixels).predicted_depth.shape == (1, 32, 48)
        assert normals(pixel_values=pixels).predicted_normals.shape == (1, 3, 32, 48)
        hidden = normals(pixel_values=pixels, output_hidden_states=True).hidden_states
        assert len(hidden) == 1 and hidden[0].shape == (1, 32, 32, 48)  # decoder features, dpt.channels = 32


def test_segmentation_loss_is_cross_entropy_at_label_size():
    torch.manual_seed(0)
    logits = torch.randn(2, 4, 5, 6)
    labels = torch.randint(0, 4, (2, 10, 12))
    labels[0, :3] = 255
    want = F.cross_entropy(
        F.interpolate(logits, size=(10, 12), mode="bilinear", align_corners=False), labels, ignore_index=255
    )
    torch.testing.assert_close(segmentation_loss(logits, labels), want)
    # Only the labelled pixels count: hand-computed on a 1x1 map upsampled to 1x2 (constant), one pixel ignored.
    one = torch.tensor([[[[2.0]], [[0.0]]]])
    expected = math.log(1 + math.exp(-2.0))
    assert abs(segmentation_loss(one, torch.tensor([[[0, 255]]])).item() - expected) < 1e-6


def test_silog_loss_closed_form():
    target = torch.rand(2, 8, 8) * 5 + 0.5
    scaled = F.interpolate((2.0 * target)[:, None], size=(4, 4), mode="bilinear", align_corners=False)[:, 0]
    # g = log 2 everywhere when the prediction is the target times 2 (at the label size): sqrt((1 - λ) log² 2).
    depth = 2.0 * target
    assert abs(silog_loss(depth, target, 0.85).item() - math.sqrt(0.15) * math.log(2)) < 1e-5
    assert silog_loss(depth, target, 1.0).item() < 1e-5  # fully scale invariant
    invalid = target.clone()
    invalid[0] = 0.0
    invalid[1, :4] = float("nan")
    assert abs(silog_loss(depth, invalid, 0.85).item() - math.sqrt(0.15) * math.log(2)) < 1e-5
    assert silog_loss(scaled, torch.zeros(2, 8, 8)).item() == 0.0
    # g not constant: log 2 on half the pixels, log 4 on the other half. mean(g²) = 2.5 log² 2, mean(g)² = 2.25 log² 2:
    # sqrt(2.5 − 0.85 · 2.25) log 2 (a constant g cannot tell mean(g)² from mean(g²))
    mixed = torch.cat([2.0 * target[:1], 4.0 * target[1:]])
    assert abs(silog_loss(mixed, target, 0.85).item() - math.sqrt(2.5 - 0.85 * 2.25) * math.log(2)) < 1e-5


def test_normals_loss_closed_form():
    normals = F.normalize(torch.randn(2, 3, 6, 6), dim=1)
    assert normals_loss(normals * 3.0, normals).item() < 1e-6  # length does not matter
    assert abs(normals_loss(-normals, normals).item() - 2.0) < 1e-6
    labels = normals.clone()
    labels[:, :, :3] = 0.0  # missing ground truth
    mixed = normals.clone()
    mixed[:, :, :3] = -mixed[:, :, :3]
    assert normals_loss(mixed, labels).item() < 1e-6


def test_models_train_with_labels(converted_dpt):
    torch.manual_seed(0)
    pixels = torch.rand(2, 3, 56, 56)
    cases = {
        "segmentation": (TipsForSemanticSegmentation, torch.randint(0, 6, (2, 50, 50))),
        "depth": (TipsForDepthEstimation, torch.rand(2, 50, 50) * 5 + 0.1),
        "normals": (TipsForNormalEstimation, F.normalize(torch.randn(2, 3, 50, 50), dim=1)),
    }
    for task, (cls, labels) in cases.items():
        model = cls.from_pretrained(converted_dpt["dense-mlp", task]).train()
        out = model(pixel_values=pixels, labels=labels)
        assert out.loss.ndim == 0 and torch.isfinite(out.loss)
        out.loss.backward()
        assert model.head.weight.grad.abs().sum() > 0
        assert model.vision_model.embeddings.patch_embedding.weight.grad is not None
        assert model(pixel_values=pixels, return_dict=False)[0].shape[0] == 2  # tuple output without loss


def test_dpt_from_vision_folder_initialises_decoder(converted_vision):
    from tips_hf import TipsDPTConfig

    config = TipsDPTConfig(vision_config=TipsVisionModel.config_class.from_pretrained(converted_vision["dense-mlp"]),
                           task="depth", num_depth_bins=8, dpt_channels=16)
    model = TipsForDepthEstimation.from_pretrained(converted_vision["dense-mlp"], config=config)
    reference = np.load(dense_file("dense-mlp", "vision"))
    torch.testing.assert_close(model.vision_model.embeddings.cls_token, torch.from_numpy(reference["cls_token"]))
    weight = model.decoder.reassemble.resize_layers[0].weight
    assert torch.isfinite(weight).all() and 0.005 < weight.std() < 0.05  # trunc-normal(0.02), not left empty


def test_cli_dpt_and_vision_only(tmp_path, capsys):
    from tips_hf.conversion.cli import main as cli_main

    name, info = "dense-swiglu", DENSE_INDEX["dense-swiglu"]
    out = tmp_path / "depth"
    code = cli_main(
        ["dpt", "--vision", str(dense_file(name, "vision")), "--vision-heads", str(info["vision"]["num_heads"]),
         "--decoder", str(dense_file(name, "dpt_depth")), "--task", "depth", "--output", str(out),
         "--verify", str(dense_file(name, "expected")), "--no-progress"]
    )
    assert code == 0
    printed = capsys.readouterr().out
    # --layers omitted: the official rule ceil(k * depth / 4) - 1 gives the fixture's blocks for depth 6.
    assert "TipsForDepthEstimation" in printed and f"blocks {info['dpt']['layers']}" in printed and "16 bins" in printed
    parity = json.loads((out / "parity.json").read_text())["max_abs_diff"]
    assert parity["dpt_depth@140x140"] < DPT_TOL and max(parity.values()) < DPT_TOL
    vision_out = tmp_path / "vision"
    assert cli_main(["official", "--vision", str(dense_file(name, "vision")), "--vision-heads", "4",
                     "--output", str(vision_out), "--no-progress"]) == 0
    assert "TipsVisionModel" in capsys.readouterr().out
    assert isinstance(TipsVisionModel.from_pretrained(vision_out), TipsVisionModel)
    assert cli_main(["scenic", "--vision", str(dense_file(name, "vision")), "--output", str(tmp_path / "x")]) == 2
    assert "needs --text" in capsys.readouterr().err
    assert cli_main(["official", "--vision", str(dense_file(name, "vision")), "--vision-heads", "4", "--tokenizer",
                     "tokenizer.model", "--output", str(tmp_path / "y")]) == 2
    assert "tokenizer_path needs the text tower" in capsys.readouterr().err
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def _write_npz(path, arrays):
    with open(path, "wb") as handle:  # a handle keeps the name (np.savez would append .npz to "x.zip")
        np.savez(handle, **arrays)
    return path


def test_dpt_conversion_named_errors(tmp_path, capsys):
    from tips_hf.conversion.cli import main as cli_main

    name = "dense-mlp"
    vision = str(dense_file(name, "vision"))
    decoder = dict(np.load(dense_file(name, "dpt_segmentation")))

    def run(decoder_path, *extra):
        code = cli_main(["dpt", "--vision", vision, "--vision-heads", "4", "--decoder", str(decoder_path),
                         "--output", str(tmp_path / "out"), "--no-progress", *extra])
        return code, capsys.readouterr().err

    missing = {k: v for k, v in decoder.items() if not k.endswith("convs_2/kernel")}
    code, err = run(_write_npz(tmp_path / "missing.npz", missing), "--task", "segmentation")
    assert code == 2 and "missing key" in err and "decoder/dpt/convs_2/kernel" in err
    code, err = run(_write_npz(tmp_path / "extra.npz", {**decoder, "decoder/dpt/extra/kernel": np.zeros(2)}),
                    "--task", "segmentation")
    assert code == 2 and "unexpected key" in err and "decoder/dpt/extra/kernel" in err
    code, err = run(dense_file(name, "dpt_segmentation"), "--task", "depth")
    assert code == 2 and "no depth head" in err and "pixel_segmentation" in err
    wrong = dict(decoder)
    wrong["decoder/dpt/project/kernel"] = np.zeros((3, 3, 32, 16), np.float32)
    code, err = run(_write_npz(tmp_path / "wrong.npz", wrong), "--task", "segmentation")
    assert code == 2 and "decoder/dpt/project/kernel" in err and "(3, 3, 16, 32)" not in err
    code, err = run(dense_file("dense-swiglu", "dpt_normals"), "--task", "normals")
    assert code == 2 and "width 96" in err and "width 64" in err
    truncated = tmp_path / "truncated.zip"
    truncated.write_bytes(dense_file(name, "dpt_depth").read_bytes()[:5000])
    code, err = run(truncated, "--task", "depth")
    assert code == 2 and "truncated.zip" in err
    code, err = run(dense_file(name, "dpt_segmentation"), "--task", "segmentation", "--layers", "0", "1", "2", "9")
    assert code == 2 and "--layers" in err
    code, err = run(dense_file(name, "dpt_segmentation"), "--task", "segmentation", "--max-depth", "5")
    assert code == 2 and "--task depth only" in err
    assert not (tmp_path / "out").exists()  # nothing half-written


def test_ade20k_names_for_150_classes(tmp_path):
    from tips_hf.conversion.dpt import ADE20K_CLASSES

    decoder = dict(np.load(dense_file("dense-mlp", "dpt_segmentation")))
    rng = np.random.RandomState(0)
    decoder["decoder/pixel_segmentation/kernel"] = rng.randn(32, 150).astype(np.float32)
    decoder["decoder/pixel_segmentation/bias"] = np.zeros(150, np.float32)
    path = _write_npz(tmp_path / "ade.zip", decoder)  # released files are .zip npz archives
    config = convert_dpt(dense_file("dense-mlp", "vision"), path, tmp_path / "out", "segmentation",
                         vision_heads=4, progress=False).config
    assert len(ADE20K_CLASSES) == 150 and config.num_labels == 150
    assert (config.id2label[0], config.id2label[12], config.id2label[149]) == ("wall", "person", "flag")


# ----------------------------------------------------------------------------------------------------------------------
# Zero-shot segmentation, official protocol (values trick, whole / slide)


@pytest.mark.parametrize("name", sorted(DENSE_INDEX))
def test_zero_shot_segment_matches_official(converted_vision, name):
    from tips_hf.dense import SEGMENTATION_TEMPLATES, value_patch_embeds, zero_shot_segment

    model = TipsVisionModel.from_pretrained(converted_vision[name]).eval()
    slide = DENSE_INDEX[name]["zero_shot"]
    for size, pixels, expected in _inputs(name):
        text = torch.from_numpy(expected["zs_text_features"])
        values = value_patch_embeds(model, pixels)
        # Float32 rounding through the blocks (measured 1.9e-6), as for the intermediate layers.
        torch.testing.assert_close(values, torch.from_numpy(expected[f"values_patches_{size}"]), atol=1e-5, rtol=0)
        whole = zero_shot_segment(model, pixels, text)  # defaults: method="values", mode="whole"
        # Cosines of unit vectors: rounding of a D-term dot product (measured 1.8e-7).
        torch.testing.assert_close(whole["scores"], torch.from_numpy(expected[f"zs_whole_{size}"]), atol=1e-6, rtol=0)
        assert torch.equal(whole["labels"], whole["scores"].argmax(dim=1))
        slid = zero_shot_segment(model, pixels, text, method="values", mode="slide", window=slide["slide_side"],
                                 stride=slide["slide_stride"])
        # Softmax probabilities averaged over windows (measured 6e-8).
        torch.testing.assert_close(slid["scores"], torch.from_numpy(expected[f"zs_slide_{size}"]), atol=1e-6, rtol=0)
        torch.testing.assert_close(slid["scores"].sum(dim=1), torch.ones(pixels.shape[0], *pixels.shape[-2:]))
    assert len(SEGMENTATION_TEMPLATES) == 9 and SEGMENTATION_TEMPLATES[0] == "itap of a {}."


def test_zero_shot_segment_values_differ_from_patches_and_accept_tips_model(converted_vision):
    from tips_hf import TipsConfig, TipsModel
    from tips_hf.dense import zero_shot_segment

    vision = TipsVisionModel.from_pretrained(converted_vision["dense-mlp"]).eval()
    size, pixels, expected = next(_inputs("dense-mlp"))
    text = torch.from_numpy(expected["zs_text_features"])
    tips = TipsModel(TipsConfig(vision_config=vision.config.to_dict(),
                                text_config=dict(hidden_size=64, num_attention_heads=4, num_hidden_layers=1,
                                                 intermediate_size=64, vocab_size=10))).eval()
    tips.vision_model.load_state_dict(vision.state_dict())
    from_tips = zero_shot_segment(tips, pixels, text)["scores"]
    torch.testing.assert_close(from_tips, torch.from_numpy(expected[f"zs_whole_{size}"]), atol=1e-6, rtol=0)
    patches = zero_shot_segment(tips, pixels, text, method="patches")["scores"]
    assert (patches - from_tips).abs().max() > 1e-2  # the values trick is a different feature
    # Sides that are not multiples of 14 are resized (bicubic) up to the next multiple, as the notebook does.
    odd = zero_shot_segment(vision, pixels[:, :, :100, :101], text, output_size=(100, 101))
    assert odd["scores"].shape == (2, 5, 100, 101) and odd["labels"].shape == (2, 100, 101)
    with pytest.raises(ValueError, match="method"):
        zero_shot_segment(vision, pixels, text, method="tokens")
    with pytest.raises(ValueError, match="mode"):
        zero_shot_segment(vision, pixels, text, mode="tiles")


# ----------------------------------------------------------------------------------------------------------------------
# Post-processing, pipelines, remote code


def test_post_processing_upsamples_bilinearly():
    from transformers.modeling_outputs import DepthEstimatorOutput, SemanticSegmenterOutput

    from tips_hf import TipsImageProcessor

    processor = TipsImageProcessor()
    logits = torch.zeros(2, 3, 2, 2)
    logits[0, 1, 0, 0] = 4.0  # class 1 wins only near the top-left corner
    logits[1, 2] = 1.0
    maps = processor.post_process_semantic_segmentation(SemanticSegmenterOutput(logits=logits), [(4, 4), (3, 5)])
    assert [tuple(m.shape) for m in maps] == [(4, 4), (3, 5)]
    # Bilinear 2->4 (align_corners=False) samples source coordinates -0.25, 0.25, 0.75, 1.25 (clamped): class 1's
    # score is 4.0 * (1, 0.75, 0.25, 0) along a row, so it wins on the first three pixels of row 0; ties go to class 0.
    assert maps[0][0].tolist() == [1, 1, 1, 0] and maps[0][:, 0].tolist() == [1, 1, 1, 0]
    assert maps[0][3, 3] == 0 and (maps[1] == 2).all()
    assert processor.post_process_semantic_segmentation({"logits": logits})[0].shape == (2, 2)
    depth = torch.tensor([[[1.0, 3.0]]])  # (1, 1, 2)
    out = processor.post_process_depth_estimation(DepthEstimatorOutput(predicted_depth=depth), [(1, 4)])
    torch.testing.assert_close(out[0]["predicted_depth"], torch.tensor([[1.0, 1.5, 2.5, 3.0]]))
    with pytest.raises(ValueError, match="target sizes"):
        processor.post_process_depth_estimation(DepthEstimatorOutput(predicted_depth=depth), [(1, 4), (2, 2)])


def test_pipelines_on_converted_folders(converted_dpt):
    from PIL import Image
    from transformers import pipeline

    image = Image.fromarray((np.random.RandomState(0).rand(60, 80, 3) * 255).astype(np.uint8))
    # trust_remote_code=False: the classes registered by `import tips_hf` are used (no question about remote code).
    segmenter = pipeline(
        "image-segmentation", model=str(converted_dpt["dense-mlp", "segmentation"]), trust_remote_code=False
    )
    assert isinstance(segmenter.model, TipsForSemanticSegmentation)
    annotations = segmenter(image)
    names = set(segmenter.model.config.id2label.values())
    assert annotations and all(a["label"] in names and a["mask"].size == (80, 60) for a in annotations)
    covered = sum(np.asarray(a["mask"]) > 0 for a in annotations)
    assert (covered == 1).all()  # every pixel has exactly one label
    estimator = pipeline(
        "depth-estimation", model=str(converted_dpt["dense-mlp", "depth"]), trust_remote_code=False
    )
    result = estimator(image)
    depth = result["predicted_depth"]
    assert depth.shape == (60, 80) and result["depth"].size == (80, 60)
    # Same numbers as the model + post-processing by hand (448 px processor of the converted folder).
    inputs = estimator.image_processor(image, return_tensors="pt")
    with torch.no_grad():
        raw = estimator.model(**inputs).predicted_depth
    manual = F.interpolate(raw[:, None], size=(60, 80), mode="bilinear", align_corners=False)[0, 0]
    torch.testing.assert_close(depth, manual)
    assert 0.001 <= float(depth.min()) and float(depth.max()) <= 10.0


REMOTE_CHILD = """
import numpy as np, torch
from transformers import AutoModel, AutoModelForDepthEstimation, AutoModelForSemanticSegmentation, pipeline
from PIL import Image
pixels = torch.from_numpy(np.load(INPUTS)["pixels"])
seg = AutoModelForSemanticSegmentation.from_pretrained(SEG, trust_remote_code=True).eval()
depth = AutoModelForDepthEstimation.from_pretrained(DEPTH, trust_remote_code=True).eval()
normals = AutoModel.from_pretrained(NORMALS, trust_remote_code=True).eval()
for model in (seg, depth, normals):
    assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
with torch.no_grad():
    out = dict(seg=seg(pixel_values=pixels).logits.numpy(), depth=depth(pixel_values=pixels).predicted_depth.numpy(),
               normals=normals(pixel_values=pixels).predicted_normals.numpy())
estimator = pipeline("depth-estimation", model=DEPTH, trust_remote_code=True)
image = Image.fromarray((pixels[0].permute(1, 2, 0).numpy() * 255).astype(np.uint8))
out["pipeline_depth"] = estimator(image)["predicted_depth"].numpy()
np.savez(OUTPUT, **out)
"""


@pytest.mark.slow  # a fresh interpreter importing transformers and building remote modules: ~10 s idle, 30 s loaded
def test_remote_code_outside_package(converted_dpt, tmp_path):
    from conftest import run_without_tips_hf

    pixels = torch.rand(1, 3, 56, 56)
    np.savez(tmp_path / "inputs.npz", pixels=pixels.numpy())
    folders = {task: str(converted_dpt["dense-mlp", task]) for task in TASKS}
    run = run_without_tips_hf(REMOTE_CHILD, tmp_path, SEG=folders["segmentation"], DEPTH=folders["depth"],
                              NORMALS=folders["normals"], INPUTS=str(tmp_path / "inputs.npz"),
                              OUTPUT=str(tmp_path / "out.npz"))
    assert run.returncode == 0, run.stderr[-3000:]
    remote = np.load(tmp_path / "out.npz")
    with torch.no_grad():
        seg = TipsForSemanticSegmentation.from_pretrained(folders["segmentation"]).eval()(pixel_values=pixels)
        depth = TipsForDepthEstimation.from_pretrained(folders["depth"]).eval()(pixel_values=pixels)
        normals = TipsForNormalEstimation.from_pretrained(folders["normals"]).eval()(pixel_values=pixels)
    np.testing.assert_array_equal(remote["seg"], seg.logits.numpy())
    np.testing.assert_array_equal(remote["depth"], depth.predicted_depth.numpy())
    np.testing.assert_array_equal(remote["normals"], normals.predicted_normals.numpy())
    assert remote["pipeline_depth"].shape == (56, 56) and np.isfinite(remote["pipeline_depth"]).all()


# ----------------------------------------------------------------------------------------------------------------------
# Pictures


def test_colorize_depth_and_normals():
    from tips_hf.dense.visualize import colorize_depth, colorize_normals

    depth = torch.tensor([[1.0, 2.0, 3.0], [float("nan"), 2.0, 1.0]])
    painted = colorize_depth(depth, vmin=1.0, vmax=3.0)
    assert painted.shape == (2, 3, 3) and painted.dtype == np.uint8
    assert painted[0, 0].tolist() == [252, 253, 191] and painted[0, 2].tolist() == [0, 0, 4]  # near bright, far dark
    assert painted[1, 0].tolist() == [0, 0, 0]  # not finite
    assert painted[0, 1].sum() > painted[0, 2].sum() and painted[0, 1].sum() < painted[0, 0].sum()
    normals = torch.zeros(3, 1, 3)
    normals[:, 0, 0] = torch.tensor([0.0, 0.0, 2.0])  # length does not matter
    normals[:, 0, 1] = torch.tensor([-1.0, 0.0, 0.0])
    assert colorize_normals(normals)[0].tolist() == [[128, 128, 255], [0, 128, 128], [128, 128, 128]]


def test_visualize_dpt_pictures(converted_dpt, tmp_path, capsys):
    from PIL import Image

    from tips_hf.dense.cli import main as visualize

    image = tmp_path / "room.png"
    Image.fromarray((np.random.RandomState(0).rand(50, 70, 3) * 255).astype(np.uint8)).save(image)
    folders = {task: str(converted_dpt["dense-mlp", task]) for task in TASKS}
    code = visualize(["--depth", folders["depth"], "--normals", folders["normals"], "--segmentation",
                      folders["segmentation"], "--image", str(image), "--out", str(tmp_path / "pics"), "--size", "56"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "depth:" in printed
    for task in TASKS:
        picture = np.asarray(Image.open(tmp_path / "pics" / f"room_{task}.png"))
        assert picture.shape[1] == 56 + 4 + 56 and picture.shape[0] >= 56
        assert picture[:56, 60:].std() > 1  # the painted half is not constant
    assert visualize(["--depth", folders["normals"], "--image", str(image), "--out", str(tmp_path)]) == 2
    assert "holds a normals model" in capsys.readouterr().err
    assert visualize(["--image", str(image), "--out", str(tmp_path)]) == 2
    assert "--model" in capsys.readouterr().err


# ----------------------------------------------------------------------------------------------------------------------
# Training DPT heads (training/finetune.py, model.head=dpt)


def _dpt_config(base, out, *overrides):
    from tips_hf.finetuning import load_finetune_config

    return load_finetune_config(None, [
        f"model.base={base}", "model.head=dpt", "model.dpt_channels=16", "model.depth_bins=8", "lora.r=4",
        "data.num_examples=8", "data.eval_examples=4", "data.scene_image_size=56", "data.image_size=56",
        "training.max_steps=2", "training.batch_size=4", f"training.output_dir={out}", *overrides,
    ])


def _dpt_finetune(base, out, *overrides):
    from tips_hf.finetuning import finetune

    return finetune(_dpt_config(base, out, *overrides))


def test_finetune_dpt_head_with_lora_saves_an_auto_loadable_folder(tiny_model_dir, tmp_path):
    from transformers import AutoModelForSemanticSegmentation

    from tips_hf.finetuning import evaluate_dense, load_finetune_config
    from tips_hf.finetuning.data import DenseDataset

    result = _dpt_finetune(tiny_model_dir, tmp_path / "out")
    folder = tmp_path / "out" / "model"
    model = AutoModelForSemanticSegmentation.from_pretrained(folder).eval()
    by_hand = scores_by_hand(model, _dpt_config(tiny_model_dir, tmp_path / "out"))  # the merged folder's scores
    assert result["lora"] and result["eval"]["mean_iou"] == pytest.approx(by_hand["mean_iou"], abs=1e-6)
    assert isinstance(model, TipsForSemanticSegmentation) and model.config.dpt_channels == 16
    assert (tmp_path / "out" / "adapter" / "adapter_model.safetensors").is_file()
    assert (folder / "modeling_dense_tips.py").is_file() and (folder / "preprocessor_config.json").is_file()
    # The merged folder scores the evaluation set as the LoRA model did during training.
    config = load_finetune_config(None, ["data.eval_examples=4", "data.scene_image_size=56", "data.image_size=56"])
    eval_set = DenseDataset(config.data, "segmentation", "validation", 4, 0)
    again = evaluate_dense(model, eval_set, "segmentation", model.config.num_labels, background_class=True)
    assert abs(again["mean_iou"] - result["eval"]["mean_iou"]) < 1e-6
    assert again["object_mean_iou"] == pytest.approx(result["eval"]["object_mean_iou"], abs=1e-6, nan_ok=True)
    assert [model.config.id2label[i] for i in (0, 1, 8)] == ["background", "circle", "crescent"]  # the scenes' classes


def test_finetune_feeds_the_base_models_normalisation(tiny_model_dir, tmp_path, monkeypatch):
    """A backbone pretrained on normalised pixels (its processor has `do_normalize`) is trained and scored on the same
    normalised pixels, and the DPT folder's processor keeps the normalisation."""
    import shutil

    from tips_hf import TipsImageProcessor
    from tips_hf.modeling.modeling_tips import TipsVisionEmbeddings
    from tips_hf.pretraining.data import processor_normalisation

    mean, std = (0.5, 0.4, 0.3), (0.25, 0.2, 0.5)
    assert processor_normalisation(str(tiny_model_dir)) == (None, None)  # no processor: the released [0, 1] input
    base = tmp_path / "base"
    shutil.copytree(tiny_model_dir, base)
    TipsImageProcessor(size={"height": 56, "width": 56}, do_normalize=True, image_mean=list(mean),
                       image_std=list(std)).save_pretrained(base)
    assert processor_normalisation(str(base)) == (mean, std)
    seen = []
    forward = TipsVisionEmbeddings.forward

    def record(self, pixel_values, *args, **kwargs):
        seen.append(float(pixel_values.min()))
        return forward(self, pixel_values, *args, **kwargs)

    monkeypatch.setattr(TipsVisionEmbeddings, "forward", record)
    _dpt_finetune(base, tmp_path / "out")
    # Black pixels become (0 - 0.5) / 0.25 = -2 on the red channel; [0, 1] inputs would never go below 0.
    assert seen and min(seen) < -1.0
    processor = TipsImageProcessor.from_pretrained(tmp_path / "out" / "model")
    assert processor.do_normalize and tuple(processor.image_mean) == mean and tuple(processor.image_std) == std


@pytest.fixture(scope="module")
def ade_nyu_parquets(tmp_path_factory):
    """Six rows in the ADE20K layout (0 = "other", ignored; classes 1..) and the NYU layout (metres, 0 = missing)."""
    import io

    import datasets
    from PIL import Image

    def png(array):
        buffer = io.BytesIO()
        Image.fromarray(array).save(buffer, format="PNG")
        return {"bytes": buffer.getvalue(), "path": None}

    folder = tmp_path_factory.mktemp("ade-nyu")
    rng = np.random.RandomState(0)
    ade, nyu = [], []
    for i in range(6):
        annotation = np.zeros((42, 42), np.uint8)  # ADE20K: 0 = "other" (ignored), classes 1..150
        annotation[: 10 + i, :] = 1
        annotation[20:, 21:] = 3
        image = (rng.rand(42, 42, 3) * 255).astype(np.uint8)
        ade.append({"image": png(image), "annotation": png(annotation)})
        depth = np.linspace(0.5, 4.0, 42 * 42, dtype=np.float32).reshape(42, 42)  # NYU: metres, float
        depth[:3] = 0.0  # missing depth
        nyu.append({"image": png(image), "depth_map": depth})
    datasets.Dataset.from_list(ade, features=datasets.Features({"image": datasets.Image(),
                                                                "annotation": datasets.Image()})
                               ).to_parquet(folder / "ade.parquet")
    datasets.Dataset.from_list(nyu, features=datasets.Features({
        "image": datasets.Image(), "depth_map": datasets.Array2D((42, 42), "float32")})).to_parquet(folder / "nyu.parquet")
    return folder


# Short runs that learn: no warm-up, a larger LR, a loss logged every step.
LEARNING = ["training.max_steps=4", "optim.warmup_steps=0", "optim.lr=1e-2", "training.logging_steps=1",
            "training.progress_bar=false"]


@pytest.fixture(scope="module")
def nyu_run(tiny_model_dir, ade_nyu_parquets, tmp_path_factory):
    out = tmp_path_factory.mktemp("nyu")
    nyu_args = ["data.source=parquet", f"data.path={ade_nyu_parquets / 'nyu.parquet'}", "data.label_column=depth_map",
                "data.split=train", "data.eval_split=train", "training.task=depth", "model.max_depth=5"]
    config = _dpt_config(tiny_model_dir, out, *nyu_args)
    from tips_hf.finetuning import finetune

    return config, finetune(config), out


def test_finetune_dpt_on_ade20k_layout(tiny_model_dir, ade_nyu_parquets, tmp_path):
    from tips_hf.finetuning import load_dense, load_finetune_config
    from tips_hf.finetuning.data import DenseDataset

    ade_args = ["data.source=parquet", f"data.path={ade_nyu_parquets / 'ade.parquet'}", "data.label_column=annotation",
                "data.num_classes=3", "data.reduce_labels=true", "data.split=train", "data.eval_split=train"]
    config = load_finetune_config(None, [*ade_args, "data.image_size=42"])
    label = DenseDataset(config.data, "segmentation", "train", 6)[0]["labels"]
    assert set(label.unique().tolist()) == {0, 2, 255}  # 1 -> 0, 3 -> 2, 0 ("other") -> ignored
    config = _dpt_config(tiny_model_dir, tmp_path / "ade", *ade_args, "lora.enabled=false", *LEARNING)
    from tips_hf.finetuning import finetune

    result = finetune(config)
    model = load_dense(tmp_path / "ade")
    assert not result["lora"] and isinstance(model, TipsForSemanticSegmentation)
    # the reported scores are the saved model's, computed by hand; the training loss fell
    by_hand = scores_by_hand(model, config)
    assert result["eval"]["mean_iou"] == pytest.approx(by_hand["mean_iou"], abs=1e-6)
    assert result["eval"]["pixel_accuracy"] == pytest.approx(by_hand["pixel_accuracy"], abs=1e-6)
    losses = logged_losses(tmp_path / "ade")  # measured 1.099 (log 3: a zero-initialised head), 1.091, 1.082, 1.073
    assert len(losses) == 4 and all(b < a for a, b in zip(losses, losses[1:])) and losses[-1] < losses[0] - 0.015


def test_finetune_dpt_depth_rmse_leaves_out_missing_depth(nyu_run):
    """The NYU layout: the saved model is a TipsForDepthEstimation, and the reported RMSE is its RMSE computed by hand
    over the pixels with a depth (NYU's 0 = missing is not scored, as in the SILog loss, DepthMetrics and the NYU
    probe). This noise-image ramp barely trains in a few steps: the DPT depth path's loss decrease is checked under
    Trainer (test_trainer.py), the linear depth head's in test_finetuning.py."""
    from tips_hf.finetuning import load_dense

    config, result, out = nyu_run
    model = load_dense(out)
    assert isinstance(model, TipsForDepthEstimation) and model.config.max_depth == 5.0
    by_hand = scores_by_hand(model, config, missing_depth=0.0)
    assert result["eval"]["rmse"] == pytest.approx(by_hand["rmse"], rel=1e-5)
    assert abs(scores_by_hand(model, config)["rmse"] - by_hand["rmse"]) > 0.05  # the zeros would change it


def test_evaluate_dense_object_miou_leaves_out_the_background():
    """Closed form on two 2x2 maps with a background (0) and classes 1, 2. Pixels true / predicted / both:
    background 3 / 5 / 3 (IoU 3/5), class 1 2 / 3 / 1 (IoU 1/4), class 2 3 / 0 / 0 (IoU 0)."""
    from tips_hf.finetuning import DenseOutput, evaluate_dense

    labels = torch.tensor([[[0, 0], [1, 1]], [[0, 2], [2, 2]]])
    prediction = torch.tensor([[[0, 0], [1, 0]], [[0, 0], [1, 1]]])

    class Stub(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.weight = torch.nn.Parameter(torch.zeros(1))
            self.calls = 0

        def forward(self, pixel_values, labels):
            chunk = prediction[self.calls : self.calls + len(labels)]
            self.calls += len(labels)
            return DenseOutput(loss=self.weight.sum(), logits=F.one_hot(chunk, 3).permute(0, 3, 1, 2).float())

    dataset = [{"pixel_values": torch.zeros(3, 2, 2, dtype=torch.uint8), "labels": labels[i]} for i in range(2)]
    plain = evaluate_dense(Stub(), dataset, "segmentation", num_classes=3)
    scores = evaluate_dense(Stub(), dataset, "segmentation", num_classes=3, background_class=True)
    assert "object_mean_iou" not in plain
    assert plain["mean_iou"] == pytest.approx((3 / 5 + 1 / 4 + 0) / 3)
    assert scores["mean_iou"] == pytest.approx(plain["mean_iou"])
    assert scores["object_mean_iou"] == pytest.approx((1 / 4 + 0) / 2)


def test_dense_finetune_progress_bar_can_be_turned_off(tiny_model_dir, tmp_path, capsys):
    """`training.progress_bar=false` (as in pretraining) silences the fine-tuning bar; the default shows it."""
    _dpt_finetune(tiny_model_dir, tmp_path / "on")
    assert "2/2 [" in capsys.readouterr().err  # Trainer's bar over the 2 steps
    _dpt_finetune(tiny_model_dir, tmp_path / "off", "training.progress_bar=false")
    assert "2/2 [" not in capsys.readouterr().err
