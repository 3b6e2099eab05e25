"""PEFT fine-tuning: LoRA presets, adapter save/load/merge round trips, the dense fine-tuning loop, and contrastive
LoRA through the pretraining loop."""

import json
from pathlib import Path

import pytest
import torch
from conftest import tiny_config
from dense_helpers import logged_losses, scores_by_hand
from peft import PeftModel, get_peft_model

from tips_hf import TipsModel
from tips_hf.finetuning import (
    TipsForDenseTasks,
    finetune,
    load_dense,
    load_finetune_config,
    lora_config,
    matching_modules,
)


@pytest.mark.parametrize(
    "preset, expected",
    [
        ("vision-attention", {"attention.qkv", "attention.out_proj"}),
        ("vision", {"attention.qkv", "attention.out_proj", "mlp.fc1", "mlp.fc2"}),
        ("text-mlp", {"mlp.fc1", "mlp.fc2"}),
        ("all", {"attention.qkv", "attention.out_proj", "self_attn.qkv", "self_attn.out_proj", "mlp.fc1", "mlp.fc2"}),
    ],
)
def test_presets_select_the_right_tower(preset, expected):
    model = TipsModel(tiny_config())
    names = matching_modules(model, preset)
    towers = {n.split(".")[0] for n in names}
    assert towers == ({"vision_model", "text_model"} if preset == "all" else {preset.split("-")[0] + "_model"})
    assert {".".join(n.split(".")[-2:]) for n in names} == expected
    assert len(names) == {"vision-attention": 4, "vision": 8, "text-mlp": 4, "all": 16}[preset]  # 2 layers per tower
    swiglu = matching_modules(TipsModel(tiny_config("swiglu")), "vision-mlp")
    assert {n.split(".")[-1] for n in swiglu} == {"gate_up", "down"}
    with pytest.raises(ValueError, match="unknown LoRA preset"):
        matching_modules(model, "decoder")


def _perturb_lora(model):
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.05)


def test_dense_adapter_round_trip_and_merge(tiny_model_dir, tmp_path):
    torch.manual_seed(1)
    pixels = torch.rand(2, 3, 56, 70)
    model = TipsForDenseTasks(TipsModel.from_pretrained(tiny_model_dir), "segmentation", num_classes=5, head="mlp")
    peft_model = get_peft_model(model, lora_config("vision", r=4, modules_to_save=["head"]))
    trainable = sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
    assert 0 < trainable < sum(p.numel() for p in peft_model.parameters()) / 2
    assert not any("text_model" in n for n, p in peft_model.named_parameters() if p.requires_grad)
    _perturb_lora(peft_model)
    with torch.no_grad():
        for param in peft_model.base_model.model.head.modules_to_save["default"].parameters():
            param.add_(0.1)
    peft_model.eval()
    with torch.no_grad():
        adapted = peft_model(pixel_values=pixels).logits
    peft_model.save_pretrained(tmp_path / "adapter")
    fresh = TipsForDenseTasks(TipsModel.from_pretrained(tiny_model_dir), "segmentation", num_classes=5, head="mlp")
    loaded = PeftModel.from_pretrained(fresh, tmp_path / "adapter").eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(pixel_values=pixels).logits, adapted, atol=0, rtol=0)
        merged = loaded.merge_and_unload().eval()
        # W + BA folded into one matrix: float32 rounding of other sums, measured up to 5.7e-6 on logits of size ~12
        # (~6 ulps of the largest); a fixed 1e-5 sat at 1.7x that. The tolerance follows the logits' scale with a
        # 10x margin; a wrong merge (scaling, a missed module) moves them by > 1e-2.
        torch.testing.assert_close(merged(pixel_values=pixels).logits, adapted,
                                   atol=5e-6 * float(adapted.abs().max()), rtol=0)
        base = TipsForDenseTasks(TipsModel.from_pretrained(tiny_model_dir), "segmentation", 5, "mlp").eval()
        assert (base(pixel_values=pixels).logits - adapted).abs().max() > 1e-3  # the adapter changes outputs


