"""An independent reference for one pretraining step (issue 29): the losses, the optimizer step, the loss centres and
the EMA teacher of `Pretrainer.train_step` on a fixed tiny batch, against formulas written out here from the model's
own parameters and tower outputs (plain softmax / log-softmax over whole tensors, no tips_hf loss code).

The values are chosen so that mix-ups show: every temperature differs (alt-text 0.03, synthetic 0.05, student 0.1,
teacher 0.07), the centres start nonzero and differ per loss, the centre momentum (0.8) differs from the teacher
momentum (0.9), the teacher heads differ from the student heads, the CLS and patch heads have different prototype
counts, and every image has its own mask. Runs against each other (resume, 1 vs 2 processes) cannot see a bug both
runs share; these tests can.
"""

from __future__ import annotations

import copy
import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from tips_hf.pretraining import load_config
from tips_hf.pretraining.data import GlobalBatchSampler
from tips_hf.pretraining.trainer import Pretrainer

MICRO = [
    "model.vision={hidden_size: 32, num_hidden_layers: 2, num_attention_heads: 2, intermediate_size: 64, image_size: 56}",
    "model.text={hidden_size: 32, num_hidden_layers: 2, num_attention_heads: 2, intermediate_size: 64}",
    "data.scene_image_size=56", "data.global_size=56", "data.local_size=28", "data.num_examples=16",
    "data.num_local_crops=2", "objective.head_prototypes=32", "objective.patch_prototypes=24",
    "objective.head_hidden_dim=32", "objective.head_bottleneck_dim=16", "objective.student_temperature=0.1",
    "objective.center_momentum=0.8", "optim.warmup_steps=0", "optim.grad_clip=1000", "training.report_to=none",
    "training.progress_bar=false", "training.save_steps=0", "eval.num_examples=0",
    # AdamW's first step is g / (|g| + eps): with eps 1e-8 it is sign(g), blind to the gradient's scale (a loss not
    # divided by the accumulation steps would pass) and ill-conditioned where g ≈ 0. With eps 1e-3 (gradients here
    # are ~1e-5..1e-1) the step follows the gradient's size.
    "optim.eps=1e-3", "training.batch_size=4",
]
TEMPERATURES = (0.03, 0.05)  # alt-text, synthetic contrastive heads
STUDENT_T, TEACHER_T, CENTER_M, TEACHER_M = 0.1, 0.07, 0.8, 0.9
VALUES = {"lr": 0.01, "weight_decay": 0.3, "teacher_momentum": TEACHER_M, "teacher_temperature": TEACHER_T}
PATCHES, MASKED = 16, 12  # 56 px global crop: 4 × 4 patches, 75 % masked


def make_trainer(tmp_path, *overrides) -> Pretrainer:
    """A Pretrainer on the micro model, its state moved off the symmetric initial values: distinct temperatures,
    nonzero centres, teacher heads (and the v1 teacher tower) unequal to the student's."""
    config = load_config(None, [*MICRO, f"training.output_dir={tmp_path}", *overrides])
    trainer = Pretrainer(config)
    module = trainer.unwrapped
    generator = torch.Generator().manual_seed(7)
    with torch.no_grad():
        module.student.log_temperature.copy_(torch.tensor(TEMPERATURES).log())
        for loss in ("dino_loss", "ibot_loss"):
            center = getattr(module, loss).center.center
            center.copy_(torch.randn(center.shape, generator=generator) * 0.3)
        teachers = [module.teacher_cls_head, module.teacher_patch_head]
        if hasattr(module, "teacher_vision"):
            teachers.append(module.teacher_vision)
        for teacher in teachers:
            for param in teacher.parameters():
                param.add_(torch.randn(param.shape, generator=generator) * 0.02)
    return trainer


