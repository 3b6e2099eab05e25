"""Dense-task tools: zero-shot classification/segmentation, k-NN, linear probes, pictures and `tips-visualize`."""

from __future__ import annotations

import copy
import math
import time
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import tiny_config
from PIL import Image

from tips_hf import TipsModel, TipsProcessor
from tips_hf.dense import (
    BACKGROUND,
    PROMPT_TEMPLATES,
    colorize_segmentation,
    encode_labels,
    knn_classify,
    knn_segmentation,
    linear_probe_depth,
    linear_probe_segmentation,
    palette,
    patch_targets,
    save_segmentation_picture,
    zero_shot_classify,
    zero_shot_segment,
)
from tips_hf.dense.cli import main
from tips_hf.dense.visualize import BACKGROUND_COLOR

LABELS = ["red circle", "blue square", "green triangle"]


@pytest.fixture(scope="module")
def converted(converted_official):
    folder = converted_official["v1-mlp-224"]
    return folder, TipsModel.from_pretrained(folder).eval(), TipsProcessor.from_pretrained(folder)


def _image(seed: int = 1, size=(60, 80)) -> Image.Image:
    return Image.fromarray((np.random.RandomState(seed).rand(*size, 3) * 255).astype(np.uint8))


# ----------------------------------------------------------------------------------------------------------------------
# Zero-shot


def test_encode_labels_is_renormalised_template_mean(converted):
    _, model, processor = converted
    templates = PROMPT_TEMPLATES[:3]
    embeds = encode_labels(model, processor, LABELS, templates=templates, batch_size=2)
    assert embeds.shape == (len(LABELS), model.config.text_config.hidden_size)
    torch.testing.assert_close(embeds.norm(dim=-1), torch.ones(len(LABELS)))
    with torch.no_grad():
        for index, label in enumerate(LABELS):
            tokens = processor(text=[t.format(label) for t in templates], return_tensors="pt")
            per_template = F.normalize(model.get_text_features(**tokens).pooler_output, dim=-1)
            torch.testing.assert_close(embeds[index], F.normalize(per_template.mean(dim=0), dim=0), atol=1e-5, rtol=0)
    # The tokenizer alone gives the same embeddings as the processor.
    torch.testing.assert_close(encode_labels(model, processor.tokenizer, LABELS, templates), embeds)
    # Averaging over templates changes the result (the test above is not vacuous).
    single = encode_labels(model, processor, LABELS, templates=templates[:1])
    assert (single - embeds).abs().max() > 1e-3


def test_zero_shot_classify_matches_model_forward(converted):
    _, model, processor = converted
    model = copy.deepcopy(model)
    with torch.no_grad():  # distinct per-head temperatures (the fixture's are equal): a head mix-up shows
        model.log_temperature.copy_(torch.tensor([0.01, 0.02]).log())
    inputs = processor(images=[_image(1), _image(2)], text=LABELS, return_tensors="pt")
    label_embeds = encode_labels(model, processor, LABELS, templates=["{}"])
    with torch.no_grad():
        output = model(**inputs)
    logits = zero_shot_classify(model, inputs["pixel_values"], label_embeds)
    synthetic = zero_shot_classify(model, inputs["pixel_values"], label_embeds, head="synthetic")
    assert logits.shape == (2, len(LABELS))
    # The same cosines ÷ temperature through two code paths (labels encoded apart vs in the forward): measured
    # 1.9e-6 on logits up to ~15 (2 ulps). 1e-6 × the largest logit gives an ~8x margin; a temperature of the other
    # head doubles or halves them, a missing normalisation moves them by > 1e-2 (the old 1e-3 was 500x the error).
    tolerance = 1e-6 * float(output.logits_per_image.abs().max())
    torch.testing.assert_close(logits, output.logits_per_image, atol=tolerance, rtol=0)
    torch.testing.assert_close(synthetic, output.synthetic_logits_per_image, atol=tolerance, rtol=0)
    with pytest.raises(ValueError, match="head"):
        zero_shot_classify(model, inputs["pixel_values"], label_embeds, head="patch")