def test_full_model_lora_merge(tiny_model_dir):
    torch.manual_seed(2)
    model = get_peft_model(TipsModel.from_pretrained(tiny_model_dir), lora_config("all", r=4)).eval()
    _perturb_lora(model)
    pixels, ids = torch.rand(2, 3, 56, 56), torch.randint(2, 100, (2, 9))
    with torch.no_grad():
        adapted = model(pixel_values=pixels, input_ids=ids)
        merged_model = model.merge_and_unload()
        merged = merged_model(pixel_values=pixels, input_ids=ids)
    # Merging W + BA into one matrix changes the float32 summation order, so the merged model differs from the
    # adapted one by rounding only: measured ~1.3e-7 on the unit-norm embeddings (about one ulp at 0.5-1.0) and
    # ~8e-8 on the cosines. The logits are those cosines times 1/T (~197 here), so their rounding error is ~1.5e-5
    # in absolute terms whatever the logit's size, and a relative tolerance fails on logits near zero (rtol 1e-5
    # broke on transformers 5.25 at a logit of ~1.0). Compare the cosines at 1e-6 (~13x the measured error, for
    # version drift) and the logits at that tolerance times their scale; a wrong merge moves outputs by > 1e-2.
    scale = float(1 / merged_model.temperature[0])
    torch.testing.assert_close(merged.image_embeds @ merged.text_embeds.T,
                               adapted.image_embeds @ adapted.text_embeds.T, atol=1e-6, rtol=0)
    torch.testing.assert_close(merged.logits_per_image, adapted.logits_per_image, atol=1e-6 * scale, rtol=0)
    torch.testing.assert_close(merged.vision_model_output.patch_embeds, adapted.vision_model_output.patch_embeds,
                               atol=1e-5, rtol=0)


# Short runs that learn: no warm-up, a larger LR, a loss logged every step.
LEARNING = ["optim.warmup_steps=0", "optim.lr=1e-2", "training.logging_steps=1", "training.progress_bar=false"]


def test_dense_finetune_loop_saves_and_reloads(tiny_model_dir, tmp_path, capsys):
    config = load_finetune_config(None, [
        f"model.base={tiny_model_dir}", "model.head=linear", "lora.r=4", "data.num_examples=16", "data.eval_examples=8",
        "data.scene_image_size=56", "data.image_size=56", "training.max_steps=4", "training.batch_size=4",
        f"training.output_dir={tmp_path / 'out'}", *LEARNING,
    ])
    result = finetune(config)
    assert "trainable parameters:" in capsys.readouterr().out
    assert result["trainable_parameters"] < result["total_parameters"]
    out = tmp_path / "out"
    assert (out / "adapter" / "adapter_model.safetensors").is_file()
    described = json.loads((out / "dense_config.json").read_text())
    assert described["task"] == "segmentation" and described["num_classes"] == 9
    reloaded = load_dense(out).eval()
    merged = load_dense(out, merge=True).eval()
    pixels = torch.rand(1, 3, 56, 56)
    with torch.no_grad():  # the merge's float32 rounding, scaled to the logits as in the round trip above
        want = reloaded(pixel_values=pixels).logits
        torch.testing.assert_close(merged(pixel_values=pixels).logits, want, atol=5e-6 * float(want.abs().max()), rtol=0)
    # the reported scores are those of the saved model, computed by hand; the training loss fell
    # (measured 2.08, 1.60, 1.06, 0.61)
    by_hand = scores_by_hand(reloaded, config)
    assert result["eval"]["mean_iou"] == pytest.approx(by_hand["mean_iou"], abs=1e-6)
    assert result["eval"]["pixel_accuracy"] == pytest.approx(by_hand["pixel_accuracy"], abs=1e-6)
    losses = logged_losses(out)
    assert len(losses) == 4 and sum(losses[-2:]) / 2 < 0.6 * losses[0], losses


def test_dense_depth_head_loss_is_squared_error_on_valid_pixels(tiny_model_dir):
    """TipsForDenseTasks' depth mode: one output channel at the label size, the loss the mean squared error over the
    finite, positive depths only (NaN, 0 and negative labels mark missing depth, as NYU's 0)."""
    torch.manual_seed(3)
    model = TipsForDenseTasks(TipsModel.from_pretrained(tiny_model_dir), "depth", head="mlp").eval()
    pixels = torch.rand(2, 3, 56, 42)
    labels = torch.rand(2, 30, 20) * 4
    labels[0, :5] = float("nan")
    labels[1, :, :3] = -1.0
    labels[1, 0, 5:] = 0.0
    with torch.no_grad():
        out = model(pixel_values=pixels, labels=labels)
        grid = model.head(model.vision_model(pixel_values=pixels).patch_embeds)  # (2, 1, 4, 3): the patch grid
        at_pixels = model.predict(pixels, (56, 42))
    assert out.logits.shape == (2, 1, 30, 20) and grid.shape == (2, 1, 4, 3)
    upsample = torch.nn.functional.interpolate
    torch.testing.assert_close(out.logits, upsample(grid, size=(30, 20), mode="bilinear", align_corners=False),
                               atol=1e-6, rtol=0)
    torch.testing.assert_close(at_pixels, upsample(grid, size=(56, 42), mode="bilinear", align_corners=False)[:, 0],
                               atol=1e-6, rtol=0)
    valid = torch.isfinite(labels) & (labels > 0)
    assert int(valid.sum()) == 2 * 600 - 100 - 90 - 15
    squared = (out.logits[:, 0] - labels)[valid] ** 2
    torch.testing.assert_close(out.loss, squared.mean(), atol=0, rtol=1e-6)


