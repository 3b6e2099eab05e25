"""End-to-end pretraining runs (subprocesses, micro model): exact resume after SIGKILL (mid-run and mid-checkpoint
write) and 2 processes == 1 process on the same global batch."""

import json
import os
import signal
import subprocess
import sys

import pytest
import torch
from conftest import ROOT
from safetensors.torch import load_file

MICRO = """
model:
  vision: {hidden_size: 32, num_hidden_layers: 2, num_attention_heads: 2, intermediate_size: 64, image_size: 56}
  text: {hidden_size: 32, num_hidden_layers: 2, num_attention_heads: 2, intermediate_size: 64}
data: {scene_image_size: 56, global_size: 56, local_size: 28, num_examples: 64, num_local_crops: 2}
objective: {head_prototypes: 32, patch_prototypes: 32, head_hidden_dim: 32, head_bottleneck_dim: 16}
optim: {warmup_steps: 2}
training: {max_steps: 6, batch_size: 8, logging_steps: 1, save_steps: 2, keep_last: 2, report_to: none,
           progress_bar: false}
eval: {num_examples: 0}
"""
SCRIPT = str(ROOT / "training" / "pretrain.py")


@pytest.fixture(scope="module")
def micro_config(tmp_path_factory):
    path = tmp_path_factory.mktemp("micro") / "micro.yaml"
    path.write_text(MICRO)
    return path


def _env(**extra):
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")
    env.pop("TIPS_HF_FAULT", None)
    env.update(extra)
    return env


def _pretrain(config, output, *args, env=None, launcher=None):
    command = (launcher or [sys.executable]) + [SCRIPT, "--config", str(config), "--output_dir", str(output), *args]
    return subprocess.run(command, env=env or _env(), capture_output=True, text=True, timeout=600, cwd=ROOT)


def _losses(output):
    records = [json.loads(line) for line in (output / "metrics.jsonl").read_text().splitlines()]
    return [(r["step"], r["loss"]) for r in records if "loss" in r]


def _assert_same_weights(want_output, got_output, name="final/model.safetensors"):
    """The weights file `name` of two runs holds the same tensors, bit for bit (exact resume)."""
    want, got = load_file(want_output / name), load_file(got_output / name)
    assert want.keys() == got.keys(), name
    for key in want:
        assert torch.equal(want[key], got[key]), (name, key)


@pytest.fixture(scope="module")
def uninterrupted(micro_config, tmp_path_factory):
    output = tmp_path_factory.mktemp("runs") / "uninterrupted"
    run = _pretrain(micro_config, output)
    assert run.returncode == 0, run.stderr[-3000:]
    return output


@pytest.mark.parametrize("fault", ["step:3", "checkpoint:4"])
def test_sigkill_then_resume_equals_uninterrupted(fault, micro_config, uninterrupted, tmp_path):
    output = tmp_path / "run"
    crashed = _pretrain(micro_config, output, env=_env(TIPS_HF_FAULT=fault))
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr[-2000:]
    assert (output / "checkpoint-2" / "COMPLETE").is_file()
    assert not (output / "final").exists()
    if fault.startswith("checkpoint"):
        # killed while writing checkpoint-4: only its staging folder exists, the previous checkpoint is intact
        assert (output / ".checkpoint-4.tmp").is_dir() and not (output / "checkpoint-4").exists()
    resumed = _pretrain(micro_config, output, "--resume_from_checkpoint", "latest")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    for name in ("checkpoint-6/model.safetensors", "final/model.safetensors"):
        _assert_same_weights(uninterrupted, output, name)
    assert _losses(output) == _losses(uninterrupted)  # every step logged once, with the same loss
    assert sorted(p.name for p in output.glob("checkpoint-*")) == ["checkpoint-4", "checkpoint-6"]  # keep_last=2


def test_resume_refuses_incomplete_checkpoint(micro_config, tmp_path):
    (tmp_path / "checkpoint-9").mkdir(parents=True)
    run = _pretrain(micro_config, tmp_path / "out", "--resume_from_checkpoint", str(tmp_path / "checkpoint-9"))
    assert run.returncode != 0 and "not a complete tips-hf checkpoint" in run.stderr


def _two_processes(port: int) -> list[str]:
    return [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
            str(ROOT / "training" / "accelerate_configs" / "cpu-2proc.yaml"), "--main_process_port", str(port)]


