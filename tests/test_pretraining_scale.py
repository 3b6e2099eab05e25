"""Pretraining at scale, pinned on CPU: training mode after `init_from`, bounded iBOT memory (chunked head + loss),
centres per optimizer step, layer-wise LR decay, frozen prototypes, float32 logits, one permutation per epoch, and
streams sharded per (process, DataLoader worker) with exact resume."""

import copy
import io
import itertools
import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import ROOT
from PIL import Image

from tips_hf.losses import DINOLoss, IBOTPatchLoss
from tips_hf.pretraining import load_config
from tips_hf.pretraining.data import GlobalBatchSampler
from tips_hf.pretraining.heads import DINOHead
from tips_hf.pretraining.meta_arch import TipsPretrainingModel
from tips_hf.pretraining.trainer import build_module, build_student, build_tokenizer

MICRO = [
    "model.vision={hidden_size: 32, num_hidden_layers: 2, num_attention_heads: 2, intermediate_size: 64, image_size: 56}",
    "model.text={hidden_size: 32, num_hidden_layers: 2, num_attention_heads: 2, intermediate_size: 64}",
    "data.scene_image_size=56", "data.global_size=56", "data.local_size=28", "data.num_examples=64",
    "data.num_local_crops=2", "objective.head_prototypes=32", "objective.patch_prototypes=32",
    "objective.head_hidden_dim=32", "objective.head_bottleneck_dim=16",
]


def test_init_from_trains_in_training_mode_with_drop_path(tmp_path):
    """`from_pretrained` returns an eval-mode model: the module must be back in training mode (drop-path, dropout
    and gradient checkpointing are inactive otherwise), and model.drop_path_rate must reach that path too."""
    config = load_config(None, MICRO)
    tokenizer = build_tokenizer(config)
    build_student(config, len(tokenizer)).save_pretrained(tmp_path / "stage1")
    config = load_config(None, [*MICRO, f"model.init_from={tmp_path / 'stage1'}", "model.drop_path_rate=0.2",
                                "training.gradient_checkpointing=true"])
    module = build_module(config, tokenizer)
    vision = module.student.vision_model
    assert module.training and module.student.training and vision.training
    assert all(m.training for m in vision.encoder.layers)
    assert [layer.drop_path.rate for layer in vision.encoder.layers] == [0.0, 0.2]
    assert vision.config.drop_path_rate == 0.2
    assert vision.encoder.gradient_checkpointing or all(
        getattr(layer, "gradient_checkpointing", False) for layer in vision.encoder.layers)
    assert not module.teacher_cls_head.training  # teachers stay in eval mode


def test_sampler_draws_one_permutation_per_epoch(monkeypatch):
    calls = []
    randperm = torch.randperm

    def counting(*args, **kwargs):
        calls.append(args[0])
        return randperm(*args, **kwargs)

    monkeypatch.setattr(torch, "randperm", counting)
    batches = list(itertools.islice(iter(GlobalBatchSampler(40, 8, seed=3)), 10))  # 5 batches an epoch, 2 epochs
    assert len(calls) == 2
    assert sorted(i for b in batches[:5] for _, i in b) == list(range(40))


@pytest.mark.parametrize("centering", ["softmax", "sinkhorn"])
@pytest.mark.parametrize("mode", ["all", "masked"])
def test_chunked_ibot_equals_whole_loss(centering, mode):
    """The fused loss in chunks of 7 tokens (gradients formed in the forward pass) against the whole (tokens, K)
    computation through autograd: same loss, gradients and centre, within float32 rounding of sums over 30 tokens ×
    50 prototypes (1e-5 relative)."""
    torch.manual_seed(0)
    batch, patches, width, prototypes = 3, 10, 8, 50
    student_head = DINOHead(width, prototypes, hidden_dim=16, bottleneck_dim=6)
    teacher_head = DINOHead(width, prototypes, hidden_dim=16, bottleneck_dim=6).requires_grad_(False)
    student = torch.randn(batch, patches, width, requires_grad=True)
    teacher = torch.randn(batch, patches, width)
    mask = torch.rand(batch, patches) < 0.6
    whole = IBOTPatchLoss(prototypes, mode=mode, centering=centering)
    whole.center.center.normal_()
    chunked = copy.deepcopy(whole)
    targets = whole.teacher_targets(teacher_head(teacher), 0.05, mask)
    expected = whole(student_head(student), targets, mask)
    want = torch.autograd.grad(expected, [student, *student_head.parameters()])
    got_loss = chunked.loss_from_features(
        student_head.bottleneck(student), student_head.unit_prototypes(), teacher_head.bottleneck(teacher),
        teacher_head.unit_prototypes(), mask, 0.05, chunk_tokens=7,
    )
    assert chunked.last_chunks == 5  # 30 tokens in balanced chunks of 6
    got = torch.autograd.grad(got_loss, [student, *student_head.parameters()])
    torch.testing.assert_close(got_loss, expected, rtol=1e-5, atol=0)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(chunked.center.center, whole.center.center, rtol=1e-5, atol=1e-6)