def test_dense_finetune_depth_mode_learns(tiny_model_dir, tmp_path):
    """finetune with training.task=depth and a linear head (TipsForDenseTasks' depth mode): the training loss
    falls (measured 1.66 -> 0.52 / 0.65 over 8 steps) and the reported RMSE is the saved model's, computed by hand."""
    config = load_finetune_config(None, [
        f"model.base={tiny_model_dir}", "model.head=linear", "training.task=depth", "data.depth_offset=1.0",
        "lora.r=4", "data.num_examples=16", "data.eval_examples=8", "data.scene_image_size=56", "data.image_size=56",
        "training.max_steps=8", "training.batch_size=4", f"training.output_dir={tmp_path}", *LEARNING,
    ])
    result = finetune(config)
    model = load_dense(tmp_path)
    assert isinstance(model.base_model.model, TipsForDenseTasks) and model.base_model.model.task == "depth"
    assert result["eval"]["rmse"] == pytest.approx(scores_by_hand(model, config)["rmse"], rel=1e-5)
    losses = logged_losses(tmp_path)
    assert len(losses) == 8 and sum(losses[-2:]) / 2 < 0.6 * losses[0], losses


def test_contrastive_lora_through_pretraining(tmp_path):
    from tips_hf.pretraining import load_config, train

    config = tiny_config("mlp", image_size=56)
    config.text_config.vocab_size = 512  # the embedded dataset's tokenizer
    base_dir = tmp_path / "base"
    TipsModel(config).save_pretrained(base_dir)

    config = load_config(None, [
        f"model.init_from={base_dir}", "objective.distill_weight=0", "objective.mask_weight=0",
        "data.num_local_crops=0", "data.scene_image_size=56", "data.global_size=56", "data.num_examples=16",
        "data.max_text_length=16", "lora.enabled=true", "lora.preset=all", "lora.r=4", "training.max_steps=3",
        "training.batch_size=4", "training.save_steps=0", "training.report_to=none", "training.progress_bar=false",
        f"training.output_dir={tmp_path / 'run'}", "eval.num_examples=0",
    ])
    result = train(config)
    final = result.final_model_dir
    assert (final / "adapter" / "adapter_model.safetensors").is_file()
    merged = TipsModel.from_pretrained(final)
    base = TipsModel.from_pretrained(base_dir)
    changed = [k for k, v in merged.state_dict().items() if not torch.equal(v, base.state_dict()[k])]
    assert changed and all(".qkv." in k or ".out_proj." in k or ".mlp.fc" in k for k in changed), changed[:5]


def test_dense_finetune_on_an_hf_dataset(tiny_model_dir, tmp_path):
    import io

    import datasets
    import numpy as np
    from PIL import Image

    def png(array, mode=None):
        buffer = io.BytesIO()
        Image.fromarray(array, mode=mode).save(buffer, format="PNG")
        return {"bytes": buffer.getvalue(), "path": None}

    rows = []
    for i in range(8):
        mask = np.zeros((28, 28), np.uint8)
        mask[: 7 + i, :14] = 1 + i % 2
        image = np.stack([mask * 100] * 3, axis=-1).astype(np.uint8)
        rows.append({"picture": png(image), "segmentation": png(mask, "L")})
    features = datasets.Features({"picture": datasets.Image(), "segmentation": datasets.Image()})
    datasets.Dataset.from_list(rows, features=features).to_parquet(tmp_path / "seg.parquet")
    config = load_finetune_config(None, [
        f"model.base={tiny_model_dir}", "data.source=parquet", f"data.path={tmp_path / 'seg.parquet'}",
        "data.image_column=picture", "data.label_column=segmentation", "data.num_classes=3", "data.split=train",
        "data.eval_split=train", "data.image_size=28", "training.max_steps=3", "training.batch_size=4",
        f"training.output_dir={tmp_path / 'out'}", "lora.r=2", *LEARNING,
    ])
    result = finetune(config)
    assert result["steps"] == 3
    by_hand = scores_by_hand(load_dense(tmp_path / "out"), config)
    assert result["eval"]["mean_iou"] == pytest.approx(by_hand["mean_iou"], abs=1e-6)
    losses = logged_losses(tmp_path / "out")
    assert len(losses) == 3 and losses[-1] < 0.8 * losses[0], losses
    assert json.loads((tmp_path / "out" / "dense_config.json").read_text())["num_classes"] == 3