def make_batch(seed: int, batch: int = 4, vocab: int = 512, masked: int = MASKED) -> dict[str, torch.Tensor]:
    """A collated batch as the DataLoader yields it: uint8 crops, a mask of exactly MASKED patches per image (its own
    per image), alt-text then synthetic token rows with padding."""
    generator = torch.Generator().manual_seed(seed)
    masks = torch.zeros(batch, PATCHES, dtype=torch.bool)
    for row in range(batch):
        masks[row, torch.randperm(PATCHES, generator=generator)[:masked]] = True
    length = 7
    input_ids = torch.randint(5, vocab, (2 * batch, length), generator=generator)
    lengths = torch.randint(3, length + 1, (2 * batch,), generator=generator)
    attention_mask = (torch.arange(length)[None] < lengths[:, None]).long()
    return {
        "global_crop": torch.randint(0, 256, (batch, 3, 56, 56), dtype=torch.uint8, generator=generator),
        "local_crops": torch.randint(0, 256, (batch, 2, 3, 28, 28), dtype=torch.uint8, generator=generator),
        "mask": masks,
        "input_ids": input_ids * attention_mask,
        "attention_mask": attention_mask,
        "skipped": torch.tensor(0),
    }


def concat(batches: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """k micro-batches as one batch of k·B (text rows regrouped: all alt-texts, then all synthetic captions)."""
    out = {key: torch.cat([b[key] for b in batches]) for key in ("global_crop", "local_crops", "mask")}
    for key in ("input_ids", "attention_mask"):
        width = max(b[key].shape[1] for b in batches)
        rows = [F.pad(b[key], (0, width - b[key].shape[1])) for b in batches]
        half = [r.shape[0] // 2 for r in rows]
        out[key] = torch.cat([r[:h] for r, h in zip(rows, half)] + [r[h:] for r, h in zip(rows, half)])
    out["skipped"] = torch.tensor(0)
    return out


# ----------------------------------------------------------------------------------------------------- reference
def head(module: torch.nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    """A DINO head written out from its parameters: Linear (GELU Linear)* → L2-normalise → cosine with the unit
    prototypes."""
    linears = [m for m in module.mlp if isinstance(m, torch.nn.Linear)]
    x = tokens
    for index, linear in enumerate(linears):
        x = x @ linear.weight.t() + linear.bias
        if index < len(linears) - 1:
            x = F.gelu(x)
    x = x / x.norm(dim=-1, keepdim=True)
    prototypes = module.prototypes.weight
    return x @ (prototypes / prototypes.norm(dim=-1, keepdim=True)).t()


def cross_entropy(targets: torch.Tensor, student_logits: torch.Tensor) -> torch.Tensor:
    """−Σ_k targets · log softmax(student / τ_s), per row."""
    return -(targets * torch.log_softmax(student_logits / STUDENT_T, dim=-1)).sum(-1)


def reference(module, batch: dict[str, torch.Tensor], objective) -> dict[str, torch.Tensor]:
    """Every loss of one step of `module` (a copy, in the state before the step) on `batch`, and the teacher logits
    whose means the centres take."""
    images = batch["global_crop"].float() / 255
    local = batch["local_crops"].float() / 255
    mask = batch["mask"]
    size = images.shape[0]
    vision, text = module.student.vision_model, module.student.text_model
    unmasked = vision(pixel_values=images)
    masked = vision(pixel_values=images, bool_masked_pos=mask)
    out = {}

    # contrastive: each head against its own caption stream, its own temperature, both directions
    pooled = text(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).pooler_output
    texts = pooled / pooled.norm(dim=-1, keepdim=True)
    temperatures = module.student.log_temperature.exp()
    labels = torch.arange(size)
    for index, (name, cls) in enumerate([("alt_text", unmasked.alt_text_embeds),
                                         ("synthetic", unmasked.synthetic_embeds)]):
        image = cls / cls.norm(dim=-1, keepdim=True)
        logits = image @ texts[index * size:(index + 1) * size].t() / temperatures[index]
        image_to_text = -torch.log_softmax(logits, dim=1)[labels, labels].mean()
        text_to_image = -torch.log_softmax(logits, dim=0)[labels, labels].mean()
        out[f"clip/{name}_loss"] = (image_to_text + text_to_image) / 2
    out["clip/loss"] = (out["clip/alt_text_loss"] + out["clip/synthetic_loss"]) / 2

    # KoLeo on the un-masked alt-text CLS: −mean log(distance to the nearest other embedding)
    x = unmasked.alt_text_embeds / unmasked.alt_text_embeds.norm(dim=-1, keepdim=True)
    distances = (x[:, None] - x[None]).norm(dim=-1) + torch.diag(torch.full((size,), math.inf))
    out["koleo"] = -torch.log(distances.min(dim=1).values + 1e-8).mean()

    # teacher tokens: v1 an EMA tower, v2 the student's own un-masked view (no drop-path here), without gradient
    with torch.no_grad():
        teacher = module.teacher_vision(pixel_values=images) if objective.recipe == "v1" else unmasked
        teacher_cls = head(module.teacher_cls_head, teacher.alt_text_embeds)
        teacher_patches = head(module.teacher_patch_head, teacher.patch_embeds.flatten(1, 2))
    out["teacher_cls_logits"], out["teacher_patch_logits"] = teacher_cls, teacher_patches

    # DINO: the teacher's centred, sharpened CLS distribution supervises every local crop's CLS
    targets = torch.softmax((teacher_cls - module.dino_loss.center.center) / TEACHER_T, dim=-1)
    crops = vision(pixel_values=local.flatten(0, 1)).alt_text_embeds
    student_cls = head(module.student_cls_head, crops).reshape(size, local.shape[1], -1)
    out["distill"] = cross_entropy(targets[:, None], student_cls).mean()

    # iBOT: per image, the mean over masked patches (v1: only those); v2 iBOT++ adds w · the mean over visible ones
    patch_targets = torch.softmax((teacher_patches - module.ibot_loss.center.center) / TEACHER_T, dim=-1)
    student_patches = head(module.student_patch_head, masked.patch_embeds.flatten(1, 2))
    per_patch = cross_entropy(patch_targets, student_patches)  # (B, N)
    on = mask.float()
    per_image = (per_patch * on).sum(1) / on.sum(1)
    if objective.recipe == "v2":
        if objective.ibot_normalisation == "mean":
            per_image = per_patch.mean(1)
        else:
            per_image = per_image + objective.ibot_visible_weight * (per_patch * (1 - on)).sum(1) / (1 - on).sum(1)
    out["mask"] = per_image.mean()
    out["loss"] = (objective.clip_weight * out["clip/loss"] + objective.koleo_weight * out["koleo"]
                   + objective.distill_weight * out["distill"] + objective.mask_weight * out["mask"])
    return out


def decays(name: str, param: torch.Tensor) -> bool:
    """Weight decay on matrices only: none on biases, norms, tokens, position embeddings, temperatures."""
    tokens = ("cls_token", "register_tokens", "mask_token", "position_embeddings", "log_temperature")
    return param.ndim >= 2 and name.rsplit(".", 1)[-1] not in tokens


def adamw_first_step(before, grads: dict[str, torch.Tensor], config) -> dict[str, torch.Tensor]:
    """Clip by the global norm, then AdamW's first step: p ← p·(1 − lr·wd) − lr · ĝ / (|ĝ| + eps) (bias-corrected
    moments of one step are g and g²)."""
    norm = torch.sqrt(sum((g.double() ** 2).sum() for g in grads.values())).float()
    scale = min(1.0, config.optim.grad_clip / (float(norm) + 1e-6))
    lr, eps = VALUES["lr"], config.optim.eps
    new = {}
    for name, grad in grads.items():
        param = before[name]
        wd = VALUES["weight_decay"] if decays(name, param) else 0.0
        g = grad * scale
        new[name] = param * (1 - lr * wd) - lr * g / (g.abs() + eps)
    return new, norm


def reference_step(trainer: Pretrainer, batches: list[dict[str, torch.Tensor]]):
    """What one optimizer step over `batches` (micro-batches) must do, computed on a copy of the module: losses
    (averaged over micro-batches), gradient norm, new weights, new centres, new teacher."""
    module = copy.deepcopy(trainer.unwrapped)
    objective = trainer.config.objective
    params = {n: p for n, p in module.named_parameters() if p.requires_grad}
    grads = {n: torch.zeros_like(p) for n, p in params.items()}
    losses: dict[str, float] = {}
    cls_logits, patch_logits = [], []
    for batch in batches:
        out = reference(module, batch, objective)
        for name, grad in zip(params, torch.autograd.grad(out["loss"], list(params.values()), allow_unused=True)):
            if grad is not None:
                grads[name] += grad / len(batches)
        for key, value in out.items():
            if value.ndim == 0:
                losses[key] = losses.get(key, 0.0) + float(value.detach()) / len(batches)
        cls_logits.append(out["teacher_cls_logits"])
        rows = out["teacher_patch_logits"]
        patch_logits.append(rows[batch["mask"]] if objective.recipe == "v1" else rows.flatten(0, 1))
    new, norm = adamw_first_step({n: p.detach() for n, p in params.items()}, grads, trainer.config)
    centres = {
        "dino_loss": CENTER_M * module.dino_loss.center.center + (1 - CENTER_M) * torch.cat(cls_logits).mean(0),
        "ibot_loss": CENTER_M * module.ibot_loss.center.center + (1 - CENTER_M) * torch.cat(patch_logits).mean(0),
    }
    # the EMA teacher follows the student after its update: t ← m · t + (1 − m) · s_new
    pairs = [("teacher_cls_head", "student_cls_head"), ("teacher_patch_head", "student_patch_head")]
    if objective.recipe == "v1":
        pairs.append(("teacher_vision", "student.vision_model"))
    teacher = {}
    for teacher_name, student_name in pairs:
        for name, param in module.get_submodule(teacher_name).named_parameters():
            teacher[f"{teacher_name}.{name}"] = TEACHER_M * param + (1 - TEACHER_M) * new[f"{student_name}.{name}"]
    return losses, norm, new, centres, teacher


# float32 rounding only (the module batches the masked and un-masked views, the reference runs them apart): measured
# 1.2e-7 relative on the losses, 4e-7 absolute on the weights, 1.2e-7 on the teacher; 10-100x margins below
LOSS_RTOL = 1e-5


def assert_step_matches(trainer, batches, logs, expected, loss_rtol=LOSS_RTOL):
    losses, norm, new, centres, teacher = expected
    for key in ("clip/alt_text_loss", "clip/synthetic_loss", "clip/loss", "koleo", "distill", "mask", "loss"):
        assert key in logs, key
        assert float(logs[key]) == pytest.approx(losses[key], rel=loss_rtol), key
    # the logged norm is the one before clipping (here above grad_clip, so the clip is active)
    assert float(norm) > trainer.config.optim.grad_clip
    assert float(logs["grad_norm"]) == pytest.approx(float(norm), rel=LOSS_RTOL)
    module = trainer.unwrapped
    named = dict(module.named_parameters())
    for name, value in new.items():
        # the steps move weights by 5e-5 (median) to 1e-2; rounding differs by < 4e-7
        torch.testing.assert_close(named[name].detach(), value, atol=2e-6, rtol=1e-5, msg=name)
    for loss, value in centres.items():
        torch.testing.assert_close(getattr(module, loss).center.center, value, atol=1e-6, rtol=1e-5, msg=loss)
    for name, value in teacher.items():
        torch.testing.assert_close(named[name].detach(), value, atol=2e-6, rtol=1e-5, msg=name)


# --------------------------------------------------------------------------------------------------------- tests
@pytest.mark.parametrize("recipe", ["v1", "v2"])
def test_one_step_equals_the_reference(recipe, tmp_path):
    """Losses (both caption streams, KoLeo, DINO, iBOT v1 / iBOT++ v2), the gradient norm, every trainable weight
    after AdamW (with per-group weight decay), both centres and the EMA teacher after one `train_step`."""
    trainer = make_trainer(tmp_path, f"objective.recipe={recipe}", "objective.koleo_weight=0.3")
    batch = make_batch(0)
    expected = reference_step(trainer, [batch])
    trainer.batches = iter([batch])
    logs = trainer.train_step(dict(VALUES))
    assert_step_matches(trainer, [batch], logs, expected)
    trainer.accelerator.end_training()


def test_ibot_plus_plus_mean_normalisation_and_visible_weight(tmp_path):
    """v2 iBOT++ with a visible weight of 0.3, and with the plain mean over all patches: distinct from each other
    and from v1, each equal to its formula."""
    values = []
    for overrides in (["objective.ibot_visible_weight=0.3"], ["objective.ibot_normalisation=mean"]):
        trainer = make_trainer(tmp_path / overrides[0].split("=")[0], "objective.recipe=v2", *overrides)
        batch = make_batch(1)
        expected = reference(copy.deepcopy(trainer.unwrapped), batch, trainer.config.objective)
        trainer.batches = iter([batch])
        logs = trainer.train_step(dict(VALUES))
        assert float(logs["mask"]) == pytest.approx(float(expected["mask"]), rel=LOSS_RTOL)
        values.append(float(logs["mask"]))
        trainer.accelerator.end_training()
    assert abs(values[0] - values[1]) > 0.05


@pytest.mark.parametrize("ratio, masked", [(0.75, 12), (0.6, 10)])  # 0.6 · 16 = 9.6: rounded, not floored
def test_v1_ibot_supervises_exactly_the_masked_patches(ratio, masked, tmp_path):
    """The v1 loss is the mean over masked patches only: equal to that formula, and measurably unequal to the same
    mean over the visible patches or over all patches (so a wrong selection cannot pass as rounding)."""
    trainer = make_trainer(tmp_path, "objective.recipe=v1", "objective.clip_weight=0", "objective.distill_weight=0",
                           f"objective.mask_ratio={ratio}")
    module = trainer.unwrapped
    batch = make_batch(2, masked=masked)
    copy_ = copy.deepcopy(module)
    images = batch["global_crop"].float() / 255
    with torch.no_grad():
        teacher = head(copy_.teacher_patch_head, copy_.teacher_vision(pixel_values=images).patch_embeds.flatten(1, 2))
        targets = torch.softmax((teacher - copy_.ibot_loss.center.center) / TEACHER_T, dim=-1)
        student = copy_.student.vision_model(pixel_values=images, bool_masked_pos=batch["mask"])
        per_patch = cross_entropy(targets, head(copy_.student_patch_head, student.patch_embeds.flatten(1, 2)))
    mask = batch["mask"].float()
    on_masked = ((per_patch * mask).sum(1) / mask.sum(1)).mean()
    on_visible = ((per_patch * (1 - mask)).sum(1) / (1 - mask).sum(1)).mean()
    trainer.batches = iter([batch])
    logs = trainer.train_step(dict(VALUES))
    assert float(logs["mask"]) == pytest.approx(float(on_masked), rel=LOSS_RTOL)
    assert abs(float(on_masked) - float(on_visible)) > 1e-3 and abs(float(on_masked) - per_patch.mean()) > 1e-4
    # the centre moved with the masked patches' teacher logits only
    want = CENTER_M * copy_.ibot_loss.center.center + (1 - CENTER_M) * teacher[batch["mask"]].mean(0)
    torch.testing.assert_close(module.ibot_loss.center.center, want, atol=1e-6, rtol=1e-5)
    trainer.accelerator.end_training()


@pytest.mark.parametrize("recipe", ["v1", "v2"])
def test_gradient_accumulation_equals_one_big_batch(recipe, tmp_path):
    """Two micro-batches of 4 with gradient_accumulation_steps=2 make the step one batch of 8 makes: logged losses,
    gradient norm, weights, centres (statistics of both micro-batches, one move) and teacher. The losses that are
    means over images (DINO, iBOT) decompose over micro-batches; the contrastive and KoLeo terms do not (their
    negatives / neighbours are the micro-batch), so they are off here and checked against the reference below."""
    overrides = [f"objective.recipe={recipe}", "objective.clip_weight=0"]
    batches = [make_batch(3), make_batch(4)]
    results = []
    for accumulation, size, feed in ((2, 4, batches), (1, 8, [concat(batches)])):
        trainer = make_trainer(tmp_path / str(accumulation), *overrides, f"training.batch_size={size}",
                               f"training.gradient_accumulation_steps={accumulation}")
        trainer.batches = iter(feed)
        logs = trainer.train_step(dict(VALUES))
        module = trainer.unwrapped
        results.append((logs, {n: p.detach().clone() for n, p in module.named_parameters()},
                        {n: getattr(module, n).center.center.clone() for n in ("dino_loss", "ibot_loss")}))
        trainer.accelerator.end_training()
    (small, small_weights, small_centres), (big, big_weights, big_centres) = results
    for key in ("distill", "mask", "loss", "grad_norm"):
        assert float(small[key]) == pytest.approx(float(big[key]), rel=LOSS_RTOL), key
    for name, value in big_weights.items():
        torch.testing.assert_close(small_weights[name], value, atol=2e-6, rtol=1e-5, msg=name)
    for name, value in big_centres.items():
        torch.testing.assert_close(small_centres[name], value, atol=1e-6, rtol=1e-5, msg=name)


def test_gradient_accumulation_with_contrastive_equals_the_reference(tmp_path):
    """With the contrastive loss on, k micro-batches are k contrastive problems: the step is the reference's mean
    over the micro-batches (losses, gradient, weights, centres, teacher)."""
    trainer = make_trainer(tmp_path, "objective.recipe=v2", "training.gradient_accumulation_steps=2",
                           "objective.koleo_weight=0.3")
    batches = [make_batch(5), make_batch(6)]
    expected = reference_step(trainer, batches)
    trainer.batches = iter(batches)
    logs = trainer.train_step(dict(VALUES))
    assert_step_matches(trainer, batches, logs, expected)
    trainer.accelerator.end_training()


def test_weight_decay_per_group_in_the_trainer(tmp_path):
    """After `train_step` sets the scheduled values, the decaying group holds exactly the matrices and carries the
    scheduled weight decay; biases, norms, tokens, position embeddings and temperatures are in groups with none."""
    trainer = make_trainer(tmp_path)
    trainer.batches = iter([make_batch(7)])
    trainer.train_step(dict(VALUES))
    names = {id(p): n for n, p in trainer.unwrapped.named_parameters()}
    seen = set()
    for group in trainer.optimizer.param_groups:
        for param in group["params"]:
            name = names[id(param)]
            want = VALUES["weight_decay"] if decays(name, param) else 0.0
            assert group["weight_decay"] == want, name
            seen.add(name)
        assert group["lr"] == pytest.approx(VALUES["lr"] * group["lr_scale"])
    for name in ("student.vision_model.embeddings.cls_token", "student.log_temperature",
                 "student.vision_model.embeddings.mask_token", "student_cls_head.mlp.0.bias",
                 "student.text_model.encoder.layers.0.mlp.fc1.weight", "student_patch_head.prototypes.weight"):
        assert name in seen, name
    trainer.accelerator.end_training()


def test_centres_move_through_update_teacher_only(tmp_path):
    """The module's forward leaves the centres where they are (a step may hold several micro-batches); the trainer's
    call, `update_teacher`, moves them once: c ← m_c · c + (1 − m_c) · mean of the teacher logits; the EMA moves the
    teacher heads with the teacher momentum, not the centre momentum."""
    trainer = make_trainer(tmp_path, "objective.recipe=v2")
    module = trainer.unwrapped
    batch = make_batch(8)
    expected = reference(copy.deepcopy(module), batch, trainer.config.objective)
    before = {n: getattr(module, n).center.center.clone() for n in ("dino_loss", "ibot_loss")}
    student = {n: p.detach().clone() for n, p in module.student_cls_head.named_parameters()}
    teacher = {n: p.detach().clone() for n, p in module.teacher_cls_head.named_parameters()}
    from tips_hf.pretraining.data import to_device

    device_batch = to_device({k: v for k, v in batch.items() if k != "skipped"}, trainer.config.data,
                             torch.device("cpu"))
    with torch.no_grad():
        out = module(device_batch, TEACHER_T)
    for name, value in before.items():
        assert torch.equal(getattr(module, name).center.center, value), name
    assert float(out.logs["distill"]) == pytest.approx(float(expected["distill"]), rel=LOSS_RTOL)
    module.update_teacher(0.6)
    dino = CENTER_M * before["dino_loss"] + (1 - CENTER_M) * expected["teacher_cls_logits"].mean(0)
    ibot = CENTER_M * before["ibot_loss"] + (1 - CENTER_M) * expected["teacher_patch_logits"].flatten(0, 1).mean(0)
    torch.testing.assert_close(module.dino_loss.center.center, dino, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(module.ibot_loss.center.center, ibot, atol=1e-6, rtol=1e-5)
    for name, param in module.teacher_cls_head.named_parameters():
        torch.testing.assert_close(param.detach(), 0.6 * teacher[name] + 0.4 * student[name], atol=1e-7, rtol=1e-6)
    moved = module.dino_loss.center.center.clone()
    module.update_teacher(0.6)  # nothing pending: the centres stay
    assert torch.equal(module.dino_loss.center.center, moved)
    trainer.accelerator.end_training()


def test_sampler_epochs_are_new_deterministic_permutations():
    """Epoch 1 is a full permutation of its own (not epoch 0's order again), its keys carry epoch 1 (the per-sample
    augmentations are seeded by it), and the same seed gives the same epochs; another seed another order."""
    def epochs(seed, count=3):
        batches = list(itertools.islice(iter(GlobalBatchSampler(40, 8, seed=seed)), 5 * count))
        return [[key for batch in batches[5 * e:5 * (e + 1)] for key in batch] for e in range(count)]

    first = epochs(3)
    for epoch, keys in enumerate(first):
        assert {e for e, _ in keys} == {epoch}
        assert sorted(i for _, i in keys) == list(range(40))
    orders = [[i for _, i in keys] for keys in first]
    assert orders[0] != orders[1] and orders[1] != orders[2] and orders[0] != orders[2]
    assert epochs(3) == first
    assert [[i for _, i in keys] for keys in epochs(4)][0] != orders[0]
    # with a sample count that global batches do not divide, every batch is full and the rest waits for no one
    uneven = list(itertools.islice(iter(GlobalBatchSampler(42, 8, seed=3)), 10))
    assert all(len(batch) == 8 for batch in uneven)
    assert [{e for e, _ in b} for b in uneven] == [{0}] * 5 + [{1}] * 5
    assert len({i for b in uneven[:5] for _, i in b}) == 40
    # a process's slice of epoch 1 is its part of the same permutation
    ranks = [list(itertools.islice(iter(GlobalBatchSampler(40, 4, rank=r, world_size=2, seed=3)), 10)) for r in (0, 1)]
    assert [k for b in range(5, 10) for r in (0, 1) for k in ranks[r][b]] == first[1]