@pytest.mark.slow  # two fresh interpreters with torch, ~1 min on 2 busy cores
def test_bench_memory_chunked_peak_is_bounded():
    """The measured peak (bench_memory.py, VmHWM) of the chunked iBOT head + loss stays near a few chunk-sized
    tensors, while the whole computation holds several (tokens, K) float32 copies (128 MiB each here; measured
    0.60 vs 0.16 GiB)."""
    script = str(ROOT / "benchmarks" / "bench_memory.py")
    runs = {}
    for mode in ("chunked", "full"):
        args = [sys.executable, script, "--device", "cpu", "--tokens", "2048", "--prototypes", "16384",
                "--chunk-tokens", "256"] + (["--full"] if mode == "full" else [])
        out = subprocess.run(args, capture_output=True, text=True, timeout=300, cwd=ROOT)
        assert out.returncode == 0, out.stderr[-2000:]
        runs[mode] = json.loads(out.stdout.strip().splitlines()[-1])
    copy_gib = runs["full"]["one_fp32_copy_gib"]
    assert runs["full"]["peak_gib"] >= 3 * copy_gib  # logits, targets, log-probs, gradients at once
    # ≈ 6 chunk tensors of 1/8 copy each + the head's gradients and MLP activations (~0.07 GiB)
    assert runs["chunked"]["peak_gib"] <= runs["full"]["peak_gib"] / 3


def test_centre_moves_once_per_optimizer_step():
    """Two accumulated micro-batches move the centre once, towards the mean over both (not twice)."""
    loss = DINOLoss(2, center_momentum=0.5)
    loss.teacher_targets(torch.tensor([[2.0, 0.0], [4.0, 0.0]]), 1.0, update=False)
    loss.teacher_targets(torch.tensor([[6.0, 2.0]]), 1.0, update=False)
    torch.testing.assert_close(loss.center.center, torch.zeros(1, 2))  # nothing moves before the step
    loss.center.apply()
    torch.testing.assert_close(loss.center.center, torch.tensor([[2.0, 1.0 / 3.0]]))  # 0.5 · mean (4, 2/3)
    loss.center.apply()  # nothing pending: no second move
    torch.testing.assert_close(loss.center.center, torch.tensor([[2.0, 1.0 / 3.0]]))


def _module(*overrides):
    config = load_config(None, [*MICRO, *overrides])
    tokenizer = build_tokenizer(config)
    return TipsPretrainingModel(build_student(config, len(tokenizer)), config), tokenizer


def test_layer_decay_and_patch_embed_lr_groups():
    module, _ = _module()
    groups = module.parameter_groups(0.05, layer_decay=0.5, patch_embed_lr_mult=0.2)
    scale = {id(p): g["lr_scale"] for g in groups for p in g["params"]}
    decay = {id(p): g["apply_decay"] for g in groups for p in g["params"]}
    named = dict(module.named_parameters())
    expected = {  # 2 blocks: block i gets 0.5^(2 − i), embeddings 0.5^3, the patch embedding × 0.2 on top
        "student.vision_model.encoder.layers.0.attention.qkv.weight": 0.25,
        "student.vision_model.encoder.layers.1.mlp.fc1.weight": 0.5,
        "student.vision_model.embeddings.cls_token": 0.125,
        "student.vision_model.embeddings.patch_embedding.weight": 0.125 * 0.2,
        "student.vision_model.layernorm.weight": 1.0,
        "student.text_model.encoder.layers.0.mlp.fc1.weight": 1.0,
        "student_patch_head.prototypes.weight": 1.0,
    }
    for name, value in expected.items():
        assert name in named, name
        assert scale[id(named[name])] == pytest.approx(value), name
    assert not decay[id(named["student.vision_model.embeddings.cls_token"])]
    assert decay[id(named["student.vision_model.encoder.layers.0.attention.qkv.weight"])]
    assert sum(len(g["params"]) for g in groups) == sum(p.requires_grad for p in module.parameters())
    # defaults: one factor, the two weight-decay groups of before
    assert {g["lr_scale"] for g in module.parameter_groups(0.05)} == {1.0}