@pytest.fixture(scope="module")
def two_processes_ddp(micro_config, tmp_path_factory):
    output = tmp_path_factory.mktemp("runs") / "two"
    run = _pretrain(micro_config, output, "training.batch_size=4", launcher=_two_processes(29517))
    assert run.returncode == 0, run.stderr[-3000:]
    return output


def test_two_processes_equal_one(micro_config, uninterrupted, two_processes_ddp):
    output = two_processes_ddp
    one, two = _losses(uninterrupted), _losses(output)
    assert [s for s, _ in one] == [s for s, _ in two] == list(range(1, 7))
    for (_, a), (_, b) in zip(one, two):
        assert abs(a - b) <= 1e-5 * abs(a), (a, b)
    want = load_file(uninterrupted / "checkpoint-6" / "model.safetensors")
    got = load_file(output / "checkpoint-6" / "model.safetensors")
    for key in want:
        torch.testing.assert_close(got[key], want[key], atol=1e-5, rtol=1e-4, msg=key)


def test_final_export_loads_and_metrics_logged(uninterrupted):
    from tips_hf import TipsModel, TipsProcessor

    model = TipsModel.from_pretrained(uninterrupted / "final")
    processor = TipsProcessor.from_pretrained(uninterrupted / "final")
    assert model.config.vision_config.hidden_size == 32 and processor.tokenizer.pad_token_id == 0
    assert not any(k.startswith("teacher") for k in load_file(uninterrupted / "final" / "model.safetensors"))
    records = [json.loads(line) for line in (uninterrupted / "metrics.jsonl").read_text().splitlines()]
    step = next(r for r in records if r.get("step") == 3 and "loss" in r)
    for key in ("clip/alt_text_loss", "clip/synthetic_loss", "distill", "mask", "lr", "teacher_momentum",
                "teacher_temperature", "temperature/alt_text", "images_per_s", "data_wait_s", "skipped_images"):
        assert key in step, key
    assert records[-1]["event"] == "end"


@pytest.mark.parametrize("processes", [1, 2])
def test_streaming_resume_after_unreadable_images_is_exact(processes, tmp_path):
    """A streamed source with corrupt images: a run killed after step 5 and resumed from checkpoint-4, in the stream's
    second pass, ends with the uninterrupted run's weights (checkpoints record each process's pass and rows read)."""
    import io

    import datasets
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    rows = []
    for i in range(20):
        buffer = io.BytesIO()
        Image.fromarray(rng.integers(0, 255, (56, 56, 3), dtype=np.uint8)).save(buffer, format="PNG")
        image = b"corrupt" if i in (3, 9, 17) else buffer.getvalue()
        rows.append({"img": {"bytes": image, "path": None}, "t": f"alt text {i}", "s": [f"a dense caption {i}"]})
    features = datasets.Features({"img": datasets.Image(), "t": datasets.Value("string"),
                                  "s": datasets.Sequence(datasets.Value("string"))})
    datasets.Dataset.from_list(rows, features=features).to_parquet(tmp_path / "d.parquet")
    config = tmp_path / "stream.yaml"
    config.write_text(MICRO.replace("data: {", "data: {source: parquet, streaming: true, image_column: img, "
                                    f"alt_text_column: t, synthetic_columns: [s], path: '{tmp_path / 'd.parquet'}', ")
                      )  # 6 steps × 8 = 48 samples from 17 readable rows a pass: three passes
    args, launcher = [], None
    if processes == 2:  # each process reads every other row: its own share, with its own resume point
        args = ["training.batch_size=4"]
        launcher = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
                    str(ROOT / "training" / "accelerate_configs" / "cpu-2proc.yaml"), "--main_process_port", "29518"]
    full = _pretrain(config, tmp_path / "full", *args, launcher=launcher)
    assert full.returncode == 0, full.stderr[-3000:]
    crashed = _pretrain(config, tmp_path / "run", *args, env=_env(TIPS_HF_FAULT="step:5"), launcher=launcher)
    assert crashed.returncode != 0, crashed.stderr[-2000:]
    state = json.loads((tmp_path / "run" / "checkpoint-4" / "trainer_state.json").read_text())
    # per process, per DataLoader worker: [pass, rows read in it, samples yielded]
    if processes == 1:  # 32 samples = 17 in pass 0, 15 in pass 1 (+3 unreadable rows)
        assert state["stream_positions"] == [[[1, 15 + 3, 32]]]
    else:  # 16 samples each from half of every (reshuffled) pass: both processes are in their second pass
        assert [[epoch for epoch, _, _ in worker] for worker in state["stream_positions"]] == [[1], [1]]
        assert [[n for _, _, n in worker] for worker in state["stream_positions"]] == [[16], [16]]
        assert sum(rows for worker in state["stream_positions"] for _, rows, _ in worker) > 2 * 16 - 20
    resumed = _pretrain(config, tmp_path / "run", *args, "--resume_from_checkpoint", "latest", launcher=launcher)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    _assert_same_weights(tmp_path / "full", tmp_path / "run")
    assert _losses(tmp_path / "run") == _losses(tmp_path / "full")


