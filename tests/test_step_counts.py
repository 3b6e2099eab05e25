"""What a pretraining step asks of the device, counted: no host synchronisation inside a step (so it can be captured
by CUDA graphs and never waits on the GPU), and the fused head path's work (benchmarks/count_step.py) — four
prototype GEMMs per chunk, each prototype weight normalised once, no float32 GEMM inputs under bf16 autocast but the
contrastive logits'."""

from __future__ import annotations

import sys
import traceback

import pytest
import torch
from conftest import ROOT
from test_head_path import MICRO, _batch
from torch.utils._python_dispatch import TorchDispatchMode

from tips_hf.pretraining import load_config
from tips_hf.pretraining.data import pixels_to_model
from tips_hf.pretraining.meta_arch import TipsPretrainingModel
from tips_hf.pretraining.trainer import build_student

sys.path.insert(0, str(ROOT / "benchmarks"))
import count_step  # noqa: E402

aten = torch.ops.aten
SYNC_OPS = {aten._local_scalar_dense, aten.is_nonzero, aten.nonzero, aten.equal, aten.masked_select}


class SyncRecorder(TorchDispatchMode):
    """Records every op that needs a device value on the host (`.item()`, `bool(t)`, data-dependent shapes)."""

    def __init__(self):
        super().__init__()
        self.calls: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func.overloadpacket in SYNC_OPS:
            self.calls.append(f"{func}\n{''.join(traceback.format_stack(limit=6)[:-1])}")
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("recipe", ["v1", "v2"])
@pytest.mark.parametrize("centering", ["softmax", "sinkhorn"])
def test_training_step_never_syncs_with_the_device(recipe, centering):
    """Forward (with padded captions and drop-path, so the text mask and v2's clean teacher pass run), backward and
    the teacher update on real tensors: not one host synchronisation. The text tower's mask used to come from
    transformers' helper, which asks `padding_mask.all()` on every call."""
    config = load_config(None, [*MICRO, f"objective.recipe={recipe}", f"objective.centering={centering}",
                                "model.drop_path_rate=0.1"])
    torch.manual_seed(0)
    module = TipsPretrainingModel(build_student(config, 100), config).train()
    module.freeze_unused()
    batch = _batch(torch.Generator().manual_seed(0))
    assert not batch["attention_mask"].all()  # padding present
    recorder = SyncRecorder()
    with recorder:
        out = module(batch, 0.06)
        out.loss.backward()
        module.update_teacher(0.9)
        pixels_to_model(torch.zeros(2, 3, 4, 4, dtype=torch.uint8), (0.5, 0.4, 0.3), (0.2, 0.2, 0.2))
    assert recorder.calls == [], "host syncs in a training step:\n" + "\n".join(recorder.calls)


def test_count_step_reports_the_fused_head_path():
    """The counter on a micro config under bf16 autocast: chunks of 7 tokens over 3 × 16 patches (7 balanced
    chunks), four prototype GEMMs per chunk (teacher and student logits, the two gradients), each of the four
    prototype weights normalised once, every GEMM with bf16 inputs, no host sync."""
    record = count_step.count(None, 3, [*MICRO, "training.mixed_precision=bf16", "objective.patch_prototypes=40",
                                        "objective.head_prototypes=40"])
    assert record["chunks"] == 7
    assert record["prototype_gemms_per_chunk"] == 4
    assert record["weight_normalisations"] == 4 and record["weight_normalisations_per_weight"] == 1
    # The one float32 GEMM left is deliberate: the contrastive logits (image × caption cosines divided by
    # temperatures near 0.005), 2 streams × (1 forward + 2 backward GEMMs) × 2 directions of a 3 × 3 × 32 product.
    contrastive = 2 * 3 * 2 * (2 * 3 * 3 * 32)
    assert record["flop_fp32_inputs"] == contrastive and record["gflop_total"] > 0
    assert record["host_syncs"] == 0
    # float32 prototype GEMMs on request (objective.prototype_precision): their FLOPs show up as float32 inputs
    fp32 = count_step.count(None, 3, [*MICRO, "training.mixed_precision=bf16", "objective.patch_prototypes=40",
                                      "objective.head_prototypes=40", "objective.prototype_precision=float32"])
    assert fp32["flop_fp32_inputs"] > contrastive + 4 * 7 * 12 * 40 * 2
    assert fp32["prototype_gemms"] == record["prototype_gemms"]


@pytest.mark.parametrize("precision", ["no", "bf16"])
def test_trainer_step_never_syncs_with_the_device(tmp_path, precision):
    """The trainer's whole optimizer step (forward, backward, clipping, fused AdamW, loss scaling, centres, EMA) on a
    batch already loaded: no host sync. (Loading itself reads CPU tensors on the host — the sampler, augmentations —
    which on a GPU run happens in DataLoader workers, away from the device.)"""
    from accelerate.state import AcceleratorState

    from tips_hf.pretraining.schedules import step_values
    from tips_hf.pretraining.trainer import Pretrainer

    config = load_config(None, [
        *MICRO, "data.scene_image_size=56", "data.num_examples=16", "data.num_workers=0", "training.batch_size=4",
        f"training.mixed_precision='{precision}'", "training.report_to=none", "training.progress_bar=false",
        "training.save_steps=0", "eval.num_examples=0", "optim.fused=true", "optim.grad_clip=1.0",
        f"training.output_dir={tmp_path}",
    ])
    AcceleratorState._reset_state()  # accelerate keeps one precision per process
    try:
        trainer = Pretrainer(config)
        trainer.train_step(step_values(config, 0))  # the optimizer state exists from here on
        trainer.batches = iter([next(trainer.batches)])
        recorder = SyncRecorder()
        with recorder:
            trainer.train_step(step_values(config, 1))
    finally:
        AcceleratorState._reset_state()
    assert recorder.calls == [], "host syncs in a trainer step:\n" + "\n".join(recorder.calls)