def test_logits_are_float32_under_bf16_autocast():
    from tips_hf.losses import DualCaptionContrastiveLoss

    head = DINOHead(8, 16, hidden_dim=8, bottleneck_dim=4)
    images = torch.nn.functional.normalize(torch.randn(4, 8), dim=-1)
    texts = torch.nn.functional.normalize(torch.randn(4, 8), dim=-1)
    loss = DualCaptionContrastiveLoss()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert head(torch.randn(3, 8)).dtype == torch.float32
        value = loss.head_loss(images.bfloat16(), texts.bfloat16(), torch.tensor(0.01))
    # float32 reference on the bf16-rounded inputs: only the logits' precision differs between the two
    reference = loss.head_loss(images.bfloat16().float(), texts.bfloat16().float(), torch.tensor(0.01))
    assert value.dtype == torch.float32
    torch.testing.assert_close(value, reference, rtol=1e-6, atol=0)


def test_freeze_last_layer_and_lr_scale_in_the_trainer(tmp_path):
    """Two steps of the in-process trainer with prototypes frozen for 2 steps: the prototype weights do not move,
    the rest does; the groups' LR is the scheduled LR times their factor; logs stay on the device."""
    from tips_hf.pretraining.schedules import step_values
    from tips_hf.pretraining.trainer import Pretrainer

    config = load_config(None, [*MICRO, "optim.freeze_last_layer_steps=2", "optim.layer_decay=0.5",
                                "optim.warmup_steps=0", "training.batch_size=4", "training.report_to=none",
                                "training.progress_bar=false", "eval.num_examples=0",
                                f"training.output_dir={tmp_path}"])
    trainer = Pretrainer(config)
    module = trainer.unwrapped
    assert module.training
    prototypes = [p.detach().clone() for p in module.last_layer_parameters()]
    mlp = module.student_patch_head.mlp[0].weight.detach().clone()
    for step in range(2):
        values = step_values(config, step)
        logs = trainer.train_step(values)
    assert all(isinstance(v, torch.Tensor) for v in logs.values())
    for before, param in zip(prototypes, module.last_layer_parameters()):
        assert torch.equal(before, param.detach())
    assert not torch.equal(mlp, module.student_patch_head.mlp[0].weight.detach())
    for group in trainer.optimizer.param_groups:
        assert group["lr"] == pytest.approx(values["lr"] * group["lr_scale"])
    trainer.accelerator.end_training()