def test_next_stage_starts_from_previous_heads(micro_config, uninterrupted, tmp_path):
    """`model.init_heads_from` (e.g. the 448-px stage after the 224-px run) carries the self-distillation heads, the
    teacher and the loss centres of a checkpoint; the student comes from `model.init_from`."""
    from tips_hf import TipsModel
    from tips_hf.pretraining import load_config
    from tips_hf.pretraining.checkpointing import load_module_state
    from tips_hf.pretraining.meta_arch import TipsPretrainingModel

    config = load_config(micro_config, [f"model.init_from={uninterrupted / 'final'}"])
    module = TipsPretrainingModel(TipsModel.from_pretrained(uninterrupted / "final"), config)
    saved = load_file(uninterrupted / "checkpoint-6" / "model.safetensors")
    loaded = load_module_state(module, uninterrupted / "checkpoint-6")
    assert {k.split(".")[0] for k in loaded} >= {"teacher_cls_head", "student_patch_head", "dino_loss"}
    state = module.state_dict()
    for key in loaded:
        assert torch.equal(state[key], saved[key]), key
    with pytest.raises(ValueError, match="not a complete tips-hf checkpoint"):
        load_module_state(module, uninterrupted / "final")
    run = _pretrain(micro_config, tmp_path / "stage2", "--max_steps", "1", f"model.init_from={uninterrupted / 'final'}",
                    f"model.init_heads_from={uninterrupted / 'checkpoint-6'}")
    assert run.returncode == 0, run.stderr[-3000:]
    assert f"loaded {len(loaded)} head/teacher/centre tensors" in run.stderr


def test_sigterm_checkpoints_the_step_then_resume_equals_uninterrupted(micro_config, uninterrupted, tmp_path):
    """A preemption notice (SIGTERM after step 3, between the step-2 and step-4 checkpoints) ends the run with a
    complete checkpoint-3 and exit code 128 + 15 instead of losing step 3; resuming ends bit-equal to the
    uninterrupted run."""
    output = tmp_path / "run"
    stopped = _pretrain(micro_config, output, env=_env(TIPS_HF_FAULT="sigterm:3"))
    assert stopped.returncode == 128 + signal.SIGTERM, stopped.stderr[-3000:]
    assert "SIGTERM received: stopped after step 3 with checkpoint-3" in stopped.stderr
    assert (output / "checkpoint-3" / "COMPLETE").is_file() and not (output / "final").exists()
    records = [json.loads(line) for line in (output / "metrics.jsonl").read_text().splitlines()]
    assert records[-1] == {"event": "stopped", "step": 3, "signal": "SIGTERM"}
    resumed = _pretrain(micro_config, output, "--resume_from_checkpoint", "latest")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert _losses(output) == _losses(uninterrupted)
    _assert_same_weights(uninterrupted, output)
    off = _pretrain(micro_config, tmp_path / "off", "training.save_on_signal=false", env=_env(TIPS_HF_FAULT="sigterm:3"))
    assert off.returncode == -signal.SIGTERM and not (tmp_path / "off" / "checkpoint-3").exists()


def test_sigterm_to_one_of_two_processes_stops_both_at_the_same_step(micro_config, two_processes_ddp, tmp_path):
    """Only rank 0 gets the notice: the ranks agree (one all-reduce per step), both stop after step 3 with one
    complete checkpoint (no rank left waiting in a collective), and two processes resume to the uninterrupted
    2-process run's weights, bit for bit."""
    output = tmp_path / "run"
    stopped = _pretrain(micro_config, output, "training.batch_size=4", env=_env(TIPS_HF_FAULT="sigterm:3"),
                        launcher=_two_processes(29522))
    assert stopped.returncode != 0 and "stopped after step 3 with checkpoint-3" in stopped.stderr, stopped.stderr[-3000:]
    assert (output / "checkpoint-3" / "COMPLETE").is_file() and not (output / "final").exists()
    resumed = _pretrain(micro_config, output, "training.batch_size=4", "--resume_from_checkpoint", "latest",
                        launcher=_two_processes(29523))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    _assert_same_weights(two_processes_ddp, output)


