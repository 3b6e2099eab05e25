"""`tips-eval` on tiny synthetic datasets written in each benchmark's own layout.

A tiny random TipsModel (56-px inputs, 4×4 patches) with the embedded scenes tokenizer runs every task through the
CLI entry point; metrics are checked against independent computations (brute-force retrieval ranks and k-NN votes,
separately computed zero-shot logits) or against values computed by hand on constructed features and predictions.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import save_tiny_model
from PIL import Image

from tips_hf import TipsConfig, TipsModel, TipsProcessor
from tips_hf.evaluation import EvalOptions, evaluate, main
from tips_hf.evaluation import knn as knn_module
from tips_hf.evaluation import zero_shot_segmentation as zss
from tips_hf.evaluation.common import pixels_center_crop
from tips_hf.evaluation.templates import ADE20K_CLASS_NAMES, CLIP_IMAGENET_TEMPLATES, TCL_TEMPLATES

SIZE = 56
COLORS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (20, 40, 210), "yellow": (230, 220, 20)}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return save_tiny_model(tmp_path_factory.mktemp("tiny_tips"), SIZE, text_layers=1)


@pytest.fixture(scope="module")
def loaded(model_dir):
    return TipsModel.from_pretrained(model_dir).eval(), TipsProcessor.from_pretrained(model_dir)


def _solid(path: Path, color, size=(SIZE, SIZE)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path)
    return path


def _run(args: list[str], output: Path) -> dict:
    assert main([*args, "--output", str(output), "--no-progress", "--device", "cpu"]) == 0
    assert output.with_suffix(".md").read_text().count("|") > 4
    return json.loads(output.read_text())


# ----------------------------------------------------------------------------------------------------------------------
# Retrieval


def _write_karpathy(root: Path) -> list[tuple[str, list[str]]]:
    pairs = [
        ("red", ["a red square", "red", "a photo of something red"]),
        ("green", ["green grass", "a green image"]),
        ("blue", ["blue sky", "the colour blue", "a blue picture", "blue"]),
        ("yellow", ["yellow"]),
    ]
    images = []
    for name, captions in pairs:
        _solid(root / "flickr30k-images" / f"{name}.jpg", COLORS[name])
        images.append({"filename": f"{name}.jpg", "split": "test", "sentences": [{"raw": c} for c in captions]})
    _solid(root / "flickr30k-images" / "train.jpg", (0, 0, 0))
    images.append({"filename": "train.jpg", "split": "train", "sentences": [{"raw": "black"}]})
    (root / "dataset_flickr30k.json").write_text(json.dumps({"images": images}))
    return pairs


def _brute_force_recall(similarity: np.ndarray, owner: list[int], k: int) -> tuple[float, float]:
    """Recall@k by explicit ranking loops (ties against the right answer)."""
    num_images, num_texts = similarity.shape
    t2i = np.mean([sum(similarity[j, t] >= similarity[owner[t], t] for j in range(num_images)) <= k
                   for t in range(num_texts)])  # fmt: skip
    hits = []
    for i in range(num_images):
        mine = [t for t in range(num_texts) if owner[t] == i]
        ranks = [sum(similarity[i, u] >= similarity[i, t] for u in range(num_texts) if owner[u] != i) for t in mine]
        hits.append(min(ranks) < k)
    return float(np.mean(hits)), float(t2i)


def test_retrieval_karpathy_matches_brute_force(model_dir, loaded, tmp_path):
    pairs = _write_karpathy(tmp_path / "flickr")
    result = _run(["--model", str(model_dir), "--task", "retrieval", "--data", str(tmp_path / "flickr")],
                  tmp_path / "retrieval.json")  # fmt: skip
    assert result["num_examples"] == 4 and result["num_texts"] == 10  # the train image is not scored
    model, processor = loaded
    captions = [c for _, cs in pairs for c in cs]
    owner = [i for i, (_, cs) in enumerate(pairs) for _ in cs]
    images = [Image.open(tmp_path / "flickr" / "flickr30k-images" / f"{name}.jpg").convert("RGB") for name, _ in pairs]
    with torch.no_grad():
        vision = model.get_image_features(**processor(images=images, return_tensors="pt"))
        tokens = processor.tokenizer(
            captions, padding="max_length", max_length=16, truncation=True, return_tensors="pt"
        )
        texts = F.normalize(model.get_text_features(**tokens).pooler_output, dim=-1)
    for head, embeds in (("alt_text", vision.alt_text_embeds), ("synthetic", vision.synthetic_embeds)):
        similarity = (F.normalize(embeds, dim=-1) @ texts.T).numpy()
        for k in (1, 5, 10):
            i2t, t2i = _brute_force_recall(similarity, owner, k)
            assert result["metrics"][f"{head}/image_to_text_recall@{k}"] == pytest.approx(i2t)
            assert result["metrics"][f"{head}/text_to_image_recall@{k}"] == pytest.approx(t2i)
    assert result["metrics"]["alt_text/text_to_image_recall@5"] == 1.0  # 4 images: any K >= 4 finds them all


def test_retrieval_hub_layout_equals_karpathy(model_dir, tmp_path):
    import datasets

    pairs = _write_karpathy(tmp_path / "flickr")
    rows = {"image": [], "caption": [], "split": []}
    for name, captions in pairs:
        rows["image"].append(str(tmp_path / "flickr" / "flickr30k-images" / f"{name}.jpg"))
        rows["caption"].append(captions)
        rows["split"].append("test")
    rows["image"].append(str(tmp_path / "flickr" / "flickr30k-images" / "train.jpg"))
    rows["caption"].append(["black"])
    rows["split"].append("train")
    features = datasets.Features({"image": datasets.Image(), "caption": datasets.Sequence(datasets.Value("string")),
                                  "split": datasets.Value("string")})  # fmt: skip
    datasets.Dataset.from_dict(rows, features=features).save_to_disk(str(tmp_path / "hub"))
    common = ["--model", str(model_dir), "--task", "retrieval"]
    karpathy = _run([*common, "--data", str(tmp_path / "flickr")], tmp_path / "a.json")
    hub = _run([*common, "--data", str(tmp_path / "hub"), "--where", "split=test"], tmp_path / "b.json")
    assert hub["num_texts"] == karpathy["num_texts"] == 10
    assert hub["metrics"] == pytest.approx(karpathy["metrics"])
    # COCO's Karpathy file: images under each entry's `filepath`, "restval"/"train" entries skipped.
    coco = tmp_path / "coco"
    entries = []
    for name, captions in pairs:
        (coco / "val2014").mkdir(parents=True, exist_ok=True)
        (coco / "val2014" / f"{name}.jpg").write_bytes(
            (tmp_path / "flickr" / "flickr30k-images" / f"{name}.jpg").read_bytes()
        )
        entries.append({"filepath": "val2014", "filename": f"{name}.jpg", "split": "test",
                        "sentences": [{"raw": c, "tokens": c.split()} for c in captions]})  # fmt: skip
    entries.insert(1, {"filepath": "train2014", "filename": "x.jpg", "split": "restval", "sentences": [{"raw": "x"}]})
    (coco / "dataset_coco.json").write_text(json.dumps({"images": entries}))
    result = _run([*common, "--data", str(coco / "dataset_coco.json")], tmp_path / "c.json")
    assert result["metrics"] == pytest.approx(karpathy["metrics"])


def test_retrieval_malformed_karpathy_names_field(model_dir, tmp_path, capsys):
    root = tmp_path / "bad"
    _solid(root / "images" / "a.jpg", (1, 2, 3))
    (root / "dataset_coco.json").write_text(json.dumps({"images": [{"filename": "a.jpg", "split": "test"}]}))
    assert main(["--model", str(model_dir), "--task", "retrieval", "--data", str(root), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "dataset_coco.json" in err and "images[0]" in err and "'sentences'" in err
    (root / "dataset_coco.json").write_text(json.dumps({"images": [{"filename": "missing.jpg", "split": "test",
                                                                     "sentences": [{"raw": "x"}]}]}))  # fmt: skip
    assert main(["--model", str(model_dir), "--task", "retrieval", "--data", str(root), "--no-progress"]) == 2
    assert "missing.jpg" in capsys.readouterr().err
    missing = tmp_path / "no_model"
    assert main(["--model", str(missing), "--task", "retrieval", "--data", str(root), "--no-progress"]) == 2
    assert str(missing) in capsys.readouterr().err
    TipsConfig().save_pretrained(tmp_path / "config_only")  # a folder without processor files
    assert main(["--model", str(tmp_path / "config_only"), "--task", "retrieval", "--data", str(root)]) == 2
    assert "processor" in capsys.readouterr().err


# ----------------------------------------------------------------------------------------------------------------------
# Zero-shot classification


def test_templates_are_the_published_sets():
    assert len(CLIP_IMAGENET_TEMPLATES) == len(set(CLIP_IMAGENET_TEMPLATES)) == 80
    assert all(t.count("{}") == 1 for t in CLIP_IMAGENET_TEMPLATES)
    assert len(TCL_TEMPLATES) == 9 and set(TCL_TEMPLATES[:8]) <= set(CLIP_IMAGENET_TEMPLATES)
    assert len(set(ADE20K_CLASS_NAMES)) == 150 and ADE20K_CLASS_NAMES[0] == "wall" and ADE20K_CLASS_NAMES[-1] == "flag"


def test_zero_shot_classification_folders_match_independent_logits(model_dir, loaded, tmp_path):
    root = tmp_path / "imagenet"
    shades = {"red": [(220, 30, 30), (150, 20, 60)], "green": [(30, 200, 40), (90, 160, 20)],
              "blue": [(20, 40, 210), (60, 90, 160)]}  # fmt: skip
    for name, colors in shades.items():
        for index, color in enumerate(colors):
            _solid(root / "val" / name / f"{index}.png", color)
    templates = tmp_path / "templates.txt"
    templates.write_text("a photo of a {}.\nthe {} colour.\n")
    result = _run(["--model", str(model_dir), "--task", "zero-shot-classification", "--data", str(root),
                   "--templates", str(templates)], tmp_path / "zs.json")  # fmt: skip
    assert result["num_examples"] == 6 and result["num_classes"] == 3
    model, processor = loaded
    names = sorted(shades)
    with torch.no_grad():
        label_embeds = []
        for name in names:
            prompts = [f"a photo of a {name}.", f"the {name} colour."]
            tokens = processor.tokenizer(prompts, padding="max_length", max_length=16, truncation=True,
                                         return_tensors="pt")  # fmt: skip
            label_embeds.append(F.normalize(F.normalize(model.get_text_features(**tokens).pooler_output, dim=-1)
                                            .mean(0), dim=0))  # fmt: skip
        label_embeds = torch.stack(label_embeds)
        images = [Image.open(root / "val" / n / f"{i}.png") for n in names for i in range(2)]
        vision = model.get_image_features(**processor(images=images, return_tensors="pt"))
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    for head, embeds in (("alt_text", vision.alt_text_embeds), ("synthetic", vision.synthetic_embeds)):
        logits = F.normalize(embeds, dim=-1) @ label_embeds.T
        expected = (logits.argmax(1) == labels).float().mean().item()
        assert result["metrics"][f"{head}/top1_accuracy"] == pytest.approx(expected)
        assert result["metrics"][f"{head}/top5_accuracy"] == 1.0  # 3 classes
    assert result["protocol"]["num_templates"] == 2


def test_zero_shot_classification_hub_classlabel_streaming_and_wnid_error(model_dir, loaded, tmp_path, capsys):
    import datasets

    paths = [str(_solid(tmp_path / "img" / f"{i}.png", c)) for i, c in enumerate(COLORS.values())]
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=list(COLORS))})
    dataset = datasets.Dataset.from_dict({"image": paths, "label": [0, 1, 2, 3]}, features=features)
    datasets.DatasetDict({"validation": dataset}).save_to_disk(str(tmp_path / "hub"))
    result = _run(["--model", str(model_dir), "--task", "zero-shot-classification", "--data", str(tmp_path / "hub"),
                   "--templates", "none", "--limit", "2"], tmp_path / "zs.json")  # fmt: skip
    assert result["num_examples"] == 2 and result["num_classes"] == 4
    full = _run(["--model", str(model_dir), "--task", "zero-shot-classification", "--data", str(tmp_path / "hub"),
                 "--templates", "none"], tmp_path / "full.json")  # fmt: skip
    # The same rows streamed (an IterableDataset, read batch by batch in this process) give the same scores.
    model, processor = loaded
    options = EvalOptions(split="validation", batch_size=3, progress=False, extra={"templates": "none"})
    streamed = evaluate("zero-shot-classification", model, processor, dataset.to_iterable_dataset(), options)
    assert streamed["num_examples"] == full["num_examples"] == 4
    assert streamed["metrics"] == pytest.approx(full["metrics"])
    _solid(tmp_path / "wnid" / "val" / "n01440364" / "a.png", (1, 2, 3))
    assert main(["--model", str(model_dir), "--task", "zero-shot-classification", "--data", str(tmp_path / "wnid"),
                 "--no-progress"]) == 2  # fmt: skip
    assert "n01440364" in capsys.readouterr().err


# ----------------------------------------------------------------------------------------------------------------------
# k-NN


def test_knn_on_constructed_features_matches_hand_vote(model_dir, tmp_path, monkeypatch):
    """Features = the mean RGB of each image (monkeypatched): the votes can be counted by hand."""
    root = tmp_path / "imagenet"
    train = {"cat": [(255, 0, 0), (240, 10, 0), (0, 255, 0)], "dog": [(0, 0, 255), (0, 20, 240), (10, 0, 250)]}
    for name, colors in train.items():
        for index, color in enumerate(colors):
            _solid(root / "train" / name / f"{index}.png", color)
    # Queries: pure red (neighbours: 2 red cats, 1 green cat → cat), green (green cat nearest, then ... → cat),
    # blue-ish (dog), and a red "dog" (wrongly labelled for the test: votes say cat) → 3 of 4 correct.
    _solid(root / "val" / "cat" / "0.png", (250, 5, 5))
    _solid(root / "val" / "cat" / "1.png", (5, 250, 5))
    _solid(root / "val" / "dog" / "0.png", (5, 5, 250))
    _solid(root / "val" / "dog" / "1.png", (250, 0, 10))

    def mean_colour(model, pixel_values):
        feats = pixel_values.float().mean(dim=(2, 3))
        return {"alt_text": feats, "synthetic": feats.flip(-1)}

    monkeypatch.setattr(knn_module, "image_embeddings", mean_colour)
    result = _run(["--model", str(model_dir), "--task", "knn", "--data", str(root), "--knn-k", "3"],
                  tmp_path / "knn.json")  # fmt: skip
    assert result["num_train"] == 6 and result["num_examples"] == 4

    def vote(features, labels, query, k=3, temperature=0.07):
        sims = F.normalize(features, dim=-1) @ F.normalize(query, dim=0)
        top = sims.topk(k)
        scores = torch.zeros(2)
        for s, i in zip(top.values, top.indices):
            scores[labels[i]] += torch.exp(s / temperature)
        return int(scores.argmax())

    train_colours = torch.tensor([c for cs in train.values() for c in cs], dtype=torch.float) / 255
    train_labels = [0, 0, 0, 1, 1, 1]
    queries = torch.tensor([(250, 5, 5), (5, 250, 5), (5, 5, 250), (250, 0, 10)], dtype=torch.float) / 255
    predictions = [vote(train_colours, train_labels, q) for q in queries]
    assert predictions == [0, 0, 1, 0]  # by hand: the red "dog" is voted cat
    assert result["metrics"]["alt_text/top1_accuracy"] == pytest.approx(0.75)
    flipped = [vote(train_colours.flip(-1), train_labels, q.flip(-1)) for q in queries]
    assert result["metrics"]["synthetic/top1_accuracy"] == pytest.approx(np.mean(np.array(flipped) == [0, 0, 1, 1]))


def test_knn_real_model_and_unknown_class(model_dir, loaded, tmp_path, capsys):
    root = tmp_path / "imagenet"
    for name, color in COLORS.items():
        _solid(root / "train" / name / "0.png", color)
        _solid(root / "val" / name / "0.png", tuple(max(0, c - 10) for c in color))
    result = _run(
        ["--model", str(model_dir), "--task", "knn", "--data", str(root), "--knn-k", "2"], tmp_path / "k.json"
    )
    assert result["num_train"] == 4 and result["protocol"]["resize"].startswith("short side to 64")
    model, processor = loaded
    from tips_hf.dense import knn_classify

    def embed(split):
        images = [Image.open(root / split / name / "0.png").convert("RGB") for name in sorted(COLORS)]
        pixels = torch.stack([pixels_center_crop(processor, image, SIZE) for image in images])
        with torch.no_grad():
            return model.get_image_features(pixel_values=pixels).alt_text_embeds

    labels = torch.arange(4)
    expected = knn_classify(embed("train"), labels, embed("val"), labels, k=2)["accuracy"]
    assert result["metrics"]["alt_text/top1_accuracy"] == pytest.approx(expected)
    _solid(root / "val" / "zebra" / "0.png", (1, 1, 1))
    assert main(["--model", str(model_dir), "--task", "knn", "--data", str(root), "--no-progress"]) == 2
    assert "zebra" in capsys.readouterr().err
    (root / "val" / "zebra" / "0.png").unlink()
    (root / "val" / "zebra").rmdir()
    subset = _run(["--model", str(model_dir), "--task", "knn", "--data", str(root), "--train-limit", "2"],
                  tmp_path / "k2.json")  # fmt: skip
    assert subset["num_train"] == 2 and subset["num_examples"] == 4


# ----------------------------------------------------------------------------------------------------------------------
# Zero-shot segmentation (ADE20K layout)


def _write_ade(root: Path) -> None:
    """Two 28×42 images; the colour of each pixel encodes a 'predicted' class (argmax of RGB), the PNG the truth
    (ADE20K raw ids: 0 = other/ignored, k = class k - 1)."""
    h, w = 28, 42
    # image 0: truth: left 21 columns class 0 (raw 1), right class 1 (raw 2); prediction: columns 0..13 class 0,
    # 14..41 class 1 (7 columns × 28 rows of class 0 predicted as class 1). Top-left 4×4 raw 0 (ignored).
    truth = np.ones((h, w), np.uint8)
    truth[:, 21:] = 2
    truth[:4, :4] = 0
    image = np.zeros((h, w, 3), np.uint8)
    image[:, :14, 0] = 255
    image[:, 14:, 1] = 255
    _save_pair(root, "ADE_val_00000001", image, truth)
    # image 1: all class 2 (raw 3) and predicted so, except a 4×6 block predicted class 0.
    truth = np.full((h, w), 3, np.uint8)
    image = np.zeros((h, w, 3), np.uint8)
    image[..., 2] = 255
    image[:4, :6] = (255, 0, 0)
    _save_pair(root, "ADE_val_00000002", image, truth)


def _save_pair(root: Path, stem: str, image: np.ndarray, truth: np.ndarray) -> None:
    (root / "images" / "validation").mkdir(parents=True, exist_ok=True)
    (root / "annotations" / "validation").mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(root / "images" / "validation" / f"{stem}.png")
    Image.fromarray(truth).save(root / "annotations" / "validation" / f"{stem}.png")


def test_zero_shot_segmentation_miou_by_hand(model_dir, tmp_path, monkeypatch):
    root = tmp_path / "ADEChallengeData2016"
    _write_ade(root)
    names = tmp_path / "names.txt"
    names.write_text("red thing\ngreen thing\nblue thing\n")

    def colour_scores(model, pixel_values, label_embeds, mode, window, stride, features):
        return pixel_values.float()  # (1, 3, H, W): channel c scores class c

    monkeypatch.setattr(zss, "segment_scores", colour_scores)
    result = _run(["--model", str(model_dir), "--task", "zero-shot-segmentation", "--data", str(tmp_path),
                   "--class-names", str(names), "--image-size", "28"], tmp_path / "zs.json")  # fmt: skip
    # Image 0: class 0 truth = 28*21 - 16 (ignored corner) = 572 pixels, predicted 0 on 28*14 - 16 = 376 of them;
    # class 1 truth = 588, all predicted 1, plus 196 false positives from class 0. Image 1: class 2 truth 1176,
    # 24 of them predicted class 0.
    tp = np.array([376, 588, 1152])
    fp = np.array([24, 196, 0])
    fn = np.array([196, 0, 24])
    expected_iou = tp / (tp + fp + fn)
    assert result["metrics"]["per_category_iou"] == pytest.approx(dict(zip(["red thing", "green thing", "blue thing"],
                                                                           expected_iou)))  # fmt: skip
    assert result["metrics"]["mean_iou"] == pytest.approx(expected_iou.mean())
    assert result["metrics"]["pixel_accuracy"] == pytest.approx(tp.sum() / (572 + 588 + 1176))


@pytest.mark.parametrize("mode", ["slide", "whole"])
def test_zero_shot_segmentation_real_model_matches_notebook_loop(model_dir, loaded, tmp_path, mode):
    """The official notebook's evaluation loop, written out here: short side resized (PIL bicubic), the protocol
    function's scores upsampled to the annotation, argmax, confusion over the split, mIoU over present classes."""
    from tips_hf.dense import SEGMENTATION_TEMPLATES, encode_labels, zero_shot_segment

    root = tmp_path / "ADEChallengeData2016"
    _write_ade(root)
    model, processor = loaded
    names = ["wall", "building", "sky"]  # the first three ADE20K classes (150 would only cost text-tower time)
    (tmp_path / "names.txt").write_text("\n".join(names))
    extra = {"window": 28, "stride": 14, "mode": mode, "class_names": str(tmp_path / "names.txt")}
    result = evaluate(
        "zero-shot-segmentation", model, processor, str(tmp_path), EvalOptions(image_size=42, extra=extra)
    )
    assert result["num_examples"] == 2 and list(result["metrics"]["per_category_iou"]) == names
    assert list(ADE20K_CLASS_NAMES[:3]) == names
    labels = encode_labels(model, processor, names, templates=SEGMENTATION_TEMPLATES)
    confusion = np.zeros((3, 3), np.int64)
    for stem in ("ADE_val_00000001", "ADE_val_00000002"):
        image = Image.open(root / "images" / "validation" / f"{stem}.png").convert("RGB")
        truth = np.array(Image.open(root / "annotations" / "validation" / f"{stem}.png")).astype(np.int64)
        truth = np.where(truth == 0, 255, truth - 1)
        resized = np.array(image.resize((int(42 * 42 / 28), 42), Image.BICUBIC))  # 28×42 → short side 42
        pixels = torch.from_numpy(resized).permute(2, 0, 1)[None].float() / 255
        scores = zero_shot_segment(model, pixels, labels, method="values", mode=mode, window=28, stride=14)["scores"]
        prediction = F.interpolate(scores, size=truth.shape, mode="bilinear", align_corners=False).argmax(1)[0]
        keep = truth != 255
        np.add.at(confusion, (truth[keep], prediction.numpy()[keep]), 1)
    tp = np.diag(confusion)
    union = confusion.sum(0) + confusion.sum(1) - tp
    assert result["metrics"]["mean_iou"] == pytest.approx((tp[union > 0] / union[union > 0]).mean())
    assert result["protocol"]["mode"] == mode