def _controlled_model(patch_embeds: torch.Tensor):
    """A stand-in whose `get_image_features` returns the given (B, h, w, D) patch features."""
    return SimpleNamespace(get_image_features=lambda pixel_values: SimpleNamespace(patch_embeds=patch_embeds))


def test_zero_shot_segment_constructed_case():
    labels = torch.eye(3)  # label k is the k-th axis
    patches = torch.tensor(
        [[[[5.0, 0.0, 0.0], [0.0, 0.2, 0.0]], [[0.1, 0.0, 0.3], [0.3, 0.3, 0.1]]]]
    )  # (1, 2, 2, 3); the last patch has best cosine 0.69
    model = _controlled_model(patches)
    out = zero_shot_segment(model, torch.zeros(1, 3, 28, 28), labels, method="patches")
    assert out["logits"].shape == (1, 3, 2, 2) and out["scores"] is out["logits"]
    assert out["labels"].tolist() == [[[0, 1], [2, 0]]]
    torch.testing.assert_close(out["logits"][0, :, 1, 1], torch.tensor([0.3, 0.3, 0.1]) / math.sqrt(0.19))
    # Background threshold: only the last patch is below 0.8.
    out = zero_shot_segment(model, torch.zeros(1, 3, 28, 28), labels, method="patches", background_threshold=0.8)
    assert out["labels"].tolist() == [[[0, 1], [2, BACKGROUND]]]
    # Upsampled: bilinear on the cosine scores, then argmax (computed here by hand, per pixel).
    up = zero_shot_segment(model, torch.zeros(1, 3, 28, 28), labels, method="patches", output_size=(5, 7))
    cosine = torch.stack([F.cosine_similarity(patches[0], label.view(1, 1, 3), dim=-1) for label in labels])
    expected = F.interpolate(cosine[None], size=(5, 7), mode="bilinear", align_corners=False).argmax(dim=1)
    assert up["logits"].shape == (1, 3, 5, 7) and up["labels"].shape == (1, 5, 7)
    assert torch.equal(up["labels"], expected)
    assert up["labels"][0, 0, 0] == 0 and up["labels"][0, -1, 0] == 2  # corners keep their patch's label


def test_zero_shot_segment_matches_manual_cosine_on_model():
    torch.manual_seed(0)
    model = TipsModel(tiny_config()).eval()
    pixel_values = torch.rand(2, 3, 56, 70)
    label_embeds = F.normalize(torch.randn(4, 32), dim=-1)
    out = zero_shot_segment(model, pixel_values, label_embeds, method="patches", output_size=(56, 70))
    with torch.no_grad():
        patches = F.normalize(model.get_image_features(pixel_values=pixel_values).patch_embeds, dim=-1)  # (2, 4, 5, D)
    manual = torch.einsum("bhwd,kd->bkhw", patches, label_embeds)
    manual_up = F.interpolate(manual, size=(56, 70), mode="bilinear", align_corners=False)
    torch.testing.assert_close(out["logits"], manual_up, atol=1e-5, rtol=0)
    assert torch.equal(out["labels"], manual_up.argmax(dim=1))
    assert out["labels"].unique().numel() > 1  # a non-trivial map


# ----------------------------------------------------------------------------------------------------------------------
# k-NN


def test_knn_separable_clusters():
    generator = torch.Generator().manual_seed(0)
    centres = torch.randn(4, 16, generator=generator) * 3
    train_labels = torch.arange(4).repeat_interleave(25)
    test_labels = torch.arange(4).repeat_interleave(10)
    train = centres[train_labels] + 0.3 * torch.randn(100, 16, generator=generator)
    test = centres[test_labels] + 0.3 * torch.randn(40, 16, generator=generator)
    result = knn_classify(train, train_labels, test, test_labels, k=10, batch_size=7)
    assert result["accuracy"] == 1.0
    assert torch.equal(result["predictions"], test_labels)
    assert result["scores"].shape == (40, 4)