def test_launcher_precision_that_the_config_overrides_is_reported(micro_config, tmp_path, monkeypatch):
    """`accelerate launch` with a bf16 config file exports ACCELERATE_MIXED_PRECISION=bf16; the training config's
    training.mixed_precision (here the default "no") wins, and the run says so instead of silently training in
    float32. Agreeing values, or no launcher, say nothing."""
    from tips_hf.pretraining.config import launcher_precision_conflict

    run = _pretrain(micro_config, tmp_path / "run", "--max_steps", "1", env=_env(ACCELERATE_MIXED_PRECISION="bf16"))
    assert run.returncode == 0, run.stderr[-3000:]
    assert "training.mixed_precision=no (the training config) is used, not the accelerate launcher's " \
           "mixed_precision=bf16" in run.stderr
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "bf16")
    assert launcher_precision_conflict("bf16") is None
    assert "training.mixed_precision=fp16" in launcher_precision_conflict("fp16")
    monkeypatch.delenv("ACCELERATE_MIXED_PRECISION")
    assert launcher_precision_conflict("no") is None


def test_fsdp_in_one_plain_process_equals_default(micro_config, uninterrupted, tmp_path):
    """training.distributed=fsdp under plain `python` (no launcher, so no RANK / MASTER_ADDR) makes its own
    one-process group instead of failing inside torch.distributed; it trains what the default run trains (1e-5:
    FSDP's flattened buffers may sum in another order)."""
    run = _pretrain(micro_config, tmp_path / "fsdp", "training.distributed=fsdp")
    assert run.returncode == 0, run.stderr[-3000:]
    for (step, a), (_, b) in zip(_losses(uninterrupted), _losses(tmp_path / "fsdp"), strict=True):
        assert abs(a - b) <= 1e-5 * abs(a), (step, a, b)
    want, got = load_file(uninterrupted / "final" / "model.safetensors"), load_file(tmp_path / "fsdp" / "final" /
                                                                                   "model.safetensors")
    assert want.keys() == got.keys()
    for key in want:
        torch.testing.assert_close(got[key], want[key], atol=1e-5, rtol=1e-4, msg=key)


@pytest.mark.slow  # three 2-process launches, ~1.5 min on 2 cores
def test_fsdp_equals_ddp_and_resumes_after_sigkill(micro_config, two_processes_ddp, tmp_path):
    """training.distributed=fsdp (FSDP2, gloo, 2 processes) against DDP on the same global batch: the same logged
    losses (1e-4 relative: reduce-scatter and all-reduce may sum in another order) and final weights; a run
    SIGKILLed after its step-2 checkpoint (sharded, torch.distributed.checkpoint) and resumed ends with the
    uninterrupted FSDP run's weights (1e-6); final/ is a full TipsModel; its DCP checkpoint seeds a next stage."""
    from tips_hf import TipsModel
    from tips_hf.pretraining import load_config
    from tips_hf.pretraining.checkpointing import load_module_state
    from tips_hf.pretraining.meta_arch import TipsPretrainingModel

    args = ["training.batch_size=4", "training.distributed=fsdp"]
    full = _pretrain(micro_config, tmp_path / "full", *args, launcher=_two_processes(29519))
    assert full.returncode == 0, full.stderr[-3000:]
    assert (tmp_path / "full" / "checkpoint-6" / "dcp" / ".metadata").is_file()
    assert not (tmp_path / "full" / "checkpoint-6" / "model.safetensors").exists()
    for (step, a), (_, b) in zip(_losses(two_processes_ddp), _losses(tmp_path / "full"), strict=True):
        assert abs(a - b) <= 1e-4 * abs(a), (step, a, b)
    want = load_file(two_processes_ddp / "final" / "model.safetensors")
    fsdp_final = load_file(tmp_path / "full" / "final" / "model.safetensors")
    assert want.keys() == fsdp_final.keys()
    for key in want:
        torch.testing.assert_close(fsdp_final[key], want[key], atol=1e-5, rtol=1e-4, msg=key)

    crashed = _pretrain(micro_config, tmp_path / "run", *args, env=_env(TIPS_HF_FAULT="step:3"),
                        launcher=_two_processes(29520))
    assert crashed.returncode != 0
    assert (tmp_path / "run" / "checkpoint-2" / "COMPLETE").is_file() and not (tmp_path / "run" / "final").exists()
    refused = _pretrain(micro_config, tmp_path / "run", "--resume_from_checkpoint", "latest", "--max_steps", "3")
    assert refused.returncode != 0 and "training.distributed=fsdp" in refused.stderr  # a DDP resume is refused
    resumed = _pretrain(micro_config, tmp_path / "run", *args, "--resume_from_checkpoint", "latest",
                        launcher=_two_processes(29521))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    got = load_file(tmp_path / "run" / "final" / "model.safetensors")
    for key in fsdp_final:
        torch.testing.assert_close(got[key], fsdp_final[key], atol=1e-6, rtol=0, msg=key)
    assert _losses(tmp_path / "run") == _losses(tmp_path / "full")

    model = TipsModel.from_pretrained(tmp_path / "full" / "final")
    assert model.config.vision_config.hidden_size == 32
    config = load_config(micro_config)
    module = TipsPretrainingModel(model, config)
    loaded = load_module_state(module, tmp_path / "full" / "checkpoint-6")  # read from the sharded checkpoint
    ddp_heads = load_file(two_processes_ddp / "checkpoint-6" / "model.safetensors")
    assert "teacher_patch_head.prototypes.weight" in loaded
    for key in loaded:
        torch.testing.assert_close(module.state_dict()[key], ddp_heads[key], atol=1e-5, rtol=1e-4, msg=key)