# ------------------------------------------------------------------------------------------------------ streams
def _png(value: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.full((20, 20, 3), value, np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def _shards(tmp_path, files: int, rows: int):
    import datasets

    features = datasets.Features({"img": datasets.Image(), "t": datasets.Value("string"),
                                  "s": datasets.Sequence(datasets.Value("string"))})
    paths = []
    for f in range(files):
        data = [{"img": {"bytes": _png(3 * (f * rows + i) % 250), "path": None}, "t": f"alt {f}-{i}",
                 "s": [f"syn {f}-{i}"]} for i in range(rows)]
        paths.append(tmp_path / f"shard-{f}.parquet")
        datasets.Dataset.from_list(data, features=features).to_parquet(paths[-1])
    overrides = [*MICRO, "data.source=parquet", f"data.path={tmp_path / 'shard-*.parquet'}", "data.streaming=true",
                 "data.image_column=img", "data.alt_text_column=t", "data.synthetic_columns=[s]"]
    return load_config(None, overrides)


def _first_pass(stream):
    return [s["alt_text"] for s in itertools.takewhile(lambda s: s["stream_position"][1] == 0, stream)]


@pytest.mark.parametrize("files, slots", [(3, 2), (1, 2), (5, 4)])
def test_stream_slots_partition_uneven_shards(tmp_path, files, slots):
    """Shards that do not divide over (process × worker) slots: every row is read by exactly one slot in a pass, and
    with at least as many shards as slots no slot opens another slot's files."""
    from tips_hf.pretraining.data import StreamingPretrainingDataset, load_source

    config = _shards(tmp_path, files, 4)
    source = load_source(config.data)
    assert source.n_shards == files
    seen = []
    for slot in range(slots):
        stream = StreamingPretrainingDataset(source, config.data, config.objective, seed=1, rank=slot,
                                             world_size=slots, shuffle_buffer=0)
        rows = _first_pass(iter(stream))
        files_read = {int(r.split()[1].split("-")[0]) for r in rows}
        if files >= slots:  # contiguous groups of whole shards, sizes differing by at most one
            sizes = [files // slots + (s < files % slots) for s in range(slots)]
            first = sum(sizes[:slot])
            assert files_read == set(range(first, first + sizes[slot])), (slot, files_read)
        else:  # fewer shards than slots: one shard per slot, its rows split between the slots reading it
            assert files_read == {slot % files}
        seen += rows
    assert sorted(seen) == sorted(f"alt {f}-{i}" for f in range(files) for i in range(4))


def test_stream_with_two_workers_resumes_exactly(tmp_path):
    """A DataLoader with 2 workers (2 slots of one process): batches alternate between the workers; a loader rebuilt
    from the positions after micro-batch 3 (a worker-1 batch, so the next one is worker 0's) yields the same
    batches as the uninterrupted loader, including across passes."""
    from tips_hf.pretraining.data import Collator, StreamingPretrainingDataset, load_source

    config = _shards(tmp_path, 4, 3)
    source = load_source(config.data)
    collate = Collator(build_tokenizer(config), [], 16)

    def loader(positions=None, start_batch=0):
        stream = StreamingPretrainingDataset(source, config.data, config.objective, seed=1, num_workers=2,
                                             start_positions=positions, start_batch=start_batch, shuffle_buffer=2)
        return torch.utils.data.DataLoader(stream, batch_size=2, num_workers=2, collate_fn=collate,
                                           drop_last=True)

    full = list(itertools.islice(iter(loader()), 8))  # 6 rows per worker: passes 0 and 1 of each
    workers = [int(b["stream_position"][0]) for b in full]
    assert workers == [0, 1] * 4
    state = {}
    for batch in full[:3]:
        worker, *position = batch["stream_position"].tolist()
        state[worker] = position
    resumed = list(itertools.islice(iter(loader([state[0], state[1]], start_batch=3)), 5))
    for a, b in zip(resumed, full[3:], strict=True):
        assert torch.equal(a["global_crop"], b["global_crop"]) and torch.equal(a["mask"], b["mask"])
        assert torch.equal(a["stream_position"], b["stream_position"])
    with pytest.raises(ValueError, match="data.num_workers"):
        StreamingPretrainingDataset(source, config.data, config.objective, num_workers=3, start_positions=[state[0]])


@pytest.mark.parametrize("choice", ["clean_pass", "student_view"])
def test_v2_teacher_tokens_without_drop_path(choice):
    """v2 with drop-path: `clean_pass` targets come from the encoder without drop-path (its eval-mode forward),
    `student_view` from the student's own (stochastic-depth) un-masked view."""
    module, _ = _module("model.drop_path_rate=0.9", f"objective.v2_teacher={choice}")
    module.train()
    vision = module.student.vision_model
    images = torch.rand(3, 3, 56, 56)
    with torch.no_grad():
        clean = vision.eval()(pixel_values=images).last_hidden_state
        vision.train()
        torch.manual_seed(1)
        unmasked = vision(pixel_values=images).last_hidden_state
    assert not torch.allclose(unmasked, clean)  # drop-path 0.9 changes the view
    teacher = module._teacher_tokens(images, unmasked)
    torch.testing.assert_close(teacher, clean if choice == "clean_pass" else unmasked, rtol=0, atol=0)
    assert vision.training and not teacher.requires_grad
