"""Loss modules against hand-computed cases, and 2 processes == 1 process on the same global batch."""

import math
import os
import tempfile

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from tips_hf.losses import (
    DINOLoss,
    DualCaptionContrastiveLoss,
    IBOTPatchLoss,
    KoLeoLoss,
    SoftmaxCenter,
    sinkhorn_knopp,
)


def test_softmax_contrastive_hand_case():
    # two images/texts: cos(i0,t0)=1, cos(i0,t1)=0, cos(i1,t0)=0, cos(i1,t1)=1
    images = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    texts = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    loss = DualCaptionContrastiveLoss().head_loss(images, texts, torch.tensor(0.5))
    # each row: logits (2, 0) → CE = log(1 + e^-2); both directions alike
    assert math.isclose(loss.item(), math.log(1 + math.exp(-2)), rel_tol=1e-6)


def test_dual_caption_mean_and_ablation():
    torch.manual_seed(0)
    img1, img2, alt, syn = (F.normalize(torch.randn(4, 8), dim=-1) for _ in range(4))
    temps = torch.tensor([0.1, 0.2])
    loss = DualCaptionContrastiveLoss()
    out = loss(img1, img2, alt, syn, temps)
    a = loss.head_loss(img1, alt, temps[0])
    b = loss.head_loss(img2, syn, temps[1])
    torch.testing.assert_close(out["loss"], (a + b) / 2)
    only_alt = loss(img1, img2, alt, None, temps)
    assert set(only_alt) == {"alt_text_loss", "loss"} and torch.equal(only_alt["loss"], a)


def test_sigmoid_contrastive_hand_case():
    images = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    texts = images.clone()
    loss = DualCaptionContrastiveLoss("sigmoid").head_loss(images, texts, torch.tensor(0.5), torch.tensor(-1.0))
    # logits = 2·cos − 1: positives 1, negatives −1; every term is −log σ(1)
    expected = -4 * math.log(1 / (1 + math.exp(-1))) / 2
    assert math.isclose(loss.item(), expected, rel_tol=1e-6)
    with pytest.raises(ValueError, match="bias"):
        DualCaptionContrastiveLoss("sigmoid").head_loss(images, texts, torch.tensor(0.5))


def test_softmax_center_update_and_targets():
    center = SoftmaxCenter(3, momentum=0.9)
    logits = torch.tensor([[1.0, 2.0, 3.0], [3.0, 2.0, 1.0]])
    targets = center(logits, temperature=1.0)
    torch.testing.assert_close(targets, F.softmax(logits, dim=-1))
    center.update(logits)
    torch.testing.assert_close(center.center, torch.tensor([[0.2, 0.2, 0.2]]))  # 0.9·0 + 0.1·mean(=2)
    torch.testing.assert_close(center(logits, 0.5), F.softmax((logits - 0.2) / 0.5, dim=-1))


def test_sinkhorn_marginals():
    torch.manual_seed(0)
    logits = torch.randn(12, 4)
    q = sinkhorn_knopp(logits, temperature=0.5, iterations=3)
    torch.testing.assert_close(q.sum(dim=1), torch.ones(12))  # every sample a distribution
    q = sinkhorn_knopp(logits, temperature=0.5, iterations=200)
    torch.testing.assert_close(q.sum(dim=0), torch.full((4,), 12 / 4), atol=1e-4, rtol=0)  # equal prototype mass
    weights = torch.tensor([1.0] * 6 + [0.0] * 6)
    qw = sinkhorn_knopp(logits, temperature=0.5, iterations=200, weights=weights)
    assert qw[6:].abs().max() == 0
    torch.testing.assert_close(qw[:6].sum(dim=0), torch.full((4,), 6 / 4), atol=1e-4, rtol=0)


def sinkhorn_reference(logits: torch.Tensor, temperature: float, iterations: int) -> torch.Tensor:
    """DINOv2's `sinkhorn_knopp_teacher`, written out on the whole matrix: Q = exp(logits / τ)ᵀ (K × B), normalised to
    total mass 1, then `iterations` × (every prototype row to 1/K, every sample column to 1/B); returned × B."""
    q = torch.exp((logits.double() - logits.max()) / temperature).t()
    prototypes, samples = q.shape
    q = q / q.sum()
    for _ in range(iterations):
        q = q / q.sum(dim=1, keepdim=True) / prototypes
        q = q / q.sum(dim=0, keepdim=True) / samples
    return (q * samples).t().float()