@pytest.mark.slow  # three runs with DataLoader workers, ~1 min on 2 idle cores
def test_streaming_with_two_workers_resumes_exactly(tmp_path):
    """data.num_workers=2 on a stream of 3 shards (uneven over the 2 worker streams) with an unreadable row: a run
    SIGKILLed after step 3 and resumed from checkpoint-2 (per-worker positions) ends bit-equal to the uninterrupted
    run."""
    import io

    import datasets
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    features = datasets.Features({"img": datasets.Image(), "t": datasets.Value("string"),
                                  "s": datasets.Sequence(datasets.Value("string"))})
    for f in range(3):
        rows = []
        for i in range(7):
            buffer = io.BytesIO()
            Image.fromarray(rng.integers(0, 255, (56, 56, 3), dtype=np.uint8)).save(buffer, format="PNG")
            image = b"bad" if (f, i) == (1, 2) else buffer.getvalue()
            rows.append({"img": {"bytes": image, "path": None}, "t": f"alt {f}-{i}", "s": [f"caption {f}-{i}"]})
        datasets.Dataset.from_list(rows, features=features).to_parquet(tmp_path / f"d{f}.parquet")
    config = tmp_path / "stream.yaml"
    config.write_text(MICRO.replace("data: {", "data: {source: parquet, streaming: true, image_column: img, "
                                    f"alt_text_column: t, synthetic_columns: [s], path: '{tmp_path}/d*.parquet', "
                                    "num_workers: 2, ").replace("batch_size: 8", "batch_size: 3"))
    full = _pretrain(config, tmp_path / "full")
    assert full.returncode == 0, full.stderr[-3000:]
    crashed = _pretrain(config, tmp_path / "run", env=_env(TIPS_HF_FAULT="step:3"))
    assert crashed.returncode == -signal.SIGKILL
    state = json.loads((tmp_path / "run" / "checkpoint-2" / "trainer_state.json").read_text())
    assert [[n for _, _, n in worker] for worker in state["stream_positions"]] == [[3, 3]]  # one batch per worker
    resumed = _pretrain(config, tmp_path / "run", "--resume_from_checkpoint", "latest")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    _assert_same_weights(tmp_path / "full", tmp_path / "run")
    assert _losses(tmp_path / "run") == _losses(tmp_path / "full")


@pytest.mark.slow  # two more runs, ~40 s on 2 idle cores
def test_resume_is_exact_with_drop_path(micro_config, tmp_path):
    """With drop-path (global RNG draws every step), a run SIGKILLed after step 3 and resumed from checkpoint-2 ends
    bit-equal to the uninterrupted run: nothing else (e.g. the DataLoader's seed) draws from the restored RNG."""
    args = ["model.drop_path_rate=0.3"]
    full = _pretrain(micro_config, tmp_path / "full", *args)
    assert full.returncode == 0, full.stderr[-3000:]
    crashed = _pretrain(micro_config, tmp_path / "run", *args, env=_env(TIPS_HF_FAULT="step:3"))
    assert crashed.returncode == -signal.SIGKILL
    resumed = _pretrain(micro_config, tmp_path / "run", "--resume_from_checkpoint", "latest", *args)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    _assert_same_weights(tmp_path / "full", tmp_path / "run")
