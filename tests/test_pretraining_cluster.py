"""Training on a cluster that changes under it (issue 27), on CPU with gloo over loopback: the fp16 loss scaler (scaled
backward, unscale before clipping, skipped overflow steps, its state in checkpoints; DDP and FSDP alike), resuming a
checkpoint on another number of processes (DDP and FSDP), torchrun restarting a worker group that lost a process,
a two-node launch simulated on one machine, and hybrid sharding (HSDP) on a 2 × 2 mesh.

The end-to-end runs use the micro model of test_pretraining_run.py and compare logged losses and weights with an
uninterrupted run: bit for bit where the processes compute the same sums (restarts, a two-node launch), within
1e-5 relative where only the reduction order differs (another process count, another sharding)."""

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
training: {max_steps: 6, batch_size: 8, logging_steps: 1, save_steps: 2, keep_last: 3, report_to: none,
           progress_bar: false}
eval: {num_examples: 0}
"""
SCRIPT = str(ROOT / "training" / "pretrain.py")
CPU_2PROC = str(ROOT / "training" / "accelerate_configs" / "cpu-2proc.yaml")
# the loss scaler of the fp16 runs: a scale that doubles after every finite step and overflows at 64 on steps 4 and 6
# of the micro run (measured), so that the scale, and which steps are skipped, depend on the restored scaler state
FP16 = ["training.mixed_precision=fp16", "training.loss_scaling={init_scale: 8, growth_interval: 1}"]


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


def _pretrain(config, output, *args, env=None, launcher=None, timeout=400):
    """Run pretrain.py (under `launcher`) in a session of its own: a run that hangs is killed with every worker."""
    command = (launcher or [sys.executable]) + [SCRIPT, "--config", str(config), "--output_dir", str(output), *args]
    process = subprocess.Popen(command, env=env or _env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               cwd=ROOT, start_new_session=True)
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        raise
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)


def _accelerate(port, processes=2, machines=1, rank=0):
    """`accelerate launch` of `processes` gloo CPU processes in all, on `machines` machines (this one is `rank`)."""
    return [sys.executable, "-m", "accelerate.commands.launch", "--config_file", CPU_2PROC, "--num_processes",
            str(processes), "--num_machines", str(machines), "--machine_rank", str(rank), "--main_process_ip",
            "127.0.0.1", "--main_process_port", str(port)]


def _records(output):
    return [json.loads(line) for line in (output / "metrics.jsonl").read_text().splitlines()]


def _losses(output):
    return {r["step"]: r["loss"] for r in _records(output) if "loss" in r}


def _assert_losses_close(want, got, steps, rtol=1e-5):
    for step in steps:
        assert abs(got[step] - want[step]) <= rtol * abs(want[step]), (step, want[step], got[step])


def _assert_same_weights(want_output, got_output, name="final/model.safetensors", atol=0.0, rtol=0.0):
    want, got = load_file(want_output / name), load_file(got_output / name)
    assert want.keys() == got.keys(), name
    for key in want:
        torch.testing.assert_close(got[key], want[key], atol=atol, rtol=rtol, msg=key)


# --------------------------------------------------------------------------------------------- fp16 loss scaling
IN_PROCESS = [
    "model.vision={hidden_size: 32, num_hidden_layers: 2, num_attention_heads: 2, intermediate_size: 64, image_size: 56}",
    "model.text={hidden_size: 32, num_hidden_layers: 2, num_attention_heads: 2, intermediate_size: 64}",
    "data.scene_image_size=56", "data.global_size=56", "data.local_size=28", "data.num_examples=16",
    "data.num_local_crops=2", "objective.head_prototypes=32", "objective.patch_prototypes=32",
    "objective.head_hidden_dim=32", "objective.head_bottleneck_dim=16", "optim.warmup_steps=0",
    "training.batch_size=4", "training.report_to=none", "training.progress_bar=false", "training.save_steps=0",
    "eval.num_examples=0",
]


def _trainer(output, *overrides):
    from tips_hf.pretraining import load_config
    from tips_hf.pretraining.trainer import Pretrainer

    return Pretrainer(load_config(None, [*IN_PROCESS, f"training.output_dir={output}", *overrides]))


def test_loss_scaler_unscales_before_clipping_skips_overflow_and_is_checkpointed(tmp_path):
    """The trainer's fp16 path, with float32 autocast so that the scaling itself is exact: a step under a loss scale
    of 2^10 logs the unscaled gradient norm (clipping sees true gradients: grad_clip 1 is active here) and leaves the
    weights bit-equal to an unscaled step; a scale that overflows skips the step (weights and AdamW state unchanged)
    and halves the scale; the scaler's state survives a checkpoint into an fp16 run (every field)."""
    from tips_hf.pretraining.schedules import step_values

    plain = _trainer(tmp_path / "plain", "optim.grad_clip=1.0")
    values = step_values(plain.config, 0)
    want = plain.train_step(values)
    scaled = _trainer(tmp_path / "scaled", "optim.grad_clip=1.0")
    scaled.scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10, growth_interval=1)
    got = scaled.train_step(values)
    assert float(want["grad_norm"]) > 1.0  # the clip is active
    assert torch.equal(got["grad_norm"], want["grad_norm"])
    for (name, a), b in zip(plain.unwrapped.named_parameters(), scaled.unwrapped.parameters(), strict=True):
        assert torch.equal(a, b), name
    assert scaled.scaler.get_scale() == 2.0**11  # one finite step with growth_interval 1

    scaled.scaler = torch.amp.GradScaler("cpu", init_scale=2.0**127, growth_interval=1)  # loss × 2^127 = inf
    before = [p.detach().clone() for p in scaled.params]  # the trained ones (the EMA teacher still follows)
    logs = scaled.train_step(step_values(scaled.config, 1))
    assert not torch.isfinite(logs["grad_norm"])
    for a, b in zip(before, scaled.params, strict=True):
        assert torch.equal(a, b.detach())
    assert {int(s["step"]) for s in scaled.optimizer.state.values()} == {1}  # AdamW did not step
    assert scaled.scaler.get_scale() == 2.0**126

    scaled.scaler.update(2.0**5)  # a state unlike a fresh scaler's (the tracker too)
    scaled.scaler._growth_tracker.fill_(3)
    scaled.state.step = 2
    scaled.save()
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state()  # accelerate keeps one precision per process
    try:
        resumed = _trainer(tmp_path / "scaled", "training.mixed_precision=fp16",
                           "training.resume_from_checkpoint=latest", "training.loss_scaling={growth_interval: 7}")
        assert resumed.scaler.state_dict() == scaled.scaler.state_dict()  # the saved growth_interval (1) included
        assert resumed.scaler.get_scale() == 32.0 and resumed.scaler._get_growth_tracker() == 3
    finally:
        AcceleratorState._reset_state()


