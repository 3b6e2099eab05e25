"""What a new user meets in the first hour (issue 28, item 5): a model path that an earlier run has not written yet is
a named error in every loader; a command that needs an optional package says which extra brings it; re-publishing
deletes stale shards; empty captions are counted; the Trainer's contrastive loss takes its negatives from every
process (2 processes == 1, gradients included)."""

from __future__ import annotations

import fnmatch
import json
import math
import os
import sys
import tempfile

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from conftest import ROOT, TINY_TOWER, save_tiny_model

from tips_hf import TipsConfig, TipsModel
from tips_hf._extras import EXTRA_OF
from tips_hf._paths import MissingModelError, check_model_path, looks_like_hub_id
from tips_hf.training_utils import global_contrastive_loss


def _script(name: str):
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, ROOT / "training" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


def _one_line_error(capsys, prog: str) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err and f"{prog}: error: " in err, err
    return err.split(f"{prog}: error: ", 1)[1]


# ---------------------------------------------------------------------------------------------------- model paths
def test_a_missing_base_model_before_the_main_job_is_named(tmp_path, monkeypatch, capsys):
    """The README's fine-tuning command run before the main job (outputs/tiny-cpu/final not written yet)."""
    monkeypatch.chdir(tmp_path)
    config = ROOT / "training" / "configs" / "finetune_segmentation_tiny.yaml"
    assert _script("finetune")(["--config", str(config)]) == 2
    message = _one_line_error(capsys, "finetune.py")
    assert message.startswith(f"model.base (set in {config}): outputs/tiny-cpu/final does not exist (no such local "
                              "folder, and not a Hub model id); it is written by an earlier run (the main job, "
                              "`accelerate launch training/pretrain.py --config training/configs/tiny-cpu.yaml`")
    assert "or pass a Hub model id" in message and not (tmp_path / "outputs").exists()  # nothing written


