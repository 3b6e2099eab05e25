"""Fine-tuning under `transformers.Trainer`: TipsModel's two-stream contrastive loss, the data collators, retrieval
metrics through `compute_metrics`, and the LoRA example (train, save, reload, merge)."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import ROOT, tiny_config
from PIL import Image

from tips_hf import TipsImageProcessor, TipsModel, TipsProcessor, TipsTokenizer
from tips_hf.data import load_scenes_dataset
from tips_hf.data.build_tokenizer import TOKENIZER_PATH
from tips_hf.metrics import retrieval_recall
from tips_hf.training_utils import ContrastiveRetrievalMetrics, TipsDataCollator, TipsDenseDataCollator


def scenes_processor(side: int = 56) -> TipsProcessor:
    tokenizer = TipsTokenizer(str(TOKENIZER_PATH), model_max_length=64)
    return TipsProcessor(TipsImageProcessor(size={"height": side, "width": side}), tokenizer)


def scenes_model(seed: int = 0) -> TipsModel:
    """tiny_config with the scenes tokenizer's vocabulary (512 pieces)."""
    config = tiny_config("mlp", image_size=56)
    config.text_config.vocab_size = 512
    config.text_config.max_position_embeddings = 64
    torch.manual_seed(seed)
    return TipsModel(config)


@pytest.fixture(scope="module")
def scenes_rows():
    return load_scenes_dataset("validation", 12, image_size=56, max_objects=2)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("trainer") / "base"
    scenes_model().save_pretrained(folder)
    scenes_processor().save_pretrained(folder)
    return folder