def test_layout_checks_mesh_and_restart_rules(tmp_path, monkeypatch):
    """The pure rules: the HSDP mesh (from the launcher's processes per node or the config), the batch layout a
    resize must keep (the error names the training.batch_size that keeps it), a restarted worker group preferring
    the run's newest checkpoint, and fault injection limited to one rank and to the first attempt."""
    from types import SimpleNamespace

    from tips_hf.pretraining import checkpointing
    from tips_hf.pretraining.checkpointing import CheckpointMismatch, TrainerState, resolve_checkpoint
    from tips_hf.pretraining.trainer import check_resume_layout, hsdp_mesh_shape

    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    assert hsdp_mesh_shape(4) == (2, 2) and hsdp_mesh_shape(8) == (4, 2) and hsdp_mesh_shape(8, 4) == (2, 4)
    with pytest.raises(ValueError, match="training.hsdp_shard_size"):
        hsdp_mesh_shape(6, 4)

    written = TrainerState(step=2, processes=2, batch_size=4, gradient_accumulation_steps=1)
    layout = lambda batch, accumulation=1: SimpleNamespace(batch_size=batch, gradient_accumulation_steps=accumulation)  # noqa: E731
    check_resume_layout(written, tmp_path, layout(8), 1)  # 2 × 4 → 1 × 8
    check_resume_layout(written, tmp_path, layout(2), 4)  # 2 × 4 → 4 × 2
    check_resume_layout(TrainerState(step=2), tmp_path, layout(3), 5)  # an older checkpoint: not recorded
    with pytest.raises(CheckpointMismatch, match="on 1 process\\(es\\) use training.batch_size=8"):
        check_resume_layout(written, tmp_path, layout(4), 1)
    with pytest.raises(CheckpointMismatch, match="a process count that divides 8"):
        check_resume_layout(written, tmp_path, layout(4), 3)
    with pytest.raises(CheckpointMismatch, match="gradient_accumulation_steps=1"):
        check_resume_layout(written, tmp_path, layout(4, 2), 2)

    for step in (2, 4):
        (tmp_path / f"checkpoint-{step}").mkdir()
        (tmp_path / f"checkpoint-{step}" / "COMPLETE").write_text("")
    other = tmp_path / "elsewhere" / "checkpoint-9"
    other.mkdir(parents=True)
    (other / "COMPLETE").write_text("")
    assert resolve_checkpoint(tmp_path, str(other)) == other
    assert resolve_checkpoint(tmp_path, str(other), restarted=True) == tmp_path / "checkpoint-4"
    assert resolve_checkpoint(tmp_path, None, restarted=True) == tmp_path / "checkpoint-4"
    assert resolve_checkpoint(tmp_path / "empty", None, restarted=True) is None

    kills = []
    monkeypatch.setattr(checkpointing.os, "kill", lambda pid, number: kills.append(number))
    monkeypatch.setenv(checkpointing.FAULT_ENV, "step:3@rank1")
    for rank, restarts, point in [("0", "0", "step:3"), ("1", "0", "step:2"), ("1", "1", "step:3")]:
        monkeypatch.setenv("RANK", rank)
        monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", restarts)
        checkpointing.maybe_fault(point)
    assert kills == []
    monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", "0")
    checkpointing.maybe_fault("step:3")
    assert kills == [signal.SIGKILL]