def test_zero_shot_segmentation_missing_annotation(model_dir, tmp_path, capsys):
    root = tmp_path / "ADEChallengeData2016"
    _write_ade(root)
    (root / "annotations" / "validation" / "ADE_val_00000002.png").unlink()
    assert main(["--model", str(model_dir), "--task", "zero-shot-segmentation", "--data", str(tmp_path),
                 "--no-progress"]) == 2  # fmt: skip
    assert "ADE_val_00000002" in capsys.readouterr().err


# ----------------------------------------------------------------------------------------------------------------------
# Probes (PASCAL VOC, NYU Depth v2)


def _write_voc(root: Path, height: int = 70, width: int = 84) -> None:
    """Left half person (15), right half background (0), a void (255) stripe; identical train and val images, not
    of the 56×56 input size (squashed for the model, scored at their own size)."""
    base = root / "VOCdevkit" / "VOC2012"
    ids = []
    for index, (left, right) in enumerate([((200, 40, 40), (20, 20, 20)), ((180, 60, 30), (40, 40, 60))]):
        image = np.zeros((height, width, 3), np.uint8)
        image[:, : width // 2], image[:, width // 2 :] = left, right
        labels = np.zeros((height, width), np.uint8)
        labels[:, : width // 2] = 15
        labels[:, width // 2 - 1 : width // 2 + 1] = 255  # void boundary, as VOC draws it
        image_id = f"2007_00000{index}"
        ids.append(image_id)
        (base / "JPEGImages").mkdir(parents=True, exist_ok=True)
        (base / "SegmentationClass").mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(base / "JPEGImages" / f"{image_id}.jpg", quality=100)
        palette = Image.fromarray(labels, mode="P")
        palette.putpalette([0, 0, 0, 128, 0, 0] + [64, 64, 64] * 254)
        palette.save(base / "SegmentationClass" / f"{image_id}.png")
    (base / "ImageSets" / "Segmentation").mkdir(parents=True, exist_ok=True)
    for split in ("train", "val"):
        (base / "ImageSets" / "Segmentation" / f"{split}.txt").write_text("\n".join(ids) + "\n")


def test_linear_probe_segmentation_voc(model_dir, tmp_path, capsys):
    _write_voc(tmp_path / "voc")
    result = _run(["--model", str(model_dir), "--task", "linear-probe-segmentation", "--data", str(tmp_path / "voc"),
                   "--probe-method", "ridge"], tmp_path / "seg.json")  # fmt: skip
    iou = result["metrics"]["per_category_iou"]
    # Pure-colour patches are separable; the void stripe is not scored: both classes are segmented exactly, and
    # only classes 0 and 15 are scored (a wrong label shift would move the 1.0 to other indices).
    assert len(iou) == 21 and iou[0] == pytest.approx(1.0) and iou[15] == pytest.approx(1.0)
    assert all(value is None for i, value in enumerate(iou) if i not in (0, 15))
    assert result["metrics"]["mean_iou"] == pytest.approx(1.0)
    assert result["metrics"]["mean_iou_at_input_size"] == pytest.approx(1.0)
    (tmp_path / "voc" / "VOCdevkit" / "VOC2012" / "SegmentationClass" / "2007_000001.png").unlink()
    assert main(["--model", str(model_dir), "--task", "linear-probe-segmentation", "--data", str(tmp_path / "voc"),
                 "--no-progress"]) == 2  # fmt: skip
    assert "2007_000001" in capsys.readouterr().err


def _write_nyu(root: Path, height=480, width=640) -> None:
    lines = []
    for index, (color, millimetres) in enumerate([((200, 30, 30), 2000), ((30, 200, 30), 4000), ((30, 30, 200), 6000)]):
        folder = root / "sync" / "room"
        _solid(folder / f"rgb_{index:05d}.jpg", color, size=(width, height))
        depth = np.full((height, width), millimetres, np.uint16)
        depth[:10] = 0  # invalid rows
        Image.fromarray(depth).save(folder / f"sync_depth_{index:05d}.png")
        lines.append(f"/room/rgb_{index:05d}.jpg /room/sync_depth_{index:05d}.png 518.8579")
    # BTS's train list is relative to sync/; ours for test relative to the root
    (root / "nyudepthv2_train_files_with_gt.txt").write_text("\n".join(lines) + "\n")
    (root / "test.txt").write_text("\n".join(line.replace("/room/", "/sync/room/") for line in lines) + "\n")


def test_depth_probe_nyu_scales_and_masks(model_dir, tmp_path, monkeypatch):
    _write_nyu(tmp_path / "nyu")
    from tips_hf.evaluation import probes

    seen = {}
    real = probes.linear_probe_depth

    def spy(*args, **kwargs):
        seen["train_depth"], seen["test_valid"] = args[1], kwargs["test_valid"]
        return real(*args, **kwargs)

    monkeypatch.setattr(probes, "linear_probe_depth", spy)
    result = _run(["--model", str(model_dir), "--task", "depth", "--data", str(tmp_path / "nyu")], tmp_path / "d.json")
    assert seen["train_depth"].shape == (3, 480, 640) and seen["train_depth"][0, 240, 320] == 2.0  # mm -> m
    valid = seen["test_valid"][0]
    assert valid.sum() == (471 - 45) * (601 - 41)  # the Eigen crop (rows 45:471 lie below the invalid rows 0:10)
    # Constant depth per image (2, 4, 6 m): a probe that ignored the image would have RMSE sqrt(8/3) = 1.63.
    assert result["metrics"]["rmse"] < 0.25
    assert result["num_examples"] == 3


def test_depth_probe_missing_file_and_bad_where(model_dir, tmp_path, capsys):
    _write_nyu(tmp_path / "nyu", height=28, width=28)
    (tmp_path / "nyu" / "sync" / "room" / "sync_depth_00001.png").unlink()
    assert main(["--model", str(model_dir), "--task", "depth", "--data", str(tmp_path / "nyu"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "test.txt:2" in err and "sync_depth_00001.png" in err
    assert main(["--model", str(model_dir), "--task", "depth", "--data", "x", "--where", "oops"]) == 2
    assert "COLUMN=VALUE" in capsys.readouterr().err


def test_results_files_are_complete(model_dir, tmp_path):
    _write_karpathy(tmp_path / "flickr")
    output = tmp_path / "out" / "r.json"
    result = _run(["--model", str(model_dir), "--task", "retrieval", "--data", str(tmp_path / "flickr"), "--limit",
                   "2", "--resize", "center-crop"], output)  # fmt: skip
    assert result["protocol"]["resize"].startswith("short side to 64 (bicubic), centre crop 56x56")
    assert result["num_examples"] == 2 and result["options"]["limit"] == 2
    table = output.with_suffix(".md").read_text()
    assert "I→T R@1" in table and "alt_text" in table and "synthetic" in table
    assert sorted(p.name for p in output.parent.iterdir()) == ["r.json", "r.md"]  # no temporary files left


# ----------------------------------------------------------------------------------------------------------------------
# DPT heads (`--dpt`)


def _dpt_folder(tmp_path: Path, task: str) -> Path:
    dense = pytest.importorskip("tips_hf.modeling.modeling_dense_tips")
    from tips_hf.modeling.configuration_dense_tips import TipsDPTConfig

    torch.manual_seed(1)
    vision = dict(hidden_size=32, num_hidden_layers=4, num_attention_heads=4, intermediate_size=64, image_size=SIZE)
    config = TipsDPTConfig(vision_config=vision, dpt_channels=16, task=task, num_labels=21, num_depth_bins=16,
                           image_resolution=SIZE)  # fmt: skip
    cls = dense.TipsForSemanticSegmentation if task == "segmentation" else dense.TipsForDepthEstimation
    folder = tmp_path / f"dpt_{task}"
    cls(config).eval().save_pretrained(folder)
    return folder


def test_dpt_segmentation_head_matches_manual_scoring(model_dir, loaded, tmp_path):
    folder = _dpt_folder(tmp_path, "segmentation")
    _write_voc(tmp_path / "voc")
    result = _run(["--model", str(model_dir), "--task", "linear-probe-segmentation", "--data", str(tmp_path / "voc"),
                   "--dpt", str(folder), "--split", "val"], tmp_path / "dpt.json")  # fmt: skip
    from tips_hf.modeling.modeling_dense_tips import TipsForSemanticSegmentation

    head = TipsForSemanticSegmentation.from_pretrained(folder).eval()
    _, processor = loaded
    base = tmp_path / "voc" / "VOCdevkit" / "VOC2012"
    intersection, union = np.zeros(21), np.zeros(21)
    for image_id in ("2007_000000", "2007_000001"):
        truth = np.array(Image.open(base / "SegmentationClass" / f"{image_id}.png")).astype(np.int64)
        pixels = processor(images=Image.open(base / "JPEGImages" / f"{image_id}.jpg"), return_tensors="pt")
        with torch.no_grad():
            logits = head(pixel_values=pixels["pixel_values"]).logits
        prediction = F.interpolate(logits, size=truth.shape, mode="bilinear", align_corners=False).argmax(1)[0].numpy()
        scored = truth != 255
        for c in range(21):
            p, t = (prediction == c) & scored, (truth == c) & scored
            intersection[c] += (p & t).sum()
            union[c] += (p | t).sum()
    present = union > 0
    assert result["metrics"]["mean_iou"] == pytest.approx((intersection[present] / union[present]).mean())
    assert result["protocol"]["head"].startswith("DPT")


def test_dpt_depth_head_matches_manual_rmse(model_dir, loaded, tmp_path):
    folder = _dpt_folder(tmp_path, "depth")
    _write_nyu(tmp_path / "nyu", height=60, width=80)
    result = _run(["--model", str(model_dir), "--task", "depth", "--data", str(tmp_path / "nyu"), "--dpt",
                   str(folder)], tmp_path / "dpt.json")  # fmt: skip
    from tips_hf.modeling.modeling_dense_tips import TipsForDepthEstimation

    head = TipsForDepthEstimation.from_pretrained(folder).eval()
    _, processor = loaded
    squared, count = 0.0, 0
    for index in range(3):
        room = tmp_path / "nyu" / "sync" / "room"
        truth = np.array(Image.open(room / f"sync_depth_{index:05d}.png")).astype(np.float64) / 1000
        pixels = processor(images=Image.open(room / f"rgb_{index:05d}.jpg"), return_tensors="pt")["pixel_values"]
        with torch.no_grad():
            depth = head(pixel_values=pixels).predicted_depth[:, None]
        prediction = F.interpolate(depth, size=truth.shape, mode="bilinear", align_corners=False)[0, 0].double().numpy()
        valid = (truth > 1e-3) & (truth < 10)  # 60×80 maps: no Eigen crop (it is defined on 480×640)
        squared += ((prediction - truth)[valid] ** 2).sum()
        count += valid.sum()
    # float32 network output compared in float64: agreement to float32 rounding
    assert result["metrics"]["rmse"] == pytest.approx(np.sqrt(squared / count), rel=1e-5)
    assert result["metrics"]["num_pixels"] == count


# ----------------------------------------------------------------------------------------------------------------------
# Google's numbers beside ours


def test_expected_values_match_spec_and_are_shown(model_dir, tmp_path):
    from tips_hf.evaluation.expected import README_TABLE, expected_for

    # SPEC §4 (the project's source of truth) quotes the B/14 v2 row of Google's README.
    assert README_TABLE["tips-v2-b14"] == {"pascal_seg": 84.0, "nyu_depth_rmse": 0.374, "imagenet_knn": 79.8,
                                           "flickr_i2t": 92.6, "flickr_t2i": 80.0, "ade150_zero_shot": 17.4}  # fmt: skip
    assert len(README_TABLE) == 10 and expected_for("tips-v1-b14-hr", "zero-shot-segmentation") is None
    assert expected_for("tips-v2-b14", "zero-shot-classification") is None and expected_for(None, "knn") is None
    assert expected_for("tips-v2-g14", "depth")["values"] == {"rmse": 0.334}
    # A converted model carries its preset: the table gets Google's value for the column.
    config = json.loads((model_dir / "config.json").read_text())
    preset_dir = tmp_path / "preset_model"
    preset_dir.mkdir()
    for item in model_dir.iterdir():
        (preset_dir / item.name).write_bytes(item.read_bytes())
    (preset_dir / "config.json").write_text(json.dumps({**config, "preset": "tips-v2-b14"}))
    _write_karpathy(tmp_path / "flickr")
    result = _run(["--model", str(preset_dir), "--task", "retrieval", "--data", str(tmp_path / "flickr")],
                  tmp_path / "r.json")  # fmt: skip
    assert result["expected"]["values"] == pytest.approx(
        {"image_to_text_recall@1": 0.926, "text_to_image_recall@1": 0.8}
    )
    table = (tmp_path / "r.md").read_text()
    assert "tips-v2-b14" in table and "image_to_text_recall@1: Google 92.60, ours alt_text" in table