def test_knn_temperature_weighted_vote():
    # Query (1, 0): one class-0 neighbour at cosine 1, two class-1 neighbours at cosine 0.9, a far class-0 point.
    s = math.sqrt(1 - 0.81)
    train = torch.tensor([[1.0, 0.0], [0.9, s], [0.9, -s], [-1.0, 0.0]])
    labels = torch.tensor([0, 1, 1, 0])
    query = torch.tensor([[2.0, 0.0]])
    # T = 0.07: exp(1/T) > 2 exp(0.9/T), class 0 wins; T = 1: e < 2 e^0.9, class 1 wins (k = 3 drops the far point).
    sharp = knn_classify(train, labels, query, torch.tensor([0]), k=3, temperature=0.07)
    assert sharp["predictions"].tolist() == [0] and sharp["accuracy"] == 1.0
    ratio = sharp["scores"][0, 0] / sharp["scores"][0, 1]
    assert ratio.item() == pytest.approx(math.exp(1 / 0.07) / (2 * math.exp(0.9 / 0.07)), rel=1e-4)
    soft = knn_classify(train, labels, query, torch.tensor([0]), k=3, temperature=1.0)
    assert soft["predictions"].tolist() == [1] and soft["accuracy"] == 0.0
    assert (soft["scores"][0, 0] / soft["scores"][0, 1]).item() == pytest.approx(math.e / (2 * math.exp(0.9)), rel=1e-4)


def test_knn_votes_in_float32_under_autocast():
    """A bf16 training run evaluates under autocast: the vote is still the float32 one (it used to fail in
    scatter_add_ on a bf16 weight), and closer ties than bf16 resolves (cosines 0.999 vs 0.998) keep their order."""
    train = torch.tensor([[1.0, 0.0], [0.999, math.sqrt(1 - 0.999**2)], [0.998, math.sqrt(1 - 0.998**2)]])
    labels, query = torch.tensor([0, 1, 1]), torch.tensor([[1.0, 0.0]])
    want = knn_classify(train, labels, query, k=3, temperature=0.001)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = knn_classify(train, labels, query, k=3, temperature=0.001)
    assert got["scores"].dtype == torch.float32
    torch.testing.assert_close(got["scores"], want["scores"], rtol=0, atol=0)
    # exp(0) : exp(-1) + exp(-2) in float32; bf16 cosines (0.999 and 0.998 both round to 1.0) would give 1 : 2
    assert (want["scores"][0, 0] / want["scores"][0, 1]).item() == pytest.approx(1 / (math.exp(-1) + math.exp(-2)),
                                                                             rel=1e-2)


# ----------------------------------------------------------------------------------------------------------------------
# Linear probes


def _segmentation_data(num: int, prototypes: torch.Tensor, seed: int, noise: float = 1.0):
    """Label maps made of 2x2-patch blocks on an 8x8 grid (4 px per patch) and features = class prototype + noise."""
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.randint(0, prototypes.shape[0], (num, 4, 4), generator=generator)
    grid = coarse.repeat_interleave(2, 1).repeat_interleave(2, 2)  # (num, 8, 8)
    masks = grid.repeat_interleave(4, 1).repeat_interleave(4, 2)  # (num, 32, 32)
    feats = prototypes[grid] + noise * torch.randn(num, 8, 8, prototypes.shape[1], generator=generator)
    return feats, masks