def test_streamed_position_of_another_process_count_is_refused(tmp_path):
    """A streamed source is split per (process, worker); its checkpointed position cannot be re-split mid-pass, so a
    resume on another process count stops with a CheckpointMismatch that says what to do (the map-style sampler, by
    contrast, resumes anywhere)."""
    import io

    import datasets
    import numpy as np
    from PIL import Image

    from tips_hf.pretraining.checkpointing import CheckpointMismatch

    rows = []
    for i in range(8):
        buffer = io.BytesIO()
        Image.fromarray(np.full((56, 56, 3), 30 * i, np.uint8)).save(buffer, format="PNG")
        rows.append({"img": {"bytes": buffer.getvalue(), "path": None}, "t": f"alt {i}", "s": [f"caption {i}"]})
    features = datasets.Features({"img": datasets.Image(), "t": datasets.Value("string"),
                                  "s": datasets.Sequence(datasets.Value("string"))})
    datasets.Dataset.from_list(rows, features=features).to_parquet(tmp_path / "d.parquet")
    stream = ["data.source=parquet", "data.streaming=true", f"data.path={tmp_path / 'd.parquet'}",
              "data.image_column=img", "data.alt_text_column=t", "data.synthetic_columns=[s]"]
    trainer = _trainer(tmp_path / "run", *stream)
    trainer.save()  # checkpoint-0 of one process
    state_file = tmp_path / "run" / "checkpoint-0" / "trainer_state.json"
    state = json.loads(state_file.read_text())
    assert state["processes"] == 1 and state["stream_positions"] == [[[0, 0, 0]]]
    # as if two processes × batch 2 had written it (the same global micro-batch as this run's 1 × 4)
    state_file.write_text(json.dumps({**state, "processes": 2, "batch_size": 2,
                                      "stream_positions": [[[0, 0, 0]], [[0, 0, 0]]]}))
    with pytest.raises(CheckpointMismatch, match="Resume on 2 process\\(es\\) with data.num_workers=0"):
        _trainer(tmp_path / "run", *stream, "training.resume_from_checkpoint=latest")


