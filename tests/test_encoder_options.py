"""The encoders' speed options of the pretraining loop, each against the plain computation: selective activation
checkpointing (every n-th block), regional `torch.compile` of the transformer blocks, and the SDPA kernel order."""

from __future__ import annotations

import copy

import pytest
import torch
from test_head_path import MICRO, _batch

from tips_hf.pretraining import load_config
from tips_hf.pretraining.meta_arch import TipsPretrainingModel
from tips_hf.pretraining.trainer import (
    attention_kernels,
    attention_report,
    build_student,
    compile_student,
    enable_checkpointing,
    transformer_blocks,
)

FOUR_LAYERS = [*MICRO[2:], "model.vision={hidden_size: 32, num_hidden_layers: 4, num_attention_heads: 2, "
               "intermediate_size: 64, image_size: 56}",
               "model.text={hidden_size: 32, num_hidden_layers: 4, num_attention_heads: 2, intermediate_size: 64}"]


def _module(seed: int = 0) -> TipsPretrainingModel:
    config = load_config(None, [*FOUR_LAYERS, "objective.recipe=v2"])
    torch.manual_seed(seed)
    module = TipsPretrainingModel(build_student(config, 100), config).train()
    module.freeze_unused()
    return module


def _loss_and_grads(module: TipsPretrainingModel) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    out = module(_batch(torch.Generator().manual_seed(3)), 0.06)
    out.loss.backward()
    grads = {n: p.grad.clone() for n, p in module.named_parameters() if p.grad is not None}
    module.zero_grad(set_to_none=True)
    return out.loss.detach(), grads


@pytest.mark.parametrize("every", [1, 2, 3])
def test_selective_checkpointing_recomputes_every_nth_block_and_changes_nothing(every):
    """Blocks 0, n, 2n, … of each tower run twice (forward, then recomputed in backward), the others once; loss and
    gradients equal the run without checkpointing bit for bit (float32 on CPU recomputes the same sums)."""
    plain = _module()
    checkpointed = copy.deepcopy(plain)
    assert enable_checkpointing(checkpointed.student, every) == 2 * len(range(0, 4, every))
    calls: dict[tuple[int, int], int] = {}
    for tower, blocks in enumerate(transformer_blocks(checkpointed.student)):
        for index, block in enumerate(blocks):
            # a sub-module's hook: the recomputation calls the block's forward, not the block
            first = next(block.children())
            first.register_forward_pre_hook(lambda m, a, k=(tower, index): calls.__setitem__(k, calls.get(k, 0) + 1))
    want_loss, want = _loss_and_grads(plain)
    got_loss, got = _loss_and_grads(checkpointed)
    assert torch.equal(got_loss, want_loss)
    assert got.keys() == want.keys()
    for name in want:
        assert torch.equal(got[name], want[name]), name
    # Per tower, a block runs once per forward pass (vision: the batched global views, then the local crops; text:
    # once); a checkpointed one runs again in backward for each of those passes.
    for tower in {t for t, _ in calls}:
        passes = calls[(tower, 1)] if every > 1 else calls[(tower, 0)] // 2
        for index in range(4):
            assert calls[(tower, index)] == passes * (2 if index % every == 0 else 1), (tower, index, calls)

def test_regional_compile_equals_eager():
    """Each transformer block compiled (aot_eager: dynamo + AOT autograd, no C++ toolchain needed): the loss and
    gradients of one step equal eager mode's to float32 rounding (AOT autograd may reorder a few sums)."""
    eager = _module()
    compiled = copy.deepcopy(eager)
    compile_student(compiled.student, "blocks", backend="aot_eager")
    assert all(getattr(block, "_compiled_call_impl", None) is not None
               for blocks in transformer_blocks(compiled.student) for block in blocks)
    want_loss, want = _loss_and_grads(eager)
    got_loss, got = _loss_and_grads(compiled)
    torch.testing.assert_close(got_loss, want_loss, rtol=1e-6, atol=0)
    for name in want:
        torch.testing.assert_close(got[name], want[name], rtol=1e-5, atol=1e-7, msg=name)


def test_sdpa_kernel_order_is_applied_on_cuda_only():
    """`training.sdpa_backends` becomes an `sdpa_kernel` priority list on CUDA (the flags of the kernels left out
    are off inside the step and restored after); on CPU the step runs under no context; unknown names are refused
    by the config with the valid ones listed."""
    assert type(attention_kernels(("flash", "math"), torch.device("cpu"))).__name__ == "nullcontext"
    before = torch.backends.cuda.mem_efficient_sdp_enabled()
    with attention_kernels(("flash", "math"), torch.device("cuda")):
        assert torch.backends.cuda.flash_sdp_enabled() and torch.backends.cuda.math_sdp_enabled()
        assert not torch.backends.cuda.mem_efficient_sdp_enabled()
    assert torch.backends.cuda.mem_efficient_sdp_enabled() == before
    with pytest.raises(ValueError, match=r"training.sdpa_backends: \['fast'\].*cudnn"):
        load_config(None, ["training.sdpa_backends=[flash, fast]"])
    assert "CPU" in attention_report(None, ("flash",), torch.device("cpu"), torch.float32)