@pytest.mark.parametrize("iterations", [1, 3])
def test_sinkhorn_equals_the_written_out_algorithm(iterations):
    """Against the plain algorithm at τ = 0.07 (so that a temperature not applied, or one iteration more or fewer,
    changes the targets) and with weights: the weighted-out rows are zeros and the others are the algorithm run on
    the kept rows alone (DINOv2 passes only the masked patches)."""
    torch.manual_seed(1)
    logits = torch.randn(10, 6) * 0.3
    got = sinkhorn_knopp(logits, temperature=0.07, iterations=iterations)
    torch.testing.assert_close(got, sinkhorn_reference(logits, 0.07, iterations), atol=1e-6, rtol=1e-5)
    assert (got - sinkhorn_reference(logits, 0.07, iterations + 1)).abs().max() > 1e-3
    weights = torch.tensor([1.0, 0, 1, 1, 0, 1, 1, 1, 0, 1])
    got = sinkhorn_knopp(logits, temperature=0.07, iterations=iterations, weights=weights)
    assert got[weights == 0].abs().max() == 0
    kept = sinkhorn_reference(logits[weights == 1], 0.07, iterations)
    torch.testing.assert_close(got[weights == 1], kept, atol=1e-6, rtol=1e-5)


def test_ibot_chunks_cover_every_token_once():
    """`chunk_bounds`: ⌈total / chunk⌉ contiguous chunks, sizes within one of each other, covering every token once
    (also when the chunk size does not divide the total)."""
    from tips_hf.losses.ibot import chunk_bounds

    for total in range(1, 41):
        for chunk in (None, 1, 3, 7, 40, 100):
            bounds = chunk_bounds(total, chunk)
            assert bounds[0][0] == 0 and bounds[-1][1] == total, (total, chunk)
            assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:])), (total, chunk)
            sizes = [j - i for i, j in bounds]
            assert max(sizes) - min(sizes) <= 1 and min(sizes) >= 1, (total, chunk, sizes)
            assert len(bounds) == (1 if not chunk or chunk >= total else math.ceil(total / chunk)), (total, chunk)


def test_dino_loss_hand_case():
    # Temperatures ≠ 1 and a nonzero centre, so that a temperature not divided, the wrong one, or a centre not
    # subtracted changes the value. Student logits (1, 0) at τ_s = 0.5 → log-probs (−log(1 + e⁻²), −2 − log(1 + e⁻²)).
    loss = DINOLoss(out_dim=2, student_temperature=0.5, center_momentum=0.6)
    student = torch.tensor([1.0, 0.0]).expand(3, 4, 2)  # 3 crops, batch 4
    targets = torch.tensor([[1.0, 0.0]] * 4)
    assert math.isclose(loss(student, targets).item(), math.log(1 + math.exp(-2)), rel_tol=1e-6)
    # a soft target (0.75, 0.25): 0.75·log(1 + e⁻²) + 0.25·(2 + log(1 + e⁻²))
    soft = torch.tensor([[0.75, 0.25]] * 4)
    assert math.isclose(loss(student, soft).item(), math.log(1 + math.exp(-2)) + 0.5, rel_tol=1e-6)
    # teacher targets: softmax((t − c) / τ_t) with c = (0.5, 0), τ_t = 0.25: logits (2, 0) → (6, 0)
    loss.center.center.copy_(torch.tensor([[0.5, 0.0]]))
    teacher = torch.tensor([[2.0, 0.0]] * 4)
    t = loss.teacher_targets(teacher, temperature=0.25)
    sharp = 1 / (1 + math.exp(-6))
    torch.testing.assert_close(t, torch.tensor([[sharp, 1 - sharp]] * 4))
    # the centre then moves: 0.6 · (0.5, 0) + 0.4 · batch mean (2, 0)
    torch.testing.assert_close(loss.center.center, torch.tensor([[1.1, 0.0]]))
    expected = math.log(1 + math.exp(-2)) + 2 * (1 - sharp)  # the loss of those targets
    assert math.isclose(loss(student, t).item(), expected, rel_tol=1e-6)


def _ibot_case():
    ce = torch.tensor([[1.0, 2.0, 3.0, 4.0], [2.0, 2.0, 6.0, 6.0]])  # target per patch cross-entropies
    mask = torch.tensor([[True, False, False, False], [True, True, False, False]])
    # build logits/targets giving those cross-entropies: one-hot targets, student log-probs chosen per patch
    k = 8
    targets = F.one_hot(torch.zeros(2, 4, dtype=torch.long), k).float()
    logits = torch.zeros(2, 4, k)
    # log_softmax(x)[0] = −ce ⇔ x0 − logsumexp(x) = −ce with other logits 0: x0 = log((k−1)/(e^{ce}−1))
    logits[..., 0] = torch.log((k - 1) / (torch.exp(ce) - 1))
    return logits, targets, mask, ce


@pytest.mark.parametrize(
    "mode, normalisation, expected",
    [
        ("masked", "masked_plus_visible", (1.0 + 2.0) / 2),  # per-image mean over masked: 1 and (2+2)/2
        ("all", "masked_plus_visible", ((1 + 3) + (2 + 6)) / 2),  # masked mean + visible mean (9/3=3, 12/2=6)
        ("all", "mean", ((1 + 2 + 3 + 4) / 4 + (2 + 2 + 6 + 6) / 4) / 2),
    ],
)
def test_ibot_weighting(mode, normalisation, expected):
    # the logits are built for τ_s = 1; fed at τ_s = 0.3 as logits · 0.3, so only a division by 0.3 recovers them
    logits, targets, mask, ce = _ibot_case()
    loss = IBOTPatchLoss(8, student_temperature=0.3, mode=mode, normalisation=normalisation)
    torch.testing.assert_close(loss.per_patch(logits * 0.3, targets), ce, atol=1e-5, rtol=0)
    assert math.isclose(loss(logits * 0.3, targets, mask).item(), expected, rel_tol=1e-5)