# ------------------------------------------------------------------------------------ end-to-end, several processes
def _run_ok(run):
    assert run.returncode == 0, run.stderr[-3000:]
    return run


@pytest.fixture(scope="module")
def ddp2(micro_config, tmp_path_factory):
    """The uninterrupted 2-process DDP run (global batch 2 × 4), checkpoints 2, 4, 6."""
    output = tmp_path_factory.mktemp("runs") / "ddp2"
    _run_ok(_pretrain(micro_config, output, "training.batch_size=4", launcher=_accelerate(29531)))
    return output


@pytest.mark.slow  # three 2-process runs (one shared), ~1.5 min on 2 cores
def test_fp16_fsdp_unscales_skips_like_ddp_and_resumes_the_loss_scale(micro_config, tmp_path):
    """fp16 on 2 processes (CPU autocast to float16 with a CPU GradScaler, the GPU code path): FSDP2 logs DDP's
    losses, gradient norms (unscaled) and loss scales, so it skips the same overflowing steps, agreed over the
    shards; a run SIGKILLed after step 5 resumes from checkpoint-4 with its loss scale (not the initial one) and
    ends with the uninterrupted run's losses, scales and weights."""
    args = ["training.batch_size=4", *FP16]
    ddp = _run_ok(_pretrain(micro_config, tmp_path / "ddp", *args, launcher=_accelerate(29532)))
    assert "training.mixed_precision=fp16" in ddp.stderr  # the launcher config's "no" is overridden, and said so
    fsdp = ["training.distributed=fsdp", *args]
    _run_ok(_pretrain(micro_config, tmp_path / "full", *fsdp, launcher=_accelerate(29533)))
    want = {r["step"]: r for r in _records(tmp_path / "ddp") if "loss" in r}
    got = {r["step"]: r for r in _records(tmp_path / "full") if "loss" in r}
    assert [got[s]["loss_scale"] for s in range(1, 7)] == [want[s]["loss_scale"] for s in range(1, 7)]
    skipped = [s for s in range(1, 7) if not torch.isfinite(torch.tensor(want[s]["grad_norm"]))]
    assert skipped, "the fp16 settings must make a step overflow"
    assert skipped == [s for s in range(1, 7) if not torch.isfinite(torch.tensor(got[s]["grad_norm"]))]
    for step in range(1, 7):
        assert abs(got[step]["loss"] - want[step]["loss"]) <= 1e-5 * abs(want[step]["loss"]), step
        if step not in skipped:  # unscaled: the norms of float32 gradients, not × the loss scale
            assert abs(got[step]["grad_norm"] - want[step]["grad_norm"]) <= 1e-5 * want[step]["grad_norm"], step

    output = tmp_path / "run"
    crashed = _pretrain(micro_config, output, *fsdp, env=_env(TIPS_HF_FAULT="step:5"), launcher=_accelerate(29534))
    assert crashed.returncode != 0
    saved = torch.load(output / "checkpoint-4" / "scaler.pt", weights_only=True)
    assert saved["scale"] == got[4]["loss_scale"] != 8.0  # a fresh scaler would start at init_scale 8
    _run_ok(_pretrain(micro_config, output, *fsdp, "--resume_from_checkpoint", "latest", launcher=_accelerate(29535)))
    resumed = {r["step"]: r for r in _records(output) if "loss" in r}
    assert [(s, resumed[s]["loss"], resumed[s]["loss_scale"]) for s in range(1, 7)] == \
        [(s, got[s]["loss"], got[s]["loss_scale"]) for s in range(1, 7)]
    _assert_same_weights(tmp_path / "full", output, atol=1e-6)