def info_nce(logits: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE written out: mean over rows of -log softmax at the diagonal, both directions."""
    diagonal = logits.diagonal()
    image_to_text = (logits.exp().sum(1).log() - diagonal).mean()
    text_to_image = (logits.exp().sum(0).log() - diagonal).mean()
    return (image_to_text + text_to_image) / 2


def test_forward_scores_each_head_on_its_own_captions():
    torch.manual_seed(0)
    model = scenes_model().eval()
    with torch.no_grad():  # distinct per-head temperatures: a head scored at the other's temperature shows
        model.log_temperature.copy_(torch.tensor([0.03, 0.05]).log())
    pixels = torch.rand(3, 3, 56, 56)
    alt, synthetic = torch.randint(2, 512, (3, 7)), torch.randint(2, 512, (3, 9))
    synthetic_mask = torch.ones_like(synthetic)
    synthetic_mask[1, 5:] = 0
    with torch.no_grad():
        out = model(input_ids=alt, pixel_values=pixels, synthetic_input_ids=synthetic,
                    synthetic_attention_mask=synthetic_mask, return_loss=True)
        vision = model.get_image_features(pixels)
        alt_text = F.normalize(model.get_text_features(alt).pooler_output, dim=-1)
        synthetic_text = F.normalize(model.get_text_features(synthetic, synthetic_mask).pooler_output, dim=-1)
    temperature = model.temperature
    torch.testing.assert_close(temperature, torch.tensor([0.03, 0.05]))
    alt_logits = F.normalize(vision.alt_text_embeds, dim=-1) @ alt_text.T / temperature[0]
    synthetic_logits = F.normalize(vision.synthetic_embeds, dim=-1) @ synthetic_text.T / temperature[1]
    # Same maths in another order (explicit exp/log vs cross_entropy): float32 rounding of O(10) logits, ~1e-6.
    torch.testing.assert_close(out.logits_per_image, alt_logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.synthetic_logits_per_image, synthetic_logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.synthetic_text_embeds, synthetic_text, atol=1e-6, rtol=1e-6)
    expected = (info_nce(alt_logits) + info_nce(synthetic_logits)) / 2
    torch.testing.assert_close(out.loss, expected, atol=1e-5, rtol=1e-5)
    # The padding of synthetic row 1 matters (it is masked out, not embedded).
    assert (out.synthetic_text_embeds[1] - F.normalize(model.get_text_features(synthetic).pooler_output[1],
                                                       dim=-1)).abs().max() > 1e-3

    # One text stream: both heads score the same texts (unchanged behaviour); the new fields stay absent, so tuple
    # positions of the existing outputs do not move.
    with torch.no_grad():
        single = model(input_ids=alt, pixel_values=pixels, return_loss=True)
    synthetic_on_alt = F.normalize(vision.synthetic_embeds, dim=-1) @ alt_text.T / temperature[1]
    torch.testing.assert_close(single.loss, (info_nce(alt_logits) + info_nce(synthetic_on_alt)) / 2,
                               atol=1e-5, rtol=1e-5)
    assert single.synthetic_text_embeds is None and "synthetic_text_embeds" not in single.keys()
    assert len(single.to_tuple()) == 10
    # Only synthetic captions: the synthetic head alone.
    with torch.no_grad():
        only = model(pixel_values=pixels, synthetic_input_ids=synthetic, synthetic_attention_mask=synthetic_mask,
                     return_loss=True)
    assert only.logits_per_image is None
    torch.testing.assert_close(only.loss, info_nce(synthetic_logits), atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="one text per image"):
        model(input_ids=alt, pixel_values=pixels, synthetic_input_ids=synthetic[:2], return_loss=True)


def test_caption_collator(scenes_rows):
    processor = scenes_processor()
    rows = [scenes_rows[i] for i in range(4)]
    collator = TipsDataCollator(processor, synthetic_column="synthetic_captions", seed=0)
    batch = collator(rows)
    assert batch["pixel_values"].shape == (4, 3, 56, 56) and batch["return_loss"] is True
    expected_alt = processor(text=[r["alt_text"] for r in rows], return_tensors="pt")
    torch.testing.assert_close(batch["input_ids"], expected_alt["input_ids"], atol=0, rtol=0)
    assert batch["input_ids"].shape == (4, 64)  # the processor's default: padded to 64, as the official pipeline
    # Each synthetic row is one of that row's two captions, drawn reproducibly from the seed.
    for i, row in enumerate(rows):
        options = [processor(text=[c], return_tensors="pt")["input_ids"][0] for c in row["synthetic_captions"]]
        assert any(torch.equal(batch["synthetic_input_ids"][i], o) for o in options)
    again = TipsDataCollator(processor, synthetic_column="synthetic_captions", seed=0)(rows)
    assert torch.equal(again["synthetic_input_ids"], batch["synthetic_input_ids"])
    draws = {tuple(TipsDataCollator(processor, synthetic_column="synthetic_captions", seed=s)(rows[:1])
                   ["synthetic_input_ids"][0].tolist()) for s in range(8)}
    assert len(draws) == 2  # both captions get drawn
    # A string column, padding to the longest caption.
    short = TipsDataCollator(processor, text_kwargs={"padding": "longest"})(rows)
    longest = max(int(m.sum()) for m in short["synthetic_attention_mask"])
    assert short["synthetic_input_ids"].shape == (4, longest)
    with pytest.raises(ValueError, match="'caption'.*remove_unused_columns=False"):
        TipsDataCollator(processor, text_column="caption")(rows)
    with pytest.raises(ValueError, match="'label': row 0 holds int"):
        TipsDataCollator(processor, text_column="label")(rows)


def test_dense_collator_follows_the_image_geometry():
    # Resize: a 7x7 map becomes 14x14 with each id repeated 2x2 (nearest).
    ids = torch.arange(49, dtype=torch.uint8).reshape(7, 7)
    rows = [{"image": Image.new("RGB", (7, 7)), "class_mask": Image.fromarray(ids.numpy())}]
    batch = TipsDenseDataCollator(TipsImageProcessor(size={"height": 14, "width": 14}))(rows)
    assert batch["pixel_values"].shape == (1, 3, 14, 14) and batch["labels"].dtype == torch.int64
    torch.testing.assert_close(batch["labels"][0], ids.long().repeat_interleave(2, 0).repeat_interleave(2, 1))
    # No resize: a 10x12 image is centre-padded to 14x14 (rows 2 + 2, columns 1 + 1); padding is ignore_index.
    label = np.random.default_rng(0).integers(0, 9, (10, 12)).astype(np.uint8)
    rows = [{"image": np.zeros((10, 12, 3), np.uint8), "mask": label}] * 2
    batch = TipsDenseDataCollator(TipsImageProcessor(do_resize=False), label_column="mask")(rows)
    assert batch["labels"].shape == (2, 14, 14)
    torch.testing.assert_close(batch["labels"][1, 2:12, 1:13], torch.from_numpy(label).long())
    assert (batch["labels"][:, :2] == 255).all() and (batch["labels"][:, 12:] == 255).all()
    assert (batch["labels"][:, :, 0] == 255).all() and (batch["labels"][:, :, 13] == 255).all()
    # Depth: float maps, the invalid value and the padding become NaN.
    depth = np.full((10, 12), 3.5, np.float32)
    depth[0, 0] = 0.0
    batch = TipsDenseDataCollator(TipsImageProcessor(do_resize=False), label_column="depth", task="depth",
                                  invalid_depth=0.0)([{"image": np.zeros((10, 12, 3), np.uint8), "depth": depth}])
    labels = batch["labels"][0]
    assert labels.dtype == torch.float32 and torch.isnan(labels[2, 1]) and labels[2, 2] == 3.5
    assert int(torch.isnan(labels).sum()) == 14 * 14 - 10 * 12 + 1
    with pytest.raises(ValueError, match="label column 'depth': row 0 is not a 2-D map"):
        TipsDenseDataCollator(TipsImageProcessor(), label_column="depth")([{"image": depth, "depth": depth[0]}])


def test_trainer_trains_tips_model_and_scores_retrieval(scenes_rows, tmp_path):
    """A plain TipsModel (every weight, temperatures included) trains under Trainer on both caption streams; then
    Trainer.evaluate over batches of 5 gives the Recall@K of one forward over all 12 rows."""
    from transformers import Trainer, TrainingArguments

    model, processor = scenes_model(3), scenes_processor()
    collator = TipsDataCollator(processor)
    metrics = ContrastiveRetrievalMetrics(ks=(1, 3))
    args = TrainingArguments(str(tmp_path), max_steps=4, per_device_train_batch_size=6, learning_rate=1e-3,
                             per_device_eval_batch_size=5, report_to="none", remove_unused_columns=False,
                             use_cpu=True, disable_tqdm=True, save_strategy="no")
    trainer = Trainer(model, args, train_dataset=scenes_rows, eval_dataset=scenes_rows, data_collator=collator,
                      compute_metrics=metrics, preprocess_logits_for_metrics=metrics.preprocess_logits_for_metrics)
    temperature = model.log_temperature.detach().clone()
    before = trainer.evaluate()
    trainer.train()
    scores = trainer.evaluate()
    assert scores["eval_loss"] < before["eval_loss"] - 0.1
    assert (model.log_temperature.detach() - temperature).abs().min() > 1e-4  # both heads' temperatures train
    model.eval()
    with torch.no_grad():
        out = model(**collator([scenes_rows[i] for i in range(12)]))
    for head, images, texts in (("alt_text", out.image_embeds, out.text_embeds),
                                ("synthetic", out.synthetic_image_embeds, out.synthetic_text_embeds)):
        for key, value in retrieval_recall(images, texts, ks=(1, 3)).items():
            assert scores[f"eval_{head}_{key}"] == pytest.approx(value, abs=1e-12)
    assert np.isfinite(scores["eval_loss"])
    # Hand-checked case: identical embeddings retrieve perfectly, reversed pairs never at K=1.
    eye = np.eye(4, dtype=np.float32)

    class Prediction:
        predictions = (eye, eye, eye, eye[::-1].copy())

    scores = metrics(Prediction())
    assert scores["alt_text_image_to_text_recall@1"] == 1.0 and scores["synthetic_image_to_text_recall@1"] == 0.0


def test_dense_metrics_by_hand():
    from tips_hf.training_utils import DepthMetrics, SegmentationMetrics

    # Column logits [1, -1] (class 0) and [-1, 1] (class 1) upsampled bilinearly 2 -> 4 (align_corners=False):
    # columns 0-1 lean to class 0, columns 2-3 to class 1.
    logits = torch.tensor([[1.0, -1.0], [-1.0, 1.0]])[:, None, :].expand(2, 2, 2)[None]  # (1, 2 classes, 2, 2)
    labels = torch.tensor([[0, 0, 1, 1]] * 4)
    labels[0, 0], labels[3, 3] = 255, 0  # one ignored pixel, one class-0 pixel predicted as 1
    metrics = SegmentationMetrics(num_labels=2)
    predicted = metrics.preprocess_logits_for_metrics((logits,), labels[None])
    torch.testing.assert_close(predicted[0], torch.tensor([[0, 0, 1, 1]] * 4))

    class Prediction:
        predictions, label_ids = predicted.numpy(), labels[None].numpy()

    scores = metrics(Prediction())
    # class 0: TP 7, FN 1 (the pixel at [3, 3]), FP 0 -> IoU 7/8; class 1: TP 7, FP 1 -> 7/8; 14 of 15 pixels right.
    assert scores["mean_iou"] == pytest.approx(7 / 8) and scores["pixel_accuracy"] == pytest.approx(14 / 15)
    depth = DepthMetrics()
    references = torch.ones(1, 4, 4)
    references[0, 0, 0], references[0, 0, 1], references[0, 1, 0] = float("nan"), 0.0, 3.0
    predicted = depth.preprocess_logits_for_metrics(torch.full((1, 2, 2), 2.0), references)

    class DepthPrediction:
        predictions, label_ids = predicted.numpy(), references.numpy()

    scores = depth(DepthPrediction())
    # 14 valid pixels (NaN and 0 are not), every error is 1 m; relative error 1 on 13 pixels and 1/3 on one.
    assert scores["rmse"] == pytest.approx(1.0) and scores["abs_rel"] == pytest.approx((13 + 1 / 3) / 14)


def test_dense_metrics_streamed_batch_by_batch_score_the_whole_set():
    """With `batch_eval_metrics=True` Trainer calls compute_metrics once per batch (`compute_result=True` on the last):
    the scores added up over uneven batches equal those of the whole set at once, and both equal the scores written
    out here (IoU over classes present in prediction or label, 255 ignored; RMSE / AbsRel over finite depths > 0). The
    next evaluation starts from zero."""
    from types import SimpleNamespace

    from tips_hf.training_utils import DepthMetrics, SegmentationMetrics

    generator = torch.Generator().manual_seed(0)
    predicted = torch.randint(0, 4, (7, 6, 5), generator=generator)
    labels = torch.where(torch.rand(7, 6, 5, generator=generator) < 0.6, predicted,
                         torch.randint(0, 3, (7, 6, 5), generator=generator))  # class 3: predicted, never labelled
    labels[0, 0] = 255
    ious = []
    for c in range(4):
        mine, theirs = (predicted == c) & (labels != 255), labels == c
        ious.append(float((mine & theirs).sum() / (mine | theirs).sum()))
    by_hand = {"mean_iou": sum(ious) / 4,
               "pixel_accuracy": float((predicted == labels).sum() / (labels != 255).sum())}
    depth_true = torch.rand(7, 6, 5, generator=generator) * 4
    depth_true[1, :2], depth_true[2, 3] = float("nan"), 0.0  # missing depth
    depth_pred = depth_true + torch.randn(7, 6, 5, generator=generator)
    valid = torch.isfinite(depth_true) & (depth_true.nan_to_num() > 0)
    error = (depth_pred - depth_true)[valid].double()
    depth_by_hand = {"rmse": float(error.pow(2).mean().sqrt()),
                     "abs_rel": float((error.abs() / depth_true[valid].double()).mean())}
    for metrics, pred, true, want in ((SegmentationMetrics(4), predicted, labels, by_hand),
                                      (DepthMetrics(), depth_pred, depth_true, depth_by_hand)):
        whole = metrics(SimpleNamespace(predictions=pred.numpy(), label_ids=true.numpy()))
        for _ in range(2):  # a second evaluation does not add to the first
            for start, stop in ((0, 3), (3, 4), (4, 7)):
                last = stop == 7
                streamed = metrics(SimpleNamespace(predictions=pred[start:stop], label_ids=true[start:stop]),
                                   compute_result=last)
                assert streamed == {} or last
            for key, value in want.items():
                assert whole[key] == pytest.approx(value, rel=1e-6), key
                assert streamed[key] == pytest.approx(value, rel=1e-6), key


def _example():
    spec = importlib.util.spec_from_file_location("finetune_with_trainer", ROOT / "examples" / "finetune_with_trainer.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_example_trains_lora_with_trainer_and_reloads(model_dir, tmp_path):
    """The README example, shortened: the loss falls, the saved adapter reproduces the trained model."""
    out = tmp_path / "run"
    result = _example().main(["--output_dir", str(out), "--model", str(model_dir), "--max_steps", "8",
                              "--batch_size", "16", "--train_examples", "48", "--eval_examples", "16",
                              "--logging_steps", "2", "--learning_rate", "3e-3"])
    assert result["steps"] == 8 and len(result["train_losses"]) == 4
    # Training pulls the pairs together: the validation loss and the training loss both fall.
    assert result["eval_after"]["eval_loss"] < result["eval_before"]["eval_loss"] - 0.05
    assert result["train_losses"][-1] < result["train_losses"][0]
    assert set(result["eval_after"]) >= {f"eval_{h}_image_to_text_recall@5" for h in ("alt_text", "synthetic")}
    # Our own round trip (same weights, same ops): bit-equal. The merged model folds W + BA: float32 rounding.
    assert result["reloaded_max_abs_diff"] == 0.0
    assert result["merged_max_abs_diff"] < 1e-5
    assert (out / "adapter" / "adapter_config.json").is_file()
    assert (out / "adapter" / "processor_config.json").is_file()  # Trainer(processing_class=...) saves it
    merged = TipsModel.from_pretrained(out / "merged")
    base = TipsModel.from_pretrained(model_dir)
    changed = [n for n, p in merged.state_dict().items() if not torch.equal(p, base.state_dict()[n])]
    assert changed and all(".qkv." in n or ".out_proj." in n or ".fc1." in n or ".fc2." in n for n in changed)


def _segmentation_model(seed: int = 0):
    from tips_hf.modeling.configuration_dense_tips import TipsDPTConfig
    from tips_hf.modeling.modeling_dense_tips import TipsForSemanticSegmentation

    vision = tiny_config("mlp", image_size=56).vision_config.to_dict()
    config = TipsDPTConfig(vision_config=vision, num_labels=9, dpt_channels=16, backbone_out_indices=[0, 0, 1, 1])
    torch.manual_seed(seed)
    return TipsForSemanticSegmentation(config)


@pytest.mark.parametrize("lora", [False, True])
def test_trainer_fine_tunes_segmentation(tmp_path, lora):
    """Trainer + TipsDenseDataCollator + SegmentationMetrics on the scenes' class masks, fully or with LoRA."""
    from peft import PeftModel, get_peft_model
    from transformers import Trainer, TrainingArguments

    from tips_hf.finetuning import lora_config
    from tips_hf.training_utils import SegmentationMetrics

    train = load_scenes_dataset("train", 24, image_size=56, max_objects=2)
    valid = load_scenes_dataset("validation", 8, image_size=56, max_objects=2)
    model = _segmentation_model()
    if lora:  # LoRA on the tower; the new decoder and head train fully and are saved with the adapter
        model = get_peft_model(model, lora_config("vision", r=4, modules_to_save=["decoder", "head"]))
    collator = TipsDenseDataCollator(TipsImageProcessor(size={"height": 56, "width": 56}), label_column="class_mask")
    metrics = SegmentationMetrics(num_labels=9)
    args = TrainingArguments(str(tmp_path / "run"), max_steps=6, per_device_train_batch_size=8,
                             per_device_eval_batch_size=4, learning_rate=1e-2, logging_steps=3, report_to="none",
                             remove_unused_columns=False, use_cpu=True, disable_tqdm=True, save_strategy="no")
    trainer = Trainer(model, args, train_dataset=train, eval_dataset=valid, data_collator=collator,
                      compute_metrics=metrics, preprocess_logits_for_metrics=metrics.preprocess_logits_for_metrics)
    before = trainer.evaluate()
    trainer.train()
    after = trainer.evaluate()
    assert after["eval_loss"] < before["eval_loss"] - 0.1
    assert 0.0 <= before["eval_mean_iou"] <= 1.0 and after["eval_pixel_accuracy"] > before["eval_pixel_accuracy"]
    # mean_iou through compute_metrics = the same maths on one forward over the whole validation set.
    batch = collator([valid[i] for i in range(8)])
    model.eval()
    with torch.no_grad():
        logits = model(pixel_values=batch["pixel_values"]).logits
    predicted = metrics.preprocess_logits_for_metrics(logits, batch["labels"])
    from tips_hf.metrics import mean_iou

    assert after["eval_mean_iou"] == pytest.approx(mean_iou(predicted, batch["labels"], 9, 255)["mean_iou"], abs=1e-12)
    if lora:
        trainer.save_model(str(tmp_path / "adapter"))
        reloaded = PeftModel.from_pretrained(_segmentation_model(), tmp_path / "adapter").eval()
        with torch.no_grad():  # our own round trip: bit-equal
            torch.testing.assert_close(reloaded(pixel_values=batch["pixel_values"]).logits, logits, atol=0, rtol=0)


def test_trainer_gradient_accumulation_matches_one_big_batch(tmp_path):
    """Dense losses are batch means: Trainer must divide them by the accumulation steps. 2 x 4 rows accumulated give the
    update of one batch of 8 (plain SGD, no clipping, so a loss twice too large would double the step)."""
    from transformers import Trainer, TrainingArguments

    rows = load_scenes_dataset("train", 8, image_size=56, max_objects=2)  # no 255 pixels: equal weight per row
    collator = TipsDenseDataCollator(TipsImageProcessor(size={"height": 56, "width": 56}))
    updates = []
    for batch_size, accumulation in ((8, 1), (4, 2)):
        model = _segmentation_model()
        args = TrainingArguments(str(tmp_path / str(accumulation)), max_steps=1, per_device_train_batch_size=batch_size,
                                 gradient_accumulation_steps=accumulation, optim="sgd", learning_rate=0.5,
                                 max_grad_norm=0.0, lr_scheduler_type="constant", report_to="none",
                                 remove_unused_columns=False, use_cpu=True, disable_tqdm=True, save_strategy="no")
        initial = torch.cat([p.detach().flatten() for p in model.parameters()])
        Trainer(model, args, train_dataset=rows, data_collator=collator).train()
        updates.append(torch.cat([p.detach().flatten() for p in model.parameters()]) - initial)
    assert updates[0].abs().max() > 1e-3
    # Same sum of per-row gradients in another order: float32 rounding only (~1e-7 relative).
    torch.testing.assert_close(updates[1], updates[0], atol=1e-6, rtol=1e-4)


def test_trainer_fine_tunes_depth_with_lora(tmp_path):
    """TipsForDepthEstimation (SILog loss) under Trainer with LoRA, the scenes' depth-order maps (0 = background, not
    scored) through TipsDenseDataCollator(task="depth") and DepthMetrics."""
    from peft import get_peft_model
    from transformers import Trainer, TrainingArguments

    from tips_hf.finetuning import lora_config
    from tips_hf.metrics import depth_errors
    from tips_hf.modeling.configuration_dense_tips import TipsDPTConfig
    from tips_hf.modeling.modeling_dense_tips import TipsForDepthEstimation
    from tips_hf.training_utils import DepthMetrics

    vision = tiny_config("mlp", image_size=56).vision_config.to_dict()
    config = TipsDPTConfig(vision_config=vision, task="depth", num_depth_bins=16, max_depth=4.0, dpt_channels=16,
                           backbone_out_indices=[0, 0, 1, 1])
    torch.manual_seed(0)
    model = get_peft_model(TipsForDepthEstimation(config), lora_config("vision", r=4, modules_to_save=["decoder", "head"]))
    train = load_scenes_dataset("train", 24, image_size=56, max_objects=2)
    valid = load_scenes_dataset("validation", 8, image_size=56, max_objects=2)
    collator = TipsDenseDataCollator(TipsImageProcessor(size={"height": 56, "width": 56}), label_column="depth",
                                     task="depth")
    metrics = DepthMetrics()
    args = TrainingArguments(str(tmp_path), max_steps=6, per_device_train_batch_size=8, per_device_eval_batch_size=4,
                             learning_rate=1e-2, report_to="none", remove_unused_columns=False, use_cpu=True,
                             disable_tqdm=True, save_strategy="no")
    trainer = Trainer(model, args, train_dataset=train, eval_dataset=valid, data_collator=collator,
                      compute_metrics=metrics, preprocess_logits_for_metrics=metrics.preprocess_logits_for_metrics)
    before = trainer.evaluate()
    trainer.train()
    after = trainer.evaluate()
    # Measured: SILog 0.33 -> 0.25, RMSE 0.93 -> 0.41 (depth orders 1-2).
    assert after["eval_loss"] < before["eval_loss"] - 0.03 and after["eval_rmse"] < before["eval_rmse"] - 0.2
    batch = collator([valid[i] for i in range(8)])
    model.eval()
    with torch.no_grad():
        depth = metrics.preprocess_logits_for_metrics(model(pixel_values=batch["pixel_values"]).predicted_depth,
                                                      batch["labels"])
    valid_pixels = batch["labels"] > 0
    assert after["eval_rmse"] == pytest.approx(depth_errors(depth, batch["labels"], valid_pixels)["rmse"], rel=1e-6)