def test_patch_targets_majority_and_nearest():
    mask = torch.tensor(
        [
            [0, 0, 1, 1],
            [0, 1, 1, 255],
            [2, 2, 255, 255],
            [3, 2, 255, 255],
        ]
    )[None]
    majority = patch_targets(mask, (2, 2), num_classes=4, ignore_index=255)
    # Cells: {0,0,0,1} -> 0; {1,1,1,void} -> 1; {2,2,3,2} -> 2; all void -> -1.
    assert majority.tolist() == [[[0, 1], [2, -1]]]
    nearest = patch_targets(mask, (2, 2), num_classes=4, ignore_index=255, mode="nearest")
    assert nearest.tolist() == [[[1, -1], [2, -1]]]  # pixels (1, 1), (1, 3), (3, 1), (3, 3)


def test_linear_probe_segmentation_learns_linear_classes():
    prototypes = torch.randn(5, 192, generator=torch.Generator().manual_seed(0))
    train_feats, train_masks = _segmentation_data(400, prototypes, seed=1)
    test_feats, test_masks = _segmentation_data(100, prototypes, seed=2)
    start = time.perf_counter()
    result = linear_probe_segmentation(train_feats, train_masks, test_feats, test_masks, num_classes=5)
    elapsed = time.perf_counter() - start
    assert result["mean_iou"] > 0.95 and result["pixel_accuracy"] > 0.97
    assert len(result["per_category_iou"]) == 5 and min(result["per_category_iou"]) > 0.9
    assert elapsed < 20, f"ridge probe on 400 x 64 x 192 took {elapsed:.1f} s"
    # Random features carry no label: about chance (IoU of a uniform guess over 5 balanced classes is 1/9).
    random = linear_probe_segmentation(
        torch.randn(400, 8, 8, 192), train_masks, torch.randn(100, 8, 8, 192), test_masks, num_classes=5
    )
    assert random["mean_iou"] < 0.2 and random["pixel_accuracy"] < 0.3


def test_linear_probe_logistic_void_and_determinism():
    prototypes = torch.randn(3, 32, generator=torch.Generator().manual_seed(3))
    train_feats, train_masks = _segmentation_data(60, prototypes, seed=4)
    test_feats, test_masks = _segmentation_data(20, prototypes, seed=5)
    train_masks, test_masks = train_masks.clone(), test_masks.clone()
    train_masks[:, :4] = 255  # the top patch row is void: no target
    test_masks[:, :, :8] = 255  # not scored
    kwargs = dict(num_classes=3, ignore_index=255, method="logistic", max_iter=30, max_train_patches=1500, seed=7)
    first = linear_probe_segmentation(
        train_feats, train_masks, test_feats, test_masks, return_predictions=True, **kwargs
    )
    again = linear_probe_segmentation(
        train_feats, train_masks, test_feats, test_masks, return_predictions=True, **kwargs
    )
    assert first["mean_iou"] > 0.95
    assert first["mean_iou"] == again["mean_iou"] and torch.equal(first["predictions"], again["predictions"])
    assert first["predictions"].shape == (20, 32, 32)
    with pytest.raises(ValueError, match="ignore_index"):
        linear_probe_segmentation(train_feats, train_masks, test_feats, test_masks, num_classes=3)


def test_linear_probe_depth():
    generator = torch.Generator().manual_seed(0)
    direction = torch.randn(64, generator=generator)
    train_feats = torch.randn(200, 6, 6, 64, generator=generator)
    test_feats = torch.randn(50, 6, 6, 64, generator=generator)

    def depth(feats):  # linear in the features, ~N(3, 0.4^2)
        return 3 + 0.05 * feats @ direction

    # Training depth at 4x the patch resolution (each patch's target = mean of its pixels); test at the patch grid.
    train_depth = depth(train_feats).repeat_interleave(4, 1).repeat_interleave(4, 2)
    result = linear_probe_depth(train_feats, train_depth, test_feats, depth(test_feats))
    assert result["rmse"] < 0.01 and result["abs_rel"] < 0.005 and result["num_pixels"] == 50 * 36
    # Invalid test pixels are not scored: corrupt them and mask them out.
    test_depth = depth(test_feats).clone()
    test_depth[:, 0] = 100.0
    valid = torch.ones_like(test_depth, dtype=torch.bool)
    valid[:, 0] = False
    masked = linear_probe_depth(train_feats, train_depth, test_feats, test_depth, test_valid=valid)
    assert masked["rmse"] < 0.01 and masked["num_pixels"] == 50 * 30
    random = linear_probe_depth(torch.randn(200, 6, 6, 64), train_depth, test_feats, depth(test_feats))
    assert random["rmse"] > 0.3