def test_ibot_visible_weight_and_centre_on_masked_only():
    logits, targets, mask, _ = _ibot_case()
    half = IBOTPatchLoss(8, student_temperature=0.3, mode="all", visible_weight=0.5)
    assert math.isclose(half(logits * 0.3, targets, mask).item(), ((1 + 1.5) + (2 + 3)) / 2, rel_tol=1e-5)
    masked = IBOTPatchLoss(2, mode="masked", center_momentum=0.7)
    masked.center.center.copy_(torch.tensor([[1.0, -1.0]]))
    teacher = torch.tensor([[[4.0, 0.0], [100.0, 0.0]]])
    # targets of every patch, masked or not: softmax((t − c) / τ_t), τ_t = 0.5: (3, 1) / 0.5 → (6, 2)
    targets = masked.teacher_targets(teacher, 0.5, mask=torch.tensor([[True, False]]))
    torch.testing.assert_close(targets[0, 0], torch.tensor([1 / (1 + math.exp(-4)), 1 - 1 / (1 + math.exp(-4))]))
    # the centre: 0.7 · (1, −1) + 0.3 · mean over masked patches (4, 0); the visible 100 is ignored
    torch.testing.assert_close(masked.center.center, torch.tensor([[1.9, -0.7]]))


def test_koleo_hand_case():
    points = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    # nearest distances: √2, √2, √2
    assert math.isclose(KoLeoLoss()(points).item(), -math.log(math.sqrt(2)), rel_tol=1e-5)


# ---------------------------------------------------------------------------------------------------------------------
# two processes == one process on the same global batch


def _dual_caption_loss(kind, inputs):
    """The dual-caption loss of `inputs` (both images, alt-text and synthetic texts) at fixed temperatures and biases:
    what each of the two processes computes on its half and the single process on the whole batch."""
    return DualCaptionContrastiveLoss(kind)(
        inputs["img1"],
        inputs["img2"],
        inputs["alt"],
        inputs["syn"],
        torch.tensor([0.1, 0.2]),
        torch.tensor([-1.0, -2.0]),
    )["loss"]


def _worker(rank, world_size, init_file, results):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    try:
        torch.manual_seed(0)
        data = {k: torch.randn(8, 6) for k in ("img1", "img2", "alt", "syn")}
        teacher = torch.randn(8, 5)
        local = slice(rank * 4, rank * 4 + 4)
        inputs = {k: F.normalize(v[local], dim=-1).requires_grad_() for k, v in data.items()}
        for kind in ("softmax", "sigmoid"):
            loss = _dual_caption_loss(kind, inputs)
            grads = torch.autograd.grad(loss, list(inputs.values()))
            # DDP averages gradients over processes: the global loss is the mean of the local losses
            total = loss.detach().clone()
            dist.all_reduce(total)
            results[(kind, rank)] = (total.item() / world_size, [g / world_size for g in grads])
        dino = DINOLoss(5, center_momentum=0.5)
        dino.teacher_targets(teacher[local], 0.1)
        results[("center", rank)] = dino.center.center.clone()
        results[("sinkhorn", rank)] = sinkhorn_knopp(teacher[local], 0.1)
    finally:
        dist.destroy_process_group()


def test_two_processes_equal_one(tmp_path):
    manager = mp.Manager()
    results = manager.dict()
    init_file = os.path.join(tempfile.mkdtemp(dir=tmp_path), "store")
    mp.spawn(_worker, args=(2, init_file, results), nprocs=2, join=True)

    torch.manual_seed(0)
    data = {k: torch.randn(8, 6) for k in ("img1", "img2", "alt", "syn")}
    teacher = torch.randn(8, 5)
    inputs = {k: F.normalize(v, dim=-1).requires_grad_() for k, v in data.items()}
    for kind in ("softmax", "sigmoid"):
        loss = _dual_caption_loss(kind, inputs)
        grads = torch.autograd.grad(loss, list(inputs.values()))
        for rank in (0, 1):
            value, rank_grads = results[(kind, rank)]
            assert math.isclose(value, loss.item(), rel_tol=1e-5), kind
            for g_full, g_rank in zip(grads, rank_grads):
                torch.testing.assert_close(g_rank, g_full[rank * 4 : rank * 4 + 4], atol=1e-6, rtol=1e-5)
    dino = DINOLoss(5, center_momentum=0.5)
    dino.teacher_targets(teacher, 0.1)
    q = sinkhorn_knopp(teacher, 0.1)
    for rank in (0, 1):
        torch.testing.assert_close(results[("center", rank)], dino.center.center)
        torch.testing.assert_close(results[("sinkhorn", rank)], q[rank * 4 : rank * 4 + 4], atol=1e-6, rtol=1e-5)
