"""The metrics (`tips_hf.metrics` functions and the shipped `evaluate` modules) on hand-computed cases."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from tips_hf.metrics import (
    METRIC_NAMES,
    depth_errors,
    depth_order_accuracy,
    load_metric,
    mean_iou,
    metric_path,
    retrieval_recall,
    retrieval_recall_from_similarity,
    topk_accuracy,
)

pytest.importorskip("evaluate")

# Two maps, 255 = void. Scored (reference, prediction) pairs of the first: (0,0) (0,1) (1,1) (1,1) (2,1); the void
# pixel's prediction (0) must not count. Per class: 0: TP 1, |ref| 2, |pred| 1 -> 1/2; 1: TP 2, |ref| 2, |pred| 4
# -> 2/4; 2: TP 0, |ref| 1 -> 0; 3: absent -> NaN. mIoU = (1/2 + 1/2 + 0) / 3, pixel accuracy 3/5.
SEG_REF = [[0, 0, 1], [1, 2, 255]]
SEG_PRED = [[0, 1, 1], [1, 1, 0]]
# Second map (another size): pairs (0,0) (0,3): class 3 appears only in the prediction and scores IoU 0.
SEG_REF2, SEG_PRED2 = [[0, 0]], [[0, 3]]


@pytest.fixture(scope="module")
def metrics():
    return {name: load_metric(name) for name in METRIC_NAMES}


def _assert_iou(result, expected_iou, mean, pixel_accuracy):
    np.testing.assert_allclose(result["per_category_iou"], expected_iou, equal_nan=True)
    assert result["mean_iou"] == pytest.approx(mean)
    assert result["pixel_accuracy"] == pytest.approx(pixel_accuracy)


def test_mean_iou_hand_computed(metrics):
    expected = [0.5, 0.5, 0.0, math.nan]
    _assert_iou(mean_iou([SEG_PRED], [SEG_REF], num_classes=4, ignore_index=255), expected, 1 / 3, 3 / 5)
    result = metrics["mean_iou"].compute(predictions=[SEG_PRED], references=[SEG_REF], num_classes=4, ignore_index=255)
    _assert_iou(result, expected, 1 / 3, 3 / 5)
    assert result["mean_accuracy"] == pytest.approx((1 / 2 + 1 + 0) / 3)


def test_mean_iou_accumulates_maps_of_different_sizes(metrics):
    # Totals: class 0: TP 2, |ref| 4, |pred| 2 -> 1/2; 1: 1/2; 2: 0; 3: TP 0, |pred| 1 -> 0. Pixel accuracy 4/7.
    expected = [0.5, 0.5, 0.0, 0.0]
    result = metrics["mean_iou"].compute(
        predictions=[SEG_PRED, SEG_PRED2], references=[SEG_REF, SEG_REF2], num_classes=4, ignore_index=255
    )
    _assert_iou(result, expected, 0.25, 4 / 7)
    tensors = [torch.tensor(SEG_PRED), torch.tensor(SEG_PRED2)], [torch.tensor(SEG_REF), torch.tensor(SEG_REF2)]
    _assert_iou(mean_iou(*tensors, num_classes=4, ignore_index=255), expected, 0.25, 4 / 7)


def test_mean_iou_rejects_unknown_labels():
    with pytest.raises(ValueError, match="outside"):
        mean_iou([SEG_PRED], [SEG_REF], num_classes=4)  # 255 is not a class without ignore_index


def test_zero_shot_accuracy_hand_computed(metrics):
    logits = [[0.1, 0.9, 0.0], [0.8, 0.1, 0.1], [0.2, 0.3, 0.5], [1.0, 1.0, 0.0]]
    labels = [1, 2, 0, 0]
    # Ranks of the true class (others scoring at least as high): 0, 2 (0.8 and a tie), 2, 1 (a tie).
    expected = {"top1_accuracy": 0.25, "top2_accuracy": 0.5, "top5_accuracy": 1.0}
    assert topk_accuracy(logits, labels, ks=(1, 2, 5)) == pytest.approx(expected)
    assert metrics["zero_shot_accuracy"].compute(predictions=logits, references=labels, ks=(1, 2, 5)) == pytest.approx(
        expected
    )
    default = metrics["zero_shot_accuracy"].compute(predictions=logits, references=labels)
    assert default == pytest.approx({"top1_accuracy": 0.25, "top5_accuracy": 1.0})


def test_depth_rmse_hand_computed(metrics):
    pred = [[[1.0, 2.0], [3.0, 4.0]]]
    ref = [[[1.0, 4.0], [2.0, math.nan]]]  # NaN = missing depth
    mask = [[[True, True], [False, True]]]
    # Masked: pixels (0,0) and (0,1): errors 0, -2 -> RMSE sqrt(2), abs_rel (0 + 2/4) / 2.
    expected = {"rmse": math.sqrt(2.0), "abs_rel": 0.25, "num_pixels": 2}
    assert depth_errors(pred, ref, valid_mask=mask) == pytest.approx(expected)
    assert metrics["depth_rmse"].compute(predictions=pred, references=ref, valid_mask=mask) == pytest.approx(expected)
    # Unmasked: the NaN pixel still drops out; errors 0, -2, 1 -> RMSE sqrt(5/3), abs_rel (0 + 1/2 + 1/2) / 3.
    expected = {"rmse": math.sqrt(5 / 3), "abs_rel": 1 / 3, "num_pixels": 3}
    assert metrics["depth_rmse"].compute(predictions=pred, references=ref) == pytest.approx(expected)


def test_depth_abs_rel_skips_zero_reference():
    # RMSE over both pixels (errors 1 and 1); abs_rel only where the reference is positive (|3 - 2| / 2).
    result = depth_errors(np.array([[1.0, 3.0]]), np.array([[0.0, 2.0]]))
    assert result == pytest.approx({"rmse": 1.0, "abs_rel": 0.5, "num_pixels": 2})


# 3 images, 5 texts; texts 0, 1 describe image 0, text 2 image 1, texts 3, 4 image 2. Rows: images, columns: texts.
SIMILARITY = [
    [0.9, 0.1, 0.3, 0.2, 0.8],
    [0.2, 0.5, 0.4, 0.1, 0.0],
    [0.1, 0.6, 0.2, 0.3, 0.7],
]
TEXT_TO_IMAGE = [0, 0, 1, 2, 2]
# Text->image ranks: 0, 2, 0, 0, 1. Image->text (best matching text vs other images' texts): 0, 1 (0.5 > 0.4), 0.
RECALL = {
    "text_to_image_recall@1": 3 / 5,
    "text_to_image_recall@2": 4 / 5,
    "text_to_image_recall@3": 1.0,
    "image_to_text_recall@1": 2 / 3,
    "image_to_text_recall@2": 1.0,
    "image_to_text_recall@3": 1.0,
}


def test_retrieval_recall_from_similarity(metrics):
    got = retrieval_recall_from_similarity(torch.tensor(SIMILARITY), torch.tensor(TEXT_TO_IMAGE), ks=(1, 2, 3))
    assert got == pytest.approx(RECALL)
    # Evaluate module, similarity form: one row per text (its similarity to each image) and its image index.
    per_text = np.asarray(SIMILARITY).T
    got = metrics["retrieval_recall"].compute(predictions=per_text, references=TEXT_TO_IMAGE, ks=(1, 2, 3))
    assert got == pytest.approx(RECALL)
    # Chunking does not change the answer.
    got = retrieval_recall_from_similarity(torch.tensor(SIMILARITY), torch.tensor(TEXT_TO_IMAGE), (1, 2, 3), 2)
    assert got == pytest.approx(RECALL)


def test_retrieval_recall_paired_embeddings(metrics):
    # Pair i <-> i. Text 1 points at image 2's direction: text->image ranks 0, 2, 0 (ties count against);
    # image->text: image 0 rank 0; image 1's text scores 0 like text 0 and 2 -> rank 2; image 2 ties with text 1.
    images = torch.eye(3) * torch.tensor([[1.0], [2.0], [3.0]])  # scale must not matter
    texts = torch.tensor([[5.0, 0, 0], [0, 0, 1], [0, 0, 1]])
    expected = {"image_to_text_recall@1": 1 / 3, "text_to_image_recall@1": 2 / 3}
    assert retrieval_recall(images, texts, ks=(1,)) == pytest.approx(expected)
    assert metrics["retrieval_recall"].compute(predictions=images, references=texts, ks=(1,)) == pytest.approx(expected)


def test_retrieval_recall_several_texts_per_image(metrics):
    # Images e0 and e2, three captions; captions 0, 1 belong to image "a" (listed twice), caption 2 to "b".
    images = torch.tensor([[1.0, 0, 0], [1.0, 0, 0], [0, 0, 1.0]])
    texts = torch.tensor([[1.0, 0.1, 0.1], [0.1, 1.0, 0.1], [0.1, 0.1, 1.0]])
    # Caption 1 is equally close to both images (tie -> miss); each image has a caption ranked first.
    expected = {"image_to_text_recall@1": 1.0, "text_to_image_recall@1": 2 / 3}
    got = metrics["retrieval_recall"].compute(predictions=images, references=texts, ks=(1,), image_ids=["a", "a", "b"])
    assert got == pytest.approx(expected)
    got = retrieval_recall(images[[0, 2]], texts, ks=(1,), text_to_image=torch.tensor([0, 0, 1]))
    assert got == pytest.approx(expected)


def test_retrieval_recall_rejects_bad_mapping():
    with pytest.raises(ValueError, match="square"):
        retrieval_recall_from_similarity(torch.zeros(2, 3))
    with pytest.raises(ValueError, match="index"):
        retrieval_recall_from_similarity(torch.zeros(2, 3), torch.tensor([0, 1, 2]))


def test_load_metric_is_local_and_validates_names(metrics):
    with pytest.raises(ValueError, match="Unknown"):
        load_metric("accuracy")
    for name, module in metrics.items():
        assert (metric_path(name) / f"{name}.py").is_file()
        assert module.name == name


def test_metrics_load_offline_in_fresh_process(tmp_path):
    """A new interpreter with HF_HUB_OFFLINE=1 loads every module; evaluate's copies go under HF_MODULES_CACHE."""
    code = textwrap.dedent(
        """
        import json
        from tips_hf.metrics import METRIC_NAMES, load_metric
        m = {name: load_metric(name) for name in METRIC_NAMES}
        out = {
            "miou": m["mean_iou"].compute(predictions=[[[0, 1]]], references=[[[0, 0]]], num_classes=2)["mean_iou"],
            "top1": m["zero_shot_accuracy"].compute(predictions=[[0.0, 1.0]], references=[1])["top1_accuracy"],
            "rmse": m["depth_rmse"].compute(predictions=[[[1.0]]], references=[[[3.0]]])["rmse"],
            "r1": m["retrieval_recall"].compute(predictions=[[1.0, 0.0]], references=[1], ks=(1,))[
                "text_to_image_recall@1"],
            "files": [type(module).__module__ for module in m.values()],
        }
        print(json.dumps(out))
        """
    )
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_MODULES_CACHE=str(tmp_path / "modules"))
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    # mIoU: class 0 TP 1 / union 2, class 1 TP 0 / union 1 -> 0.25.
    assert out["miou"] == pytest.approx(0.25)
    assert (out["top1"], out["rmse"], out["r1"]) == (1.0, 2.0, 0.0)
    for name in METRIC_NAMES:
        assert list((tmp_path / "modules" / "evaluate_modules" / "metrics" / name).glob(f"*/{name}.py"))
    assert all(module.startswith("evaluate_modules.metrics.") for module in out["files"])