@pytest.mark.slow  # three runs (one shared), ~1.5 min on 2 cores
def test_ddp_resumes_on_one_process_then_on_two(micro_config, ddp2, tmp_path):
    """Checkpoint-2 of the 2-process run resumed on one process (batch 8: the same global batch), killed after its
    checkpoint-4, resumed on two processes again: steps 3-6 log the uninterrupted 2-process losses within 1e-5
    relative (only the reduction order differs) and end with its weights."""
    output = tmp_path / "resized"
    one = _pretrain(micro_config, output, "--resume_from_checkpoint", str(ddp2 / "checkpoint-2"),
                    env=_env(TIPS_HF_FAULT="step:4"))
    assert one.returncode == -signal.SIGKILL, one.stderr[-3000:]
    assert "written by 2 process(es), resumed on 1" in one.stderr
    state = json.loads((output / "checkpoint-4" / "trainer_state.json").read_text())
    assert (state["processes"], state["batch_size"], state["micro_batches"]) == (1, 8, 4)
    two = _run_ok(_pretrain(micro_config, output, "training.batch_size=4", "--resume_from_checkpoint", "latest",
                            launcher=_accelerate(29536)))
    assert "written by 1 process(es), resumed on 2" in two.stderr
    got = _losses(output)
    assert sorted(got) == [3, 4, 5, 6]
    _assert_losses_close(_losses(ddp2), got, range(3, 7))
    _assert_same_weights(ddp2, output, atol=1e-5, rtol=1e-4)


@pytest.mark.slow  # three 2-process / 1-process FSDP runs, ~1.5 min on 2 cores
def test_fsdp_resumes_on_one_process_then_on_two(micro_config, tmp_path):
    """The same with FSDP2: torch.distributed.checkpoint reshards the 2-process checkpoint onto one process and the
    1-process checkpoint back onto two."""
    fsdp = ["training.distributed=fsdp"]
    full = tmp_path / "full"
    _run_ok(_pretrain(micro_config, full, *fsdp, "training.batch_size=4", launcher=_accelerate(29537)))
    output = tmp_path / "resized"
    one = _pretrain(micro_config, output, *fsdp, "--resume_from_checkpoint", str(full / "checkpoint-2"),
                    env=_env(TIPS_HF_FAULT="step:4"))
    assert one.returncode == -signal.SIGKILL, one.stderr[-3000:]
    _run_ok(_pretrain(micro_config, output, *fsdp, "training.batch_size=4", "--resume_from_checkpoint", "latest",
                      launcher=_accelerate(29538)))
    got = _losses(output)
    assert sorted(got) == [3, 4, 5, 6]
    _assert_losses_close(_losses(full), got, range(3, 7))
    _assert_same_weights(full, output, atol=1e-5, rtol=1e-4)


def _four_to_two_to_four(config, output, mode, port):
    """The resize round trip of a sharding mode (`training.distributed=mode`), global batch 8 throughout: 4 processes
    (batch 2) train 6 steps, checkpointing at 3 and 6; checkpoint-3 resumes on 2 processes (batch 4, checkpointing
    every step); that run's checkpoint-4 resumes on 4 processes again. Returns the three output folders."""
    args = [f"training.distributed={mode}"]
    four, two, back = output / "four", output / "two", output / "back"
    _run_ok(_pretrain(config, four, *args, "training.batch_size=2", "training.save_steps=3",
                      launcher=_accelerate(port, 4)))
    run = _run_ok(_pretrain(config, two, *args, "training.batch_size=4", "training.save_steps=1",
                            "--resume_from_checkpoint", str(four / "checkpoint-3"), launcher=_accelerate(port + 1)))
    assert "written by 4 process(es), resumed on 2" in run.stderr
    run = _run_ok(_pretrain(config, back, *args, "training.batch_size=2", "--resume_from_checkpoint",
                            str(two / "checkpoint-4"), launcher=_accelerate(port + 2, 4)))
    assert "written by 2 process(es), resumed on 4" in run.stderr
    return four, two, back