@pytest.mark.parametrize(
    "script, override, message",
    [
        ("pretrain", "model.init_from=runs/stage1/final", "model.init_from (set in command line): runs/stage1/final "
                                                          "does not exist (no such local folder, and not a Hub"),
        ("pretrain", "objective.distillation_teacher=./teacher", "objective.distillation_teacher (set in command "
                                                                 "line): ./teacher does not exist"),
        ("pretrain", "model.init_heads_from=outputs/b14-v2/checkpoint-90000",
         "model.init_heads_from (set in command line): outputs/b14-v2/checkpoint-90000 does not exist (no such local "
         "folder); it is a checkpoint-<step> folder of an earlier run"),
        ("finetune", "model.base=/nowhere/final", "model.base (set in command line): /nowhere/final does not exist"),
    ],
)
def test_every_training_model_path_is_checked(script, override, message, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    config = "tiny-cpu.yaml" if script == "pretrain" else "finetune_depth_tiny.yaml"
    argv = ["--config", str(ROOT / "training" / "configs" / config), f"--output_dir={tmp_path / 'out'}", override]
    if "distillation" in override:
        argv += ["data.pixel_mean=null", "data.pixel_std=null"]
    assert _script(script)(argv) == 2
    assert _one_line_error(capsys, f"{script}.py").startswith(message)
    assert not (tmp_path / "out").exists()


def test_hub_ids_pass_and_paths_do_not(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for hub_id in ("google/tips-v2-b14", "gpt2", "my-org/tips.tiny_v1"):
        assert looks_like_hub_id(hub_id) and check_model_path(hub_id, "x") == hub_id
    for path in ("outputs/tiny-cpu/final", "./final", "/abs/final", "~/final", "a\\b", "a/b/c"):
        assert not looks_like_hub_id(path), path
    (tmp_path / "outputs").mkdir()  # `outputs/final` reads as a Hub id, unless its first folder is here
    assert not looks_like_hub_id("outputs/final") and looks_like_hub_id("elsewhere/final")
    assert check_model_path(tmp_path / "outputs", "x") == str(tmp_path / "outputs")
    with pytest.raises(MissingModelError, match=r"^what: outputs/final does not exist .*; run it first\.$"):
        check_model_path("outputs/final", "what", "run it first")


def test_load_dense_names_a_missing_base(tmp_path, monkeypatch):
    from tips_hf.finetuning import load_dense

    monkeypatch.chdir(tmp_path)  # a relative base; the repository root holds outputs/tiny-cpu once the main job ran
    (tmp_path / "dense_config.json").write_text(json.dumps({"base": "outputs/tiny-cpu/final", "head": "linear",
                                                            "task": "segmentation", "num_classes": 3}))
    with pytest.raises(MissingModelError, match=r"dense_config.json: base: outputs/tiny-cpu/final does not exist"):
        load_dense(tmp_path)


def test_eval_and_caption_name_a_missing_model(tmp_path, monkeypatch, capsys):
    from tips_hf.captioning.cli import main as caption
    from tips_hf.evaluation import main as evaluate

    monkeypatch.chdir(tmp_path)
    assert evaluate(["--model", "outputs/tiny-cpu/final", "--task", "retrieval", "--data", "x"]) == 2
    assert _one_line_error(capsys, "tips-eval").startswith(
        "--model: outputs/tiny-cpu/final does not exist (no such local folder, and not a Hub model id); pass a folder")
    assert caption(["--model", "./captioner", "--data", "x", "--output", str(tmp_path / "o")]) == 2
    assert _one_line_error(capsys, "tips-caption").startswith("--model: ./captioner does not exist")


# ------------------------------------------------------------------------------------------------ optional packages
def test_missing_packages_name_their_extra(tmp_path, monkeypatch, capsys):
    """tips-caption without accelerate, tips-eval without datasets: one line naming the extra, exit 2."""
    from tips_hf.captioning.cli import main as caption
    from tips_hf.evaluation import main as evaluate

    model = save_tiny_model(tmp_path / "model", 56, text_layers=1)
    monkeypatch.setitem(sys.modules, "accelerate", None)  # `import accelerate` now fails as if not installed
    assert caption(["--model", str(model), "--data", "x", "--output", str(tmp_path / "o")]) == 2
    assert _one_line_error(capsys, "tips-caption") == (
        "this needs accelerate, which is not installed: pip install 'tips-hf[train]'\n")
    monkeypatch.setitem(sys.modules, "datasets", None)
    assert evaluate(["--model", str(model), "--task", "retrieval", "--data", "nlphuji/flickr30k", "--no-progress"]) == 2
    assert _one_line_error(capsys, "tips-eval") == (
        "this needs datasets, which is not installed: pip install 'tips-hf[train]'\n")


def test_extras_match_pyproject():
    """Each optional package that a message names is declared in that extra; playwright is a dev tool only."""
    tomllib = pytest.importorskip("tomllib", reason="tomllib is in the standard library from Python 3.11")
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    pip_name = {"yaml": "pyyaml"}
    for module, extra in EXTRA_OF.items():
        names = [requirement.split(">")[0].split("=")[0].split("[")[0].strip().lower().replace("-", "_")
                 for requirement in extras[extra]]
        assert pip_name.get(module, module) in names, (module, extra)
    assert not any("playwright" in requirement for requirement in extras["demo"])
    assert any("playwright" in requirement for requirement in extras["dev"])
    imported = {"onnx_ir"} & {line.split()[1] for line in (ROOT / "tips_hf/export/exporters.py").read_text()
                              .splitlines() if line.strip().startswith("import ")}
    assert imported == {"onnx_ir"} and EXTRA_OF["onnx_ir"] == "export"


# ------------------------------------------------------------------------------------------------------ publishing
def test_republishing_deletes_stale_shards_only(verified_model):
    """A repository first pushed in 3 shards, re-pushed in another count: upload_folder gets delete_patterns that
    remove the old shards and index (huggingface_hub deletes matching remote files it does not upload), and leave
    the card, the processor files and anything else of the repository alone."""
    from huggingface_hub.utils import filter_repo_objects
    from publishing_helpers import REPO, RecordingApi

    from tips_hf.hub import publish

    api = RecordingApi()
    publish(verified_model, REPO, token="hf_test", max_shard_size="1MB", api=api)
    upload = api.calls[-1][2]
    uploaded = {name for name, _ in api.uploaded}
    assert "model.safetensors.index.json" in uploaded and "model-00001-of-00003.safetensors" in uploaded
    remote = ["model-00001-of-00005.safetensors", "model-00005-of-00005.safetensors", "model.safetensors",
              "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model-00001-of-00002.bin",
              "pytorch_model.bin.index.json", "README.md", ".gitattributes", "tokenizer.model", "parity.json",
              "notes/extra.safetensors", "onnx/model.onnx"]
    matched = set(filter_repo_objects(remote, allow_patterns=upload["delete_patterns"]))
    deleted = matched - uploaded - {".gitattributes"}
    assert deleted == {"model-00001-of-00005.safetensors", "model-00005-of-00005.safetensors", "model.safetensors",
                       "pytorch_model.bin", "pytorch_model-00001-of-00002.bin", "pytorch_model.bin.index.json"}
    assert not any(fnmatch.fnmatch(name, pattern) for name in uploaded - {n for n in uploaded if "model" in n}
                   for pattern in upload["delete_patterns"])


# -------------------------------------------------------------------------------------------------------- captions
def test_empty_captions_are_counted_and_min_new_tokens_prevents_them(tmp_path, caplog):
    """A captioner that ends at once (its end token always wins) writes empty captions: they are counted, in the
    result, the card and a warning; `min_new_tokens` holds every caption to that many tokens."""
    from PIL import Image

    from tips_hf.captioning import Captioner, build_tasks, caption_dataset, tiny

    captioner = Captioner(tiny.tiny_blip(tmp_path / "blip"))
    bias = captioner.model.text_decoder.cls.predictions.bias
    with torch.no_grad():
        bias[3] += 100.0  # [SEP], the end token: generation stops at once
        bias[[0, 1, 2, 4]] -= 100.0  # the other special tokens: never generated (they would decode to nothing)
    images = tmp_path / "images"
    images.mkdir()
    for i in range(5):
        Image.new("RGB", (32, 32), (40 * i, 0, 0)).save(images / f"{i}.png")
    common = dict(presets=["short", "detailed"], max_new_tokens=4, batch_size=2, shard_size=3, progress=False)
    with caplog.at_level("WARNING", logger="tips_hf.captioning.run"):
        result = caption_dataset(captioner, str(images), tmp_path / "out", **common)
    # the short captions: empty; the detailed preset's own minimum (20 new tokens, clamped to 4) kept those
    assert (result.captioned, result.empty_captions) == (5, 5)
    assert "5 of 10 captions are empty: the captioner emitted only special tokens" in caplog.text
    assert "--min-new-tokens" in caplog.text
    assert json.loads((tmp_path / "out" / "caption_stats.json").read_text())["train"]["empty_captions"] == 5
    assert "5 captions empty" in (tmp_path / "out" / "README.md").read_text()

    caplog.clear()
    result = caption_dataset(captioner, str(images), tmp_path / "out-min", min_new_tokens=3, **common)
    assert result.empty_captions == 0 and "empty" not in caplog.text
    import datasets

    rows = datasets.load_dataset(str(tmp_path / "out-min"), split="train", cache_dir=str(tmp_path / "cache"))
    for column in ("synthetic_caption_short", "synthetic_caption_detailed"):
        assert all(len(text.split()) == 3 for text in rows[column]), rows[column]  # 3 words, then the end token
    # the option reaches every task, clamped to --max-new-tokens (which wins), replacing a preset's own minimum
    short, detailed = build_tasks("prompt-free", ["short", "detailed"], max_new_tokens=4, min_new_tokens=6)
    assert short.generate_kwargs == {"min_new_tokens": 4} and detailed.generate_kwargs["min_new_tokens"] == 4
    [prompted] = build_tasks("chat", prompt="Describe.", min_new_tokens=2)
    assert prompted.generate_kwargs == {"min_new_tokens": 2} and prompted.max_new_tokens == 40
    assert build_tasks("prompt-free", ["detailed"])[0].generate_kwargs["min_new_tokens"] == 20  # the preset's


# ---------------------------------------------------------------------------------------- Trainer: global negatives
def _contrastive_model() -> TipsModel:
    torch.manual_seed(0)
    text = {**TINY_TOWER, "vocab_size": 50, "max_position_embeddings": 8}
    return TipsModel(TipsConfig(vision_config={**TINY_TOWER, "image_size": 28}, text_config=text))


def _contrastive_batch() -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    return {"pixel_values": torch.rand(8, 3, 28, 28, generator=generator),
            "input_ids": torch.randint(1, 50, (8, 8), generator=generator),
            "synthetic_input_ids": torch.randint(1, 50, (8, 8), generator=generator)}


def _step(model: torch.nn.Module, batch: dict[str, torch.Tensor], unwrapped: TipsModel):
    """What TipsContrastiveTrainer.compute_loss does (then backward): the loss and every parameter's gradient."""
    loss = global_contrastive_loss(model(**batch), unwrapped.temperature)
    loss.backward()
    return loss.detach(), {name: p.grad.clone() for name, p in unwrapped.named_parameters() if p.grad is not None}


def _ddp_worker(rank: int, world_size: int, init_file: str, results) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    try:
        torch.set_num_threads(1)
        model = _contrastive_model()
        ddp = torch.nn.parallel.DistributedDataParallel(model, find_unused_parameters=True)
        half = {key: value[rank * 4 : rank * 4 + 4] for key, value in _contrastive_batch().items()}
        loss, grads = _step(ddp, half, model)  # DDP averages the gradients over the processes, as under Trainer
        dist.all_reduce(loss)
        results[rank] = (loss.item() / world_size, grads)
    finally:
        dist.destroy_process_group()


def test_trainer_contrastive_loss_two_processes_equal_one(tmp_path):
    """Two processes of 4 rows each (DDP, gloo) give the loss and every gradient of one process on the 8 rows; in one
    process the loss is the model's own return_loss value. With in-batch negatives (the model's loss) the two
    processes would score 2 x (4 x 4) pairs instead of 8 x 8."""
    manager = mp.Manager()
    results = manager.dict()
    init_file = os.path.join(tempfile.mkdtemp(dir=tmp_path), "store")
    mp.spawn(_ddp_worker, args=(2, init_file, results), nprocs=2, join=True)

    model = _contrastive_model()
    batch = _contrastive_batch()
    loss, grads = _step(model, batch, model)
    with torch.no_grad():
        assert math.isclose(loss.item(), model(**batch, return_loss=True).loss.item(), rel_tol=1e-6)
        local = sum(model(**{k: v[r * 4 : r * 4 + 4] for k, v in batch.items()}, return_loss=True).loss
                    for r in (0, 1)) / 2
    assert abs(local.item() - loss.item()) > 0.1  # in-batch negatives: another objective
    assert len(grads) > 20 and "log_temperature" in grads
    for rank in (0, 1):
        value, rank_grads = results[rank]
        assert math.isclose(value, loss.item(), rel_tol=1e-5)
        assert rank_grads.keys() == grads.keys()
        for name, grad in grads.items():  # float32 sums in another order: measured 6.0e-7 x each gradient's scale
            torch.testing.assert_close(rank_grads[name], grad, atol=2e-6 * float(grad.abs().max()), rtol=0, msg=name)


def test_contrastive_trainer_trains_and_evaluates(tmp_path):
    """TipsContrastiveTrainer runs as Trainer does (one process: the same first loss as the model's return_loss) and
    its evaluation keeps the outputs ContrastiveRetrievalMetrics reads."""
    from transformers import Trainer, TrainingArguments

    from tips_hf.training_utils import ContrastiveRetrievalMetrics, TipsContrastiveTrainer

    rows = [{key: value[i] for key, value in _contrastive_batch().items()} for i in range(8)]

    def collate(batch):
        return {**{key: torch.stack([row[key] for row in batch]) for key in batch[0]}, "return_loss": True}

    losses = {}
    for cls in (Trainer, TipsContrastiveTrainer):
        metrics = ContrastiveRetrievalMetrics(ks=(1,))
        args = TrainingArguments(str(tmp_path / cls.__name__), max_steps=2, per_device_train_batch_size=8,
                                 per_device_eval_batch_size=4, learning_rate=1e-3, logging_steps=1, report_to="none",
                                 remove_unused_columns=False, use_cpu=True, disable_tqdm=True, save_strategy="no")
        trainer = cls(_contrastive_model(), args, train_dataset=rows, eval_dataset=rows, data_collator=collate,
                      compute_metrics=metrics, preprocess_logits_for_metrics=metrics.preprocess_logits_for_metrics)
        trainer.train()
        scores = trainer.evaluate()
        assert "eval_alt_text_image_to_text_recall@1" in scores and math.isfinite(scores["eval_loss"])
        losses[cls.__name__] = [record["loss"] for record in trainer.state.log_history if "loss" in record]
    assert losses["TipsContrastiveTrainer"] == pytest.approx(losses["Trainer"], rel=1e-5)