# ----------------------------------------------------------------------------------------------------------------------
# Pictures


def test_colorize_segmentation_palette():
    colors = palette(40)
    assert colors.shape == (40, 3) and colors.dtype == np.uint8
    assert len({tuple(c) for c in colors.tolist()}) == 40
    assert tuple(BACKGROUND_COLOR) not in {tuple(c) for c in colors.tolist()}
    assert np.array_equal(palette(5), colors[:5])  # a class keeps its colour whatever the number of classes
    labels = np.array([[0, 1], [-1, 255]])
    picture = colorize_segmentation(labels, num_classes=3)
    assert picture.shape == (2, 2, 3) and picture.dtype == np.uint8
    assert picture[0, 0].tolist() == colors[0].tolist() and picture[0, 1].tolist() == colors[1].tolist()
    assert picture[1, 0].tolist() == list(BACKGROUND_COLOR) and picture[1, 1].tolist() == list(BACKGROUND_COLOR)
    assert colorize_segmentation(torch.tensor(labels), 3, background_index=0)[0, 0].tolist() == list(BACKGROUND_COLOR)


def test_save_segmentation_picture(tmp_path):
    labels = torch.zeros(28, 42, dtype=torch.long)
    labels[:, 20:] = 2
    labels[:5, :5] = -1
    path = tmp_path / "seg.png"
    save_segmentation_picture(path, torch.rand(3, 56, 84), labels, ["sky", "tree", "road"])
    picture = np.asarray(Image.open(path))
    # Two 42-px panels and a 4-px gap; legend rows for sky, road and background (tree is absent): 4 + 3 * 16 + 4.
    assert picture.shape == (28 + 56, 2 * 42 + 4, 3)
    assert picture[10, 42 + 4 + 2].tolist() == palette(3)[0].tolist()
    assert picture[10, 42 + 4 + 30].tolist() == palette(3)[2].tolist()
    assert picture[2, 42 + 4 + 2].tolist() == list(BACKGROUND_COLOR)
    assert not list(tmp_path.glob("*.tmp.png"))


# ----------------------------------------------------------------------------------------------------------------------
# CLI