def _assert_resized_runs_match(four, two, back):
    """Steps 4-6 on 2 processes and 5-6 on 4 again log the uninterrupted 4-process run's losses within 1e-5 relative
    (only the reduction order differs) and end with its weights."""
    for output, steps in ((two, [4, 5, 6]), (back, [5, 6])):
        got = _losses(output)
        assert sorted(got) == steps, output
        _assert_losses_close(_losses(four), got, steps)
        _assert_same_weights(four, output, atol=1e-5, rtol=1e-4)


@pytest.mark.slow  # three launches (two of 4 processes), ~1 min on 2 cores
def test_ddp_resumes_four_processes_on_two_and_two_on_four(micro_config, ddp2, tmp_path):
    """The issue's test, DDP: 4 processes train 6 steps; 2 processes resume from its checkpoint-3 and log steps 4-6
    within 1e-5 of the 4-process run; 4 processes resume from the 2-process checkpoint-4 alike. Independently of
    any resume, the 4-process run logs the 2-process run's losses (same global batch) within 1e-5."""
    four, two, back = _four_to_two_to_four(micro_config, tmp_path, "ddp", 29544)
    state = json.loads((two / "checkpoint-4" / "trainer_state.json").read_text())
    assert (state["processes"], state["batch_size"], state["micro_batches"]) == (2, 4, 4)
    _assert_resized_runs_match(four, two, back)
    _assert_losses_close(_losses(ddp2), _losses(four), range(1, 7))


@pytest.mark.slow  # three launches (two of 4 processes), ~1 min on 2 cores
def test_fsdp_resumes_four_processes_on_two_and_two_on_four(micro_config, ddp2, tmp_path):
    """The same with FSDP2: torch.distributed.checkpoint reshards the 4-process checkpoint onto 2 processes and the
    2-process one onto 4; every resumed step within 1e-5 of the uninterrupted 4-process FSDP run, which logs the
    2-process DDP run's losses within 1e-5. (HSDP 4 → 2: test_hsdp_equals_ddp_resumes_after_sigkill_and_on_two_processes.)"""
    four, two, back = _four_to_two_to_four(micro_config, tmp_path, "fsdp", 29547)
    assert (two / "checkpoint-4" / "dcp").is_dir()
    _assert_resized_runs_match(four, two, back)
    _assert_losses_close(_losses(ddp2), _losses(four), range(1, 7))


@pytest.mark.slow  # one torchrun run with a restart, ~45 s on 2 cores
def test_torchrun_restarts_the_group_after_a_lost_process(micro_config, ddp2, tmp_path):
    """`torchrun --max-restarts 1`: rank 1 is SIGKILLed after step 3 (checkpoint-2 is the newest), torchrun stops
    rank 0 and restarts both; the restarted group resumes from checkpoint-2 by itself (no resume setting given) and
    ends bit-equal to the uninterrupted run, every step logged once."""
    output = tmp_path / "run"
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                "--max-restarts", "1"]
    run = _run_ok(_pretrain(micro_config, output, "training.batch_size=4", env=_env(TIPS_HF_FAULT="step:3@rank1"),
                            launcher=torchrun))
    assert "failed (exitcode: -9) local_rank: 1" in run.stderr
    assert "resumed from " + str(output / "checkpoint-2") + " at step 2 (torchrun restart 1)" in run.stderr
    _assert_same_weights(ddp2, output)
    assert _losses(output) == _losses(ddp2)