def test_depth_order_accuracy_hand_computed():
    reference = np.array([[1.0, 1.0], [2.0, 3.0]])
    # Pairs with different references: (1,2) x2, (1,3) x2, (2,3) x1 = 5. Prediction orders (1,2) right, (1,3) right
    # for the first pixel only (the second ties with 3: one half), (2,3) wrong.
    prediction = np.array([[0.0, 5.0], [1.0, 5.0]])
    # (a=0.0 vs 1.0 ok) (a=5.0 vs 1.0 wrong) (0.0 vs 5.0 ok) (5.0 vs 5.0 tie) (1.0 vs 5.0 ok)
    result = depth_order_accuracy(prediction, reference)
    assert result["num_pairs"] == 5 and result["accuracy"] == pytest.approx(3.5 / 5)
    # Scale and shift free; reversed order scores 0; the valid mask drops pixels (and thus pairs).
    assert depth_order_accuracy(3 * reference + 7, reference)["accuracy"] == 1.0
    assert depth_order_accuracy(-reference, reference)["accuracy"] == 0.0
    masked = depth_order_accuracy(prediction, reference, valid_mask=reference > 1)
    assert masked["num_pairs"] == 1 and masked["accuracy"] == 1.0
    # Pairs never cross images; a map with one depth level has none.
    two = depth_order_accuracy([prediction, np.zeros((3, 3))], [reference, np.ones((3, 3))])
    assert two["num_pairs"] == 5 and math.isnan(depth_order_accuracy(np.zeros(4), np.ones(4))["accuracy"])