def test_cli_writes_pictures(converted, tmp_path, capsys):
    folder, _, _ = converted
    image_path = tmp_path / "scene.png"
    _image(3, size=(90, 120)).save(image_path)
    out = tmp_path / "out"
    code = main(
        ["--model", str(folder), "--image", str(image_path), "--out", str(out), "--size", "224", "--labels", *LABELS]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "top zero-shot classes" in printed and all(label in printed for label in LABELS)
    pca = np.asarray(Image.open(out / "scene_pca.png"))
    zeroshot = np.asarray(Image.open(out / "scene_zeroshot.png"))
    assert pca.shape == (224, 224 + 4 + 224, 3)
    # Zero-shot follows the official protocol: the 90x120 image with its short side resized to 224 (224x298).
    assert zeroshot.shape[1] == 298 + 4 + 298 and zeroshot.shape[0] > 224
    assert pca[:, 228:].std() > 10 and zeroshot[:224, :298].std() > 10  # PCA colours and image are not constant


def test_cli_without_labels_writes_only_pca(converted, tmp_path):
    folder, _, _ = converted
    image_path = tmp_path / "photo.jpg"
    _image(4).save(image_path)
    assert main(["--model", str(folder), "--image", str(image_path), "--out", str(tmp_path), "--size", "112"]) == 0
    assert np.asarray(Image.open(tmp_path / "photo_pca.png")).shape == (112, 228, 3)
    assert not (tmp_path / "photo_zeroshot.png").exists()


def test_cli_errors(converted, tmp_path, capsys):
    folder, _, _ = converted
    missing = tmp_path / "missing.png"
    assert main(["--model", str(folder), "--image", str(missing), "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert str(missing) in err and "not found" in err and "Traceback" not in err

    garbage = tmp_path / "garbage.jpg"
    garbage.write_text("not an image")
    assert main(["--model", str(folder), "--image", str(garbage), "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert str(garbage) in err and "cannot read image" in err

    image_path = tmp_path / "ok.png"
    _image().save(image_path)
    bare = tmp_path / "bare_model"
    TipsModel(tiny_config()).save_pretrained(bare)  # a model but no processor files
    assert main(["--model", str(bare), "--image", str(image_path), "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert str(bare) in err and "processor" in err

    assert main(["--model", str(folder), "--image", str(image_path), "--out", str(tmp_path), "--size", "100"]) == 2
    assert "multiple of the patch size 14" in capsys.readouterr().err
    assert not list(tmp_path.glob("*.png.tmp.png"))


def test_class_balanced_probe_finds_a_rare_class():
    """One class on 3 % of the patches, barely separable: the plain ridge fit never predicts it (the frequent classes
    win its patches); the class-balanced fit gives it equal weight and recovers it."""
    generator = torch.Generator().manual_seed(0)
    prototypes = torch.randn(3, 16, generator=generator) * 0.35

    def data(num, seed):
        g = torch.Generator().manual_seed(seed)
        grid = (torch.rand(num, 8, 8, generator=g) < 0.5).long()  # classes 0 / 1, balanced
        grid[torch.rand(num, 8, 8, generator=g) < 0.03] = 2  # the rare class
        feats = prototypes[grid] + torch.randn(num, 8, 8, 16, generator=g)
        return feats, grid.repeat_interleave(4, 1).repeat_interleave(4, 2)

    train_feats, train_masks = data(150, 1)
    test_feats, test_masks = data(50, 2)
    plain = linear_probe_segmentation(train_feats, train_masks, test_feats, test_masks, num_classes=3)
    balanced = linear_probe_segmentation(
        train_feats, train_masks, test_feats, test_masks, num_classes=3, class_balanced=True
    )
    assert plain["per_category_accuracy"][2] < 0.05
    assert balanced["per_category_accuracy"][2] > 0.3 and balanced["per_category_iou"][2] > plain["per_category_iou"][2]
    logistic = linear_probe_segmentation(
        train_feats, train_masks, test_feats, test_masks, num_classes=3, method="logistic", class_balanced=True,
        max_iter=15,
    )
    assert logistic["per_category_accuracy"][2] > 0.3


def test_knn_segmentation():
    prototypes = torch.randn(4, 32, generator=torch.Generator().manual_seed(0))
    train_feats, train_masks = _segmentation_data(60, prototypes, seed=1, noise=0.3)
    test_feats, test_masks = _segmentation_data(20, prototypes, seed=2, noise=0.3)
    result = knn_segmentation(train_feats, train_masks, test_feats, test_masks, num_classes=4, return_predictions=True)
    assert result["mean_iou"] > 0.95 and result["predictions"].shape == (20, 32, 32)
    # Shuffled bank labels: about chance (4 balanced classes: IoU ~ 1/7).
    shuffled = knn_segmentation(train_feats, train_masks.flip(0).roll(4, 1), test_feats, test_masks, num_classes=4)
    assert shuffled["mean_iou"] < 0.3
    with pytest.raises(ValueError, match="test_masks"):
        knn_segmentation(train_feats, train_masks, test_feats, test_masks[:3], num_classes=4)