def _two_nodes(config, output, args, port, per_node, env=None):
    """Two `accelerate launch` of `per_node` processes each, as machine ranks 0 and 1 of a 2-node job on loopback
    (the README's command); returns (exit code, stderr) of both."""
    runs = []
    for rank in (1, 0):
        log = open(output.parent / f"{output.name}-node{rank}.log", "w+")
        command = _accelerate(port, 2 * per_node, 2, rank) + [SCRIPT, "--config", str(config), "--output_dir",
                                                               str(output), *args]
        runs.append((subprocess.Popen(command, env=env or _env(), stdout=log, stderr=subprocess.STDOUT, text=True,
                                      cwd=ROOT, start_new_session=True), log))
    results = []
    for process, log in reversed(runs):
        try:
            process.wait(timeout=400)
        except subprocess.TimeoutExpired:
            for other, _ in runs:
                os.killpg(other.pid, signal.SIGKILL)
            raise
        log.seek(0)
        results.append((process.returncode, log.read()))
        log.close()
    return results


@pytest.mark.slow  # two 1-process launches, ~35 s on 2 cores
def test_two_node_launch_on_loopback_equals_one_node(micro_config, ddp2, tmp_path):
    """`accelerate launch --num_machines 2 --machine_rank {0,1} --main_process_ip 127.0.0.1`, one process each:
    the same run as one node with two processes, bit for bit."""
    output = tmp_path / "two-nodes"
    for code, log in _two_nodes(micro_config, output, ["training.batch_size=4"], 29539, per_node=1):
        assert code == 0, log[-3000:]
    _assert_same_weights(ddp2, output)
    assert _losses(output) == _losses(ddp2)


@pytest.fixture(scope="module")
def hsdp(micro_config, tmp_path_factory):
    """2 simulated nodes × 2 processes, training.distributed=hsdp (mesh from the launcher: 2 replicas × 2 shards)."""
    output = tmp_path_factory.mktemp("runs") / "hsdp"
    results = _two_nodes(micro_config, output, ["training.batch_size=2", "training.distributed=hsdp"], 29540,
                         per_node=2)
    for code, log in results:
        assert code == 0, log[-3000:]
    assert "training.distributed=hsdp: FSDP2 mesh 2 replicas × 2 shards" in results[0][1]
    return output


@pytest.mark.slow  # four 4-process runs on 2 cores, ~50 s each
def test_hsdp_equals_ddp_resumes_after_sigkill_and_on_two_processes(micro_config, ddp2, hsdp, tmp_path):
    """HSDP on a 2 × 2 mesh logs the 2-process DDP run's losses on the same global batch (1e-5 relative) and ends
    with its weights; killed after step 3 and resumed on the same 2 × 2 mesh it logs the uninterrupted HSDP losses
    exactly; its checkpoint-4 then resumes on one node of 2 processes (1 × 2 mesh) within 1e-5."""
    _assert_losses_close(_losses(ddp2), _losses(hsdp), range(1, 7))
    _assert_same_weights(ddp2, hsdp, atol=1e-5, rtol=1e-4)
    args = ["training.batch_size=2", "training.distributed=hsdp"]
    output = tmp_path / "run"
    for code, _ in _two_nodes(micro_config, output, args, 29541, per_node=2, env=_env(TIPS_HF_FAULT="step:3")):
        assert code != 0
    assert (output / "checkpoint-2" / "COMPLETE").is_file() and not (output / "checkpoint-4").exists()
    for code, log in _two_nodes(micro_config, output, [*args, "--resume_from_checkpoint", "latest"], 29542,
                                per_node=2, env=_env(TIPS_HF_FAULT="step:4")):
        assert code != 0 and (output / "checkpoint-4" / "COMPLETE").is_file(), log[-3000:]
    want = _losses(hsdp)
    assert _losses(output) == {s: want[s] for s in range(1, 5)}
    _run_ok(_pretrain(micro_config, output, "training.batch_size=4", "training.distributed=hsdp",
                      "--resume_from_checkpoint", "latest", launcher=_accelerate(29543)))
    got = _losses(output)
    _assert_losses_close(want, got, range(1, 7))
    _assert_same_weights(hsdp, output, atol=1e-5, rtol=1e-4)