def test_dense_dataset_label_sizes_and_subset(tmp_path):
    """Label maps of different sizes batch together (nearest resize to data.image_size) and num_examples selects a
    subset of an HF dataset."""
    import io

    import datasets
    import numpy as np
    from PIL import Image

    from tips_hf.finetuning.data import DenseDataset

    def png(array):
        buffer = io.BytesIO()
        Image.fromarray(array).save(buffer, format="PNG")
        return {"bytes": buffer.getvalue(), "path": None}

    rng = np.random.default_rng(0)
    masks = [rng.integers(0, 3, (side, side), dtype=np.uint8) for side in (28, 56, 28, 56, 28, 56)]
    rows = [{"img": png(np.stack([m * 80] * 3, -1)), "seg": png(m)} for m in masks]
    features = datasets.Features({"img": datasets.Image(), "seg": datasets.Image()})
    datasets.Dataset.from_list(rows, features=features).to_parquet(tmp_path / "seg.parquet")
    config = load_finetune_config(None, ["data.source=parquet", f"data.path={tmp_path / 'seg.parquet'}",
                                      "data.image_column=img", "data.label_column=seg", "data.image_size=28"])
    dataset = DenseDataset(config.data, "segmentation", "train", 4, 0)
    assert len(dataset) == 4
    assert torch.equal(dataset[0]["labels"], torch.from_numpy(masks[0].astype(np.int64)))
    assert torch.equal(dataset[1]["labels"], torch.from_numpy(masks[1][::2, ::2].astype(np.int64)))
    assert dataset[1]["pixel_values"].shape == (3, 28, 28)


def _dense_run(config_path, output, *args, fault=None, processes=1):
    import os
    import subprocess
    import sys

    from conftest import ROOT

    env = dict(os.environ, HF_HUB_OFFLINE="1")
    env.pop("TIPS_HF_FAULT", None)
    if fault:
        env["TIPS_HF_FAULT"] = fault
    launcher = [sys.executable]
    if processes == 2:
        launcher += ["-m", "accelerate.commands.launch", "--config_file",
                     str(ROOT / "training" / "accelerate_configs" / "cpu-2proc.yaml"), "--main_process_port", "29532"]
    command = [*launcher, str(ROOT / "training" / "finetune.py"), "--config", str(config_path),
               f"training.output_dir={output}", *args]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=600, cwd=ROOT)


def test_dense_finetune_resumes_exactly_after_sigkill_and_sigterm(tiny_model_dir, tmp_path):
    """Dense fine-tuning checkpoints (training.save_steps) and resumes exactly, with gradient accumulation: a run
    SIGKILLed after step 3 resumes from checkpoint-2, one sent SIGTERM after step 3 writes checkpoint-3 and exits with
    143; both end with the uninterrupted run's adapter (LoRA + head) bit for bit, and its evaluation."""
    import signal

    from safetensors.torch import load_file

    config = tmp_path / "dense.yaml"
    config.write_text(
        f"model: {{base: {tiny_model_dir}, head: linear}}\nlora: {{r: 4}}\n"
        "data: {num_examples: 16, eval_examples: 8, scene_image_size: 56, image_size: 56, num_workers: 1}\n"
        "training: {task: segmentation, max_steps: 6, batch_size: 2, gradient_accumulation_steps: 2, logging_steps: 1, "
        "save_steps: 2, progress_bar: false}\n"
    )
    want = _dense_run(config, tmp_path / "full")
    assert want.returncode == 0, want.stderr[-3000:]
    for fault, code, resumed_from in (("step:3", -signal.SIGKILL, 2), ("sigterm:3", 128 + signal.SIGTERM, 3)):
        out = tmp_path / fault.replace(":", "_")
        crashed = _dense_run(config, out, fault=fault)
        assert crashed.returncode == code, crashed.stderr[-3000:]
        assert (out / f"checkpoint-{resumed_from}" / "COMPLETE").is_file() and not (out / "adapter").exists()
        resumed = _dense_run(config, out, "training.resume_from_checkpoint=latest")
        assert resumed.returncode == 0, resumed.stderr[-3000:]
        assert f"resumed from {out / f'checkpoint-{resumed_from}'} at step {resumed_from}" in resumed.stderr
        a = load_file(tmp_path / "full" / "adapter" / "adapter_model.safetensors")
        b = load_file(out / "adapter" / "adapter_model.safetensors")
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), fault
        losses = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
        full = [json.loads(line) for line in (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()]
        assert [r for r in losses if "loss" in r] == [r for r in full if "loss" in r], fault
        assert json.loads((out / "dense_config.json").read_text())["result"]["eval"] == json.loads(
            (tmp_path / "full" / "dense_config.json").read_text())["result"]["eval"]


def test_dense_finetune_two_processes_equal_one(tiny_model_dir, tmp_path):
    """Two processes with half the batch each train what one process trains on the whole batch (each reads its own
    half of every global batch; DDP averages the gradients): the same losses and adapter to float32 rounding, and the
    same scores from an evaluation spread over both (7 images in batches of 2: the padding that evens out the last
    batch must not be scored twice)."""
    from safetensors.torch import load_file

    config = tmp_path / "dense.yaml"
    config.write_text(
        f"model: {{base: {tiny_model_dir}, head: linear}}\nlora: {{r: 4}}\n"
        "data: {num_examples: 16, eval_examples: 7, scene_image_size: 56, image_size: 56}\n"
        "training: {task: segmentation, max_steps: 4, batch_size: 8, eval_batch_size: 2, logging_steps: 1, "
        "progress_bar: false}\n"
    )
    one = _dense_run(config, tmp_path / "one")
    two = _dense_run(config, tmp_path / "two", "training.batch_size=4", processes=2)
    assert one.returncode == 0 and two.returncode == 0, (one.stderr[-2000:], two.stderr[-2000:])

    assert len(logged_losses(tmp_path / "one")) == 4
    for a, b in zip(logged_losses(tmp_path / "one"), logged_losses(tmp_path / "two"), strict=True):
        assert abs(a - b) <= 1e-5 * abs(a), (a, b)
    want = load_file(tmp_path / "one" / "adapter" / "adapter_model.safetensors")
    got = load_file(tmp_path / "two" / "adapter" / "adapter_model.safetensors")
    for key in want:
        torch.testing.assert_close(got[key], want[key], atol=1e-6, rtol=1e-5, msg=key)
    scores = [json.loads((tmp_path / run / "dense_config.json").read_text())["result"]["eval"] for run in ("one", "two")]
    # The adapters agree to float32 rounding, so a pixel whose two best logits tie that closely could flip; one pixel
    # of the 7 x 56 x 56 moves pixel accuracy by 4.6e-5. An image scored twice would move it by about 1/7. (Not
    # `eval_loss`: Trainer averages batch means, and the padded last batch's mean includes the repeated image.)
    for key in ("mean_iou", "pixel_accuracy", "mean_accuracy"):
        assert scores[1][key] == pytest.approx(scores[0][key], abs=1e-4), key



def test_dense_finetune_accumulation_equals_the_larger_batch_and_evaluates_periodically(tiny_model_dir, tmp_path):
    """`training.gradient_accumulation_steps=2` over micro-batches of 4 trains what one batch of 8 trains (the same
    global batches from the sampler; Trainer divides each micro-batch's mean loss by 2: the DPT models declare
    `accepts_loss_kwargs = False`, though their forward takes `**kwargs`): the same logged losses and adapter to
    float32 rounding. `training.eval_steps=2` evaluates at steps 2 and 4, and the final scores are those
    of step 4 (no second evaluation of the last step)."""
    from safetensors.torch import load_file

    common = [f"model.base={tiny_model_dir}", "model.head=dpt", "model.dpt_channels=16", "lora.r=4", "data.num_examples=16",
              "data.eval_examples=6", "data.scene_image_size=56", "data.image_size=56", "training.max_steps=4",
              "training.eval_batch_size=4", *LEARNING]
    one = finetune(load_finetune_config(None, [*common, "training.batch_size=8",
                                                  f"training.output_dir={tmp_path / 'one'}"]))
    two = finetune(load_finetune_config(None, [*common, "training.batch_size=4",
                                                  "training.gradient_accumulation_steps=2", "training.eval_steps=2",
                                                  f"training.output_dir={tmp_path / 'two'}"]))
    want, got = logged_losses(tmp_path / "one"), logged_losses(tmp_path / "two")
    assert len(want) == 4 and want[-1] < want[0]
    for a, b in zip(want, got, strict=True):
        assert abs(a - b) <= 1e-5 * abs(a), (want, got)  # the mean of 2 micro-batch means vs one mean: rounding
    a = load_file(tmp_path / "one" / "adapter" / "adapter_model.safetensors")
    b = load_file(tmp_path / "two" / "adapter" / "adapter_model.safetensors")
    for key in a:
        torch.testing.assert_close(b[key], a[key], atol=1e-6, rtol=1e-5, msg=key)
    records = [json.loads(line) for line in (tmp_path / "two" / "metrics.jsonl").read_text().splitlines()]
    evaluations = [record for record in records if record.get("event") == "eval"]
    assert [record["step"] for record in evaluations] == [2, 4]
    assert {key: evaluations[-1][key] for key in two["eval"]} == two["eval"]
    assert one["eval"]["pixel_accuracy"] == pytest.approx(two["eval"]["pixel_accuracy"], abs=1e-3)
    once = [json.loads(line) for line in (tmp_path / "one" / "metrics.jsonl").read_text().splitlines()]
    assert [record["step"] for record in once if record.get("event") == "eval"] == [4]  # eval_steps=0: at the end
    assert two["eval"]["mean_iou"] == pytest.approx(scores_by_hand(load_dense(tmp_path / "two"),
                                                                   load_finetune_config(None, common))["mean_iou"],
                                                    abs=1e-6)


def test_dense_finetune_pushes_the_run_folder(tiny_model_dir, tmp_path, monkeypatch):
    """`training.push_to_hub` uploads the run folder (not its checkpoints or tracker logs) to `training.hub_model_id`,
    recorded here instead of sent; without a repository id the config is refused, naming the field."""
    import huggingface_hub

    sent = []
    monkeypatch.setattr(huggingface_hub.HfApi, "create_repo", lambda self, repo_id, **kw: sent.append(("create", repo_id)))

    def upload_folder(self, **kwargs):
        sent.append(("upload", kwargs["repo_id"], sorted(p.name for p in Path(kwargs["folder_path"]).iterdir()),
                     kwargs["ignore_patterns"]))
        return "https://huggingface.co/me/seg/commit/0"

    monkeypatch.setattr(huggingface_hub.HfApi, "upload_folder", upload_folder)
    with pytest.raises(ValueError, match=r"training.push_to_hub needs training.hub_model_id"):
        load_finetune_config(None, ["training.push_to_hub=true"])
    with pytest.raises(ValueError, match=r"invalid training.hub_model_id 'seg'"):
        load_finetune_config(None, ["training.push_to_hub=true", "training.hub_model_id=seg"])
    out = tmp_path / "out"
    finetune(load_finetune_config(None, [
        f"model.base={tiny_model_dir}", "lora.r=2", "data.num_examples=8", "data.eval_examples=4",
        "data.scene_image_size=56", "data.image_size=56", "training.max_steps=2", "training.batch_size=4",
        "training.save_steps=1", f"training.output_dir={out}", "training.push_to_hub=true",
        "training.hub_model_id=me/seg", *LEARNING,
    ]))
    assert sent[0] == ("create", "me/seg") and sent[1][:2] == ("upload", "me/seg")
    assert {"adapter", "dense_config.json", "metrics.jsonl", "checkpoint-2"} <= set(sent[1][2])
    assert "checkpoint-*" in sent[1][3]


def test_contrastive_finetune_on_trainer(tmp_path):
    """training.task=contrastive on Trainer. The first logged loss is the base model's contrastive loss of both heads
    (`TipsModel(..., return_loss=True)`; in one process the same as the global one) on the first global batch, built
    here independently: the sampler's permutation for epoch 0, each row's synthetic caption drawn by the generator of
    (seed, epoch, index), the processor. The loss then falls, Recall@K is reported before and after, and the saved
    final model is the base with the saved adapter merged into it."""
    from peft import PeftModel

    from tips_hf import TipsImageProcessor, TipsProcessor, TipsTokenizer
    from tips_hf.data import load_scenes_dataset
    from tips_hf.data.build_tokenizer import TOKENIZER_PATH
    from tips_hf.pretraining.data import sample_generator

    config = tiny_config("mlp", image_size=56)
    config.text_config.vocab_size = 512  # the scenes tokenizer
    config.temperature_init_value = 0.05  # 1/T = 20: a wrong scale shows in the loss
    torch.manual_seed(0)
    base_dir = tmp_path / "base"
    TipsModel(config).save_pretrained(base_dir)
    processor = TipsProcessor(TipsImageProcessor(size={"height": 56, "width": 56}),
                              TipsTokenizer(str(TOKENIZER_PATH), model_max_length=16))
    processor.save_pretrained(base_dir)
    out = tmp_path / "run"
    result = finetune(load_finetune_config(None, [
        "training.task=contrastive", f"model.base={base_dir}", "lora.preset=all", "lora.r=4", "data.num_examples=24",
        "data.eval_examples=16", "data.scene_image_size=56", "data.image_size=56", "data.max_text_length=16",
        "training.max_steps=6", "training.batch_size=8", "training.eval_batch_size=8", "training.eval_on_start=true",
        "training.seed=3", f"training.output_dir={out}", *LEARNING,
    ]))
    # the first global batch, by hand
    rows = load_scenes_dataset("train", 24, image_size=56, seed=3)
    order = torch.randperm(24, generator=torch.Generator().manual_seed(3 + 0))[:8].tolist()
    base = TipsModel.from_pretrained(base_dir).eval()

    def inputs(indices):
        captions = []
        for index in indices:
            choices = rows[index]["synthetic_captions"]
            captions.append(choices[int(torch.randint(len(choices), (), generator=sample_generator(3, 0, index)))])
        batch = processor(images=[rows[index]["image"] for index in indices],
                          text=[rows[index]["alt_text"] for index in indices], return_tensors="pt", max_length=16)
        synthetic = processor(text=captions, return_tensors="pt", max_length=16)
        return {**batch, "synthetic_input_ids": synthetic["input_ids"],
                "synthetic_attention_mask": synthetic["attention_mask"]}

    def loss(indices):
        with torch.no_grad():
            return float(base(**inputs(indices), return_loss=True).loss)

    batch = inputs(order)
    losses = logged_losses(out)
    assert len(losses) == 6 and losses[0] == pytest.approx(loss(order), rel=1e-5), (losses[0], loss(order))
    # 2 accumulated micro-batches of 4 (negatives within each, as CLIP's accumulation has them): the mean of the two
    # micro-batch losses, not their sum
    finetune(load_finetune_config(None, [
        "training.task=contrastive", f"model.base={base_dir}", "lora.preset=all", "lora.r=4", "data.num_examples=24",
        "data.eval_examples=8", "data.scene_image_size=56", "data.image_size=56", "data.max_text_length=16",
        "training.max_steps=1", "training.batch_size=4", "training.gradient_accumulation_steps=2",
        "training.eval_batch_size=8", "training.seed=3", f"training.output_dir={tmp_path / 'accumulated'}", *LEARNING,
    ]))
    halves = (loss(order[:4]) + loss(order[4:])) / 2
    assert logged_losses(tmp_path / "accumulated")[0] == pytest.approx(halves, rel=1e-5)
    assert sum(losses[-2:]) / 2 < losses[0], losses
    assert set(result["eval_before"]) == set(result["eval"]) and "synthetic_image_to_text_recall@5" in result["eval"]
    final = out / "final"
    merged = TipsModel.from_pretrained(final).eval()
    adapted = PeftModel.from_pretrained(TipsModel.from_pretrained(base_dir), final / "adapter").eval()
    with torch.no_grad():
        a = merged.get_image_features(pixel_values=batch["pixel_values"]).synthetic_embeds
        b = adapted.get_image_features(pixel_values=batch["pixel_values"]).synthetic_embeds
        assert not torch.allclose(a, base.get_image_features(pixel_values=batch["pixel_values"]).synthetic_embeds)
    torch.testing.assert_close(a, b, atol=1e-5, rtol=0)  # W + BA folded: float32 rounding of O(1) features
    assert TipsProcessor.from_pretrained(final).image_processor.size == {"height": 56, "width": 56}
