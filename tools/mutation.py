#!/usr/bin/env python
"""Mutation testing of the training maths (issue 29): plant one realistic bug at a time in a separate git worktree and
run the tests that cover the mutated module; a mutant is *killed* when they fail and *survives* when they pass.

The mutants are the mistakes a contributor makes in a hurry — a temperature not divided, a centre not applied, an
index swapped, a resize without antialiasing, weight decay on the wrong parameters, a sum for a mean, an off-by-one
in a mask, an EMA momentum inverted — over the losses, the pretraining meta-architecture and trainer step, the
schedules, the sampler and masking, the image processor and the DPT heads.

Never touches the checkout it is started from: the mutants go into a worktree of HEAD (created when missing, refused
when it has local changes), and pytest runs there with PYTHONPATH pointing at it (checked: `tips_hf.__file__` must
lie in the worktree). Commit the tests first: the worktree holds HEAD.

    python tools/mutation.py                        # all mutants; score, survivors and timings at the end
    python tools/mutation.py --only losses.dino_temperature meta.ema_inverted
    python tools/mutation.py --check                # every mutant applies exactly once and compiles; runs nothing
    python tools/mutation.py --json mutation.json   # also write the results

Slow tests (`@pytest.mark.slow`) are deselected, as the README's test command deselects them: the score is what that
command catches (CI's run of the slow tests afterwards can only kill more).
"""

from __future__ import annotations

import argparse
import json
import os
import py_compile
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# Test files per area, fastest first (pytest stops at the first failure, so a killed mutant is cheap).
LOSS_TESTS = ["tests/test_pretraining_reference.py", "tests/test_losses.py", "tests/test_pretraining_scale.py",
              "tests/test_pretraining_components.py"]
META_TESTS = ["tests/test_pretraining_reference.py", "tests/test_pretraining_components.py",
              "tests/test_pretraining_scale.py"]
SCHEDULE_TESTS = ["tests/test_pretraining_components.py", "tests/test_pretraining_scale.py"]
DATA_TESTS = ["tests/test_pretraining_components.py", "tests/test_pretraining_reference.py",
              "tests/test_pretraining_scale.py"]
PROCESSOR_TESTS = ["tests/test_image_processor.py", "tests/test_pixel_normalisation.py"]
DPT_TESTS = ["tests/test_dense_prediction.py"]

CENTERING = "tips_hf/losses/centering.py"
CONTRASTIVE = "tips_hf/losses/contrastive.py"
DINO = "tips_hf/losses/dino.py"
IBOT = "tips_hf/losses/ibot.py"
KOLEO = "tips_hf/losses/koleo.py"
META = "tips_hf/pretraining/meta_arch.py"
TRAINER = "tips_hf/pretraining/trainer.py"
SCHEDULES = "tips_hf/pretraining/schedules.py"
DATA = "tips_hf/pretraining/data.py"
MASKING = "tips_hf/pretraining/masking.py"
PROCESSOR = "tips_hf/processing/image_processing_tips.py"
DPT = "tips_hf/modeling/modeling_dense_tips.py"


@dataclass
class Mutant:
    name: str
    path: str
    old: str
    new: str
    tests: list[str]
    what: str
    equivalent: str | None = None  # why no test can tell it from the original, when judged so


MUTANTS = [
    # ------------------------------------------------------------------------------------------ contrastive loss
    Mutant("contrastive.one_direction_undivided", CONTRASTIVE,
           "text_embeds @ all_images.t() / temperature, targets", "text_embeds @ all_images.t(), targets",
           LOSS_TESTS, "text→image logits not divided by the temperature"),
    Mutant("contrastive.temperatures_swapped", CONTRASTIVE,
           "alt_image_embeds, alt_text_embeds, temperatures[0]", "alt_image_embeds, alt_text_embeds, temperatures[1]",
           LOSS_TESTS, "the alt-text head scored at the synthetic head's temperature"),
    Mutant("contrastive.heads_summed", CONTRASTIVE,
           'out["loss"] = torch.stack(list(out.values())).mean()', 'out["loss"] = torch.stack(list(out.values())).sum()',
           LOSS_TESTS, "the two heads summed instead of averaged"),
    Mutant("contrastive.sigmoid_positives_local", CONTRASTIVE,
           "labels[rows, rows + offset] = 1.0", "labels[rows, rows] = 1.0",
           LOSS_TESTS, "SigLIP positives at the local index (wrong on every process but the first)"),
    Mutant("contrastive.sigmoid_divides_by_columns", CONTRASTIVE,
           "return -F.logsigmoid(labels * logits).sum() / logits.shape[0]",
           "return -F.logsigmoid(labels * logits).sum() / logits.shape[1]",
           LOSS_TESTS, "SigLIP loss divided by the global instead of the local batch"),
    Mutant("contrastive.sigmoid_scale_is_temperature", CONTRASTIVE,
           "all_texts, 1.0 / temperature, bias.float()", "all_texts, temperature, bias.float()",
           LOSS_TESTS, "SigLIP logits multiplied by the temperature instead of its inverse"),
    # ---------------------------------------------------------------------------------------------------- DINO
    Mutant("dino.student_temperature_undivided", DINO,
           "F.log_softmax(student_logits.float() / self.student_temperature, dim=-1)",
           "F.log_softmax(student_logits.float(), dim=-1)",
           LOSS_TESTS, "DINO student logits not divided by τ_s"),
    Mutant("dino.crops_summed", DINO,
           "return -(teacher_targets[None] * log_probs).sum(dim=-1).mean()",
           "return -(teacher_targets[None] * log_probs).sum(dim=-1).mean(dim=1).sum()",
           LOSS_TESTS, "DINO loss summed over the local crops instead of averaged"),
    Mutant("dino.centre_moves_in_forward", DINO,
           "        if update:\n            self.center.apply()",
           "        if update or True:\n            self.center.apply()",
           LOSS_TESTS, "the DINO centre moves at every micro-batch instead of once per step"),
    # ------------------------------------------------------------------------------------------------ centring
    Mutant("centering.centre_not_subtracted", CENTERING,
           "F.softmax((teacher_logits.detach().float() - self.center) / temperature, dim=-1)",
           "F.softmax(teacher_logits.detach().float() / temperature, dim=-1)",
           LOSS_TESTS, "softmax centring without the centre"),
    Mutant("centering.teacher_temperature_undivided", CENTERING,
           "F.softmax((teacher_logits.detach().float() - self.center) / temperature, dim=-1)",
           "F.softmax(teacher_logits.detach().float() - self.center, dim=-1)",
           LOSS_TESTS, "teacher targets not sharpened by τ_t"),
    Mutant("centering.momentum_inverted", CENTERING,
           "self.center.mul_(self.momentum).add_(total / count.clamp_min(1.0), alpha=1 - self.momentum)",
           "self.center.mul_(1 - self.momentum).add_(total / count.clamp_min(1.0), alpha=self.momentum)",
           LOSS_TESTS, "centre EMA momentum inverted"),
    Mutant("centering.sum_not_mean", CENTERING,
           "add_(total / count.clamp_min(1.0), alpha=1 - self.momentum)", "add_(total, alpha=1 - self.momentum)",
           LOSS_TESTS, "the centre moves towards the logits' sum, not their mean"),
    Mutant("centering.pending_kept", CENTERING,
           "        self._pending_sum = self._pending_count = None\n\n    @torch.no_grad()\n    def update",
           "\n    @torch.no_grad()\n    def update",
           LOSS_TESTS, "pending statistics never cleared: the centre moves again at every later step"),
    Mutant("centering.sinkhorn_temperature", CENTERING,
           "torch.exp((chunks[j]().float() - shift) / temperature)", "torch.exp(chunks[j]().float() - shift)",
           LOSS_TESTS, "Sinkhorn-Knopp scalings computed without the temperature"),
    Mutant("centering.sinkhorn_iteration_short", CENTERING,
           "for iteration in range(iterations):", "for iteration in range(iterations - 1):",
           LOSS_TESTS + ["tests/test_pretraining_scale.py"], "one Sinkhorn-Knopp iteration fewer"),
    # ---------------------------------------------------------------------------------------------------- iBOT
    Mutant("ibot.images_summed", IBOT,
           "        if self.mode == \"masked\":\n            return per_masked / batch",
           "        if self.mode == \"masked\":\n            return per_masked",
           LOSS_TESTS, "v1 iBOT summed over images instead of averaged"),
    Mutant("ibot.visible_weight_ignored", IBOT,
           "return (per_masked + self.visible_weight * per_visible) / batch", "return (per_masked + per_visible) / batch",
           LOSS_TESTS, "iBOT++ visible weight ignored"),
    Mutant("ibot.mean_per_image", IBOT,
           "torch.full_like(masked, 1.0 / (batch * patches))", "torch.full_like(masked, 1.0 / patches)",
           LOSS_TESTS, "iBOT++ plain mean summed over images"),
    Mutant("ibot.per_patch_undivided", IBOT,
           "F.log_softmax(student_logits.float() / self.student_temperature, dim=-1)",
           "F.log_softmax(student_logits.float(), dim=-1)",
           LOSS_TESTS, "iBOT (unchunked) student logits not divided by τ_s"),
    Mutant("ibot.centre_on_all_patches", IBOT,
           "used = flat.float() if weights is None else flat.float()[weights.bool()]", "used = flat.float()",
           LOSS_TESTS, "v1 iBOT centre from visible patches too (unchunked path)"),
    Mutant("ibot.fused_centre_not_subtracted", IBOT,
           "return torch.softmax(logits.sub_(center).div_(temperature), dim=-1)",
           "return torch.softmax(logits.div_(temperature), dim=-1)",
           LOSS_TESTS, "fused iBOT targets without the centre"),
    Mutant("ibot.fused_centre_stats_all", IBOT,
           "sums.add_(logits.sum(0) if stats is None else stats[i:j] @ logits)", "sums.add_(logits.sum(0))",
           LOSS_TESTS, "fused v1 iBOT centre sums over every patch, counted as masked ones"),
    Mutant("ibot.fused_student_undivided", IBOT,
           "matmul_fp32(features[i:j], prototypes.t(), dtype).div_(temperature), -1)",
           "matmul_fp32(features[i:j], prototypes.t(), dtype), -1)",
           LOSS_TESTS, "fused iBOT student logits not divided by τ_s"),
    Mutant("ibot.fused_gradient_scale", IBOT,
           "scale = (w / temperature)[:, None]", "scale = w[:, None]",
           LOSS_TESTS, "fused iBOT gradient missing the 1/τ_s of the chain rule (loss value right)"),
    Mutant("ibot.backward_ignores_upstream", IBOT,
           "return grad_features * grad_loss, grad_prototypes * grad_loss,",
           "return grad_features, grad_prototypes,",
           LOSS_TESTS, "fused iBOT backward ignores the incoming gradient (the loss weight 2 is lost)"),
    Mutant("ibot.chunk_bounds_drop_rest", IBOT,
           "end = start + size + (index < extra)", "end = start + size",
           LOSS_TESTS, "chunks that do not divide the tokens drop the remainder"),
    # --------------------------------------------------------------------------------------------------- KoLeo
    Mutant("koleo.self_as_neighbour", KOLEO,
           "similarity.fill_diagonal_(-2.0)", "similarity.fill_diagonal_(0.0)",
           LOSS_TESTS, "KoLeo may pick a point as its own nearest neighbour"),
    # ------------------------------------------------------------------------------------- meta-architecture
    Mutant("meta.v1_selects_visible", META,
           "order = torch.argsort(mask.to(torch.uint8), dim=1, descending=True, stable=True)",
           "order = torch.argsort(mask.to(torch.uint8), dim=1, descending=False, stable=True)",
           META_TESTS, "v1 iBOT supervises the visible patches"),
    Mutant("meta.v1_count_floored", META,
           "count = int(round(objective.mask_ratio * mask.shape[1]))", "count = int(objective.mask_ratio * mask.shape[1])",
           META_TESTS, "v1 masked count floored (one masked patch dropped when ratio · N rounds up)"),
    Mutant("meta.captions_swapped", META,
           "captions = dict(zip(self.caption_streams, text_embeds))",
           "captions = dict(zip(self.caption_streams[::-1], text_embeds))",
           META_TESTS, "alt-text and synthetic caption streams swapped"),
    Mutant("meta.synthetic_head_on_cls1", META,
           "F.normalize(unmasked[:, 1].float(), dim=-1),", "F.normalize(unmasked[:, 0].float(), dim=-1),",
           META_TESTS, "the synthetic head scores CLS-1"),
    Mutant("meta.koleo_on_cls2", META,
           "koleo = self.koleo(unmasked[:, 0])", "koleo = self.koleo(unmasked[:, 1])",
           META_TESTS, "KoLeo on the second CLS token"),
    Mutant("meta.register_as_patch", META,
           "first_patch = 1 + self.num_registers", "first_patch = self.num_registers",
           META_TESTS, "patch tokens start one token early (the register counted as a patch)"),
    Mutant("meta.mask_weight_is_distill_weight", META,
           "total = total + objective.mask_weight * ibot", "total = total + objective.distill_weight * ibot",
           META_TESTS, "iBOT weighted by the DINO weight"),
    Mutant("meta.dino_student_temperature_for_teacher", META,
           "targets = self.dino_loss.teacher_targets(teacher_logits, teacher_temperature, update=False)",
           "targets = self.dino_loss.teacher_targets(teacher_logits, objective.student_temperature, update=False)",
           META_TESTS, "DINO teacher sharpened with the student temperature"),
    Mutant("meta.v2_teacher_with_gradient", META,
           "return unmasked.detach()  # v2", "return unmasked  # v2",
           META_TESTS, "v2 teacher tokens not detached (gradient through the targets' features)",
           equivalent="every use of the teacher tokens runs under torch.no_grad (the DINO targets, the teacher "
                      "head's bottleneck) and the iBOT loss detaches the teacher features again: no gradient can "
                      "reach them, the detach is a second guard"),
    Mutant("meta.ema_inverted", META,
           "torch._foreach_lerp_(teacher, student, 1.0 - momentum)", "torch._foreach_lerp_(teacher, student, momentum)",
           META_TESTS, "EMA momentum inverted"),
    Mutant("meta.centres_not_applied", META,
           "                getattr(self, name).center.apply()", "                pass",
           META_TESTS, "update_teacher never moves the centres"),
    Mutant("meta.decay_on_vectors", META,
           "decay = not (param.ndim < 2 or name.split(\".\")[-1] in NO_DECAY_NAMES)",
           "decay = not (param.ndim < 1 or name.split(\".\")[-1] in NO_DECAY_NAMES)",
           META_TESTS, "weight decay on biases and norms"),
    Mutant("meta.decay_on_position_embeddings", META,
           '"mask_token", "position_embeddings", "log_temperature"', '"mask_token", "log_temperature"',
           META_TESTS, "weight decay on the position embeddings"),
    Mutant("meta.layer_decay_reversed", META,
           "return layer_decay ** (depth - int(block.group(1)))", "return layer_decay ** int(block.group(1))",
           META_TESTS, "layer-wise LR decay applied from the input side"),
    # --------------------------------------------------------------------------------------- trainer step
    Mutant("trainer.loss_not_divided_by_accumulation", TRAINER,
           "loss = out.loss / accumulation", "loss = out.loss",
           META_TESTS, "gradients of k micro-batches summed, not averaged"),
    Mutant("trainer.decay_on_every_group", TRAINER,
           'group["weight_decay"] = values["weight_decay"] if group.get("apply_decay") else 0.0',
           'group["weight_decay"] = values["weight_decay"]',
           META_TESTS, "the scheduled weight decay set on the no-decay groups too"),
    Mutant("trainer.ema_one_minus_momentum", TRAINER,
           'self.unwrapped.update_teacher(values["teacher_momentum"])',
           'self.unwrapped.update_teacher(1.0 - values["teacher_momentum"])',
           META_TESTS, "EMA called with 1 − momentum"),
    # ------------------------------------------------------------------------------------------- schedules
    Mutant("schedules.warmup_off_by_one", SCHEDULES,
           "return warmup_start + (start - warmup_start) * step / warmup_steps",
           "return warmup_start + (start - warmup_start) * (step + 1) / warmup_steps",
           SCHEDULE_TESTS, "LR warm-up one step ahead"),
    Mutant("schedules.cosine_half_period", SCHEDULES,
           "math.cos(math.pi * progress)", "math.cos(math.pi * progress / 2)",
           SCHEDULE_TESTS, "cosine over half a period"),
    Mutant("schedules.weight_decay_constant", SCHEDULES,
           '"weight_decay": cosine(step, total, optim.weight_decay, optim.weight_decay_final)',
           '"weight_decay": cosine(step, total, optim.weight_decay, optim.weight_decay)',
           SCHEDULE_TESTS, "weight decay never follows its schedule"),
    Mutant("schedules.lr_without_warmup", SCHEDULES,
           '"lr": cosine(step, total, optim.lr, optim.min_lr, optim.warmup_steps)',
           '"lr": cosine(step, total, optim.lr, optim.min_lr)',
           SCHEDULE_TESTS, "LR schedule without its warm-up"),
    Mutant("schedules.teacher_temperature_reversed", SCHEDULES,
           "objective.teacher_temperature_warmup,\n            objective.teacher_temperature,",
           "objective.teacher_temperature,\n            objective.teacher_temperature_warmup,",
           SCHEDULE_TESTS, "teacher temperature warms from the final value to the initial one"),
    Mutant("schedules.warmup_boundary", SCHEDULES,
           "if warmup_steps <= 0 or step >= warmup_steps:", "if warmup_steps <= 0 or step > warmup_steps:",
           SCHEDULE_TESTS, "teacher-temperature warm-up formula also used at step == warmup_steps",
           equivalent="at step == warmup_steps the warm-up formula gives start + (end − start) · 1 = end, the value "
                      "the other branch returns"),
    # --------------------------------------------------------------------------------------- sampler, views
    Mutant("data.same_permutation_every_epoch", DATA,
           "torch.Generator().manual_seed(self.seed + epoch)", "torch.Generator().manual_seed(self.seed)",
           DATA_TESTS, "every epoch repeats epoch 0's order"),
    Mutant("data.epoch_not_in_keys", DATA,
           "yield [(epoch, int(i)) for i in order[start : start + self.batch_size]]",
           "yield [(0, int(i)) for i in order[start : start + self.batch_size]]",
           DATA_TESTS, "sample keys always say epoch 0 (same augmentations every epoch)"),
    Mutant("data.rank_offset_by_global_batch", DATA,
           "start = position * self.global_batch + self.rank * self.batch_size",
           "start = position * self.batch_size + self.rank * self.batch_size",
           DATA_TESTS, "global batches advance by one process's batch"),
    Mutant("data.partial_last_batch", DATA,
           "self.per_epoch = num_samples // self.global_batch",
           "self.per_epoch = -(-num_samples // self.global_batch)",
           DATA_TESTS, "an epoch's incomplete last batch is kept"),
    Mutant("data.views_ignore_epoch", DATA,
           "generator.manual_seed((seed * 1_000_003 + epoch) * 1_000_033 + index)",
           "generator.manual_seed(seed * 1_000_003 * 1_000_033 + index)",
           DATA_TESTS, "per-sample augmentations do not depend on the epoch"),
    Mutant("masking.count_floored", MASKING,
           "self.count = int(round(ratio * self.height * self.width))", "self.count = int(ratio * self.height * self.width)",
           DATA_TESTS, "masked count floored instead of rounded"),
    Mutant("masking.one_short", MASKING,
           "mask[order[: self.count]] = True", "mask[order[: self.count - 1]] = True",
           DATA_TESTS, "random masks one patch short"),
    Mutant("masking.not_random", MASKING,
           "order = torch.randperm(total, generator=generator)", "order = torch.arange(total)",
           DATA_TESTS, "random masks always the first patches"),
    Mutant("masking.trim_off_by_one", MASKING,
           "[: masked.numel() - self.count]]", "[: masked.numel() - self.count - 1]]",
           DATA_TESTS, "block masks trimmed one patch too few"),
    # ---------------------------------------------------------------------------------------- image processor
    Mutant("processor.no_antialias", PROCESSOR,
           "stacked = self.resize(image=stacked, size=size, resample=resample)",
           "stacked = F.interpolate(stacked.float(), size=(size.height, size.width), mode=\"bilinear\", "
           "align_corners=False)",
           PROCESSOR_TESTS, "bilinear resize without antialiasing"),
    Mutant("processor.bicubic", PROCESSOR,
           "resample = PILImageResampling.BILINEAR", "resample = PILImageResampling.BICUBIC",
           PROCESSOR_TESTS, "bicubic instead of bilinear"),
    Mutant("processor.rescale_256", PROCESSOR,
           "rescale_factor = 1 / 255", "rescale_factor = 1 / 256",
           PROCESSOR_TESTS, "rescaled by 1/256"),
    Mutant("processor.pad_extra_top_left", PROCESSOR,
           "(pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2)",
           "(pad_w - pad_w // 2, pad_w // 2, pad_h - pad_h // 2, pad_h // 2)",
           PROCESSOR_TESTS, "the odd padding pixel goes top/left"),
    Mutant("processor.normalise_before_pad", PROCESSOR,
           "            if do_center_pad:\n                stacked = center_pad_to_multiple(stacked, patch_size)\n"
           "            if do_normalize:\n                stacked = self.normalize(stacked, image_mean, image_std)",
           "            if do_normalize:\n                stacked = self.normalize(stacked, image_mean, image_std)\n"
           "            if do_center_pad:\n                stacked = center_pad_to_multiple(stacked, patch_size)",
           PROCESSOR_TESTS, "normalised before padding (padding no longer black)"),
    Mutant("processor.alpha_on_black", PROCESSOR,
           'white = Image.new("RGBA", image.size, (255, 255, 255, 255))',
           'white = Image.new("RGBA", image.size, (0, 0, 0, 255))',
           PROCESSOR_TESTS, "transparent pixels composited on black"),
    # ---------------------------------------------------------------------------------------------- DPT heads
    Mutant("dpt.fusion_align_corners", DPT,
           'hidden = F.interpolate(hidden, scale_factor=2, mode="bilinear", align_corners=True)',
           'hidden = F.interpolate(hidden, scale_factor=2, mode="bilinear", align_corners=False)',
           DPT_TESTS, "fusion upsampling without align_corners"),
    Mutant("dpt.readout_order", DPT,
           "tokens = torch.cat([tokens, cls[:, None].expand(-1, tokens.shape[1], -1)], dim=-1)",
           "tokens = torch.cat([cls[:, None].expand(-1, tokens.shape[1], -1), tokens], dim=-1)",
           DPT_TESTS, "readout concatenates (CLS, patch) instead of (patch, CLS)"),
    Mutant("dpt.gelu_exact", DPT,
           'tokens = F.gelu(self.readout_projects[index](tokens), approximate="tanh")',
           "tokens = F.gelu(self.readout_projects[index](tokens))",
           DPT_TESTS, "exact GELU where the official decoder uses the tanh approximation"),
    Mutant("dpt.skip_without_unit", DPT,
           "hidden = hidden + self.skip_unit(skip)", "hidden = hidden + skip",
           DPT_TESTS, "skip input added without its residual unit"),
    Mutant("dpt.levels_in_order", DPT,
           "hidden = self.fusion_blocks[index](hidden, levels[-(index + 1)])",
           "hidden = self.fusion_blocks[index](hidden, levels[index])",
           DPT_TESTS, "fusion skips taken coarse-to-fine in the wrong order"),
    Mutant("dpt.bins_not_normalised", DPT,
           "    weights = weights / weights.sum(dim=1, keepdim=True)\n", "",
           DPT_TESTS, "depth bin weights not normalised"),
    Mutant("dpt.bins_without_min_depth", DPT,
           "    weights = F.relu(logits) + min_depth\n", "    weights = F.relu(logits) + 1e-6\n",
           DPT_TESTS, "depth bin weights without the min_depth offset"),
    Mutant("dpt.silog_variance_term", DPT,
           "variance_weight * diff.mean().pow(2)", "variance_weight * diff.pow(2).mean()",
           DPT_TESTS, "SILog with mean(g²) where mean(g)² belongs"),
    Mutant("dpt.segmentation_ignore_dropped", DPT,
           "return F.cross_entropy(_upsample(logits, labels.shape[-2:]), labels.long(), ignore_index=ignore_index)",
           "return F.cross_entropy(_upsample(logits, labels.shape[-2:]), labels.long().clamp_max(logits.shape[1] - 1))",
           DPT_TESTS, "ignored pixels scored as the last class"),
    Mutant("dpt.normals_zero_vectors_scored", DPT,
           "(labels.nan_to_num(0.0).norm(dim=1) > 1e-6)", "(labels.nan_to_num(0.0).norm(dim=1) >= 0)",
           DPT_TESTS, "missing normals (zero vectors) scored"),
]


def run(command: list[str], cwd: Path, env: dict, timeout: float) -> tuple[int, str, float]:
    start = time.perf_counter()
    try:
        done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
        return done.returncode, done.stdout[-3000:] + done.stderr[-2000:], time.perf_counter() - start
    except subprocess.TimeoutExpired:
        return -1, "timeout", time.perf_counter() - start


def prepare_worktree(path: Path) -> None:
    """A worktree at this checkout's HEAD: created when missing, moved to HEAD when it is clean."""
    if path.resolve() == ROOT.resolve():
        raise SystemExit("refusing to mutate the checkout itself")
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True,
                          check=True).stdout.strip()
    if not path.exists():
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(path), head], check=True)
    dirty = subprocess.run(["git", "-C", str(path), "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True, check=True).stdout.strip()
    if dirty:
        raise SystemExit(f"{path} has local changes (a previous run interrupted?): {dirty}\n"
                         f"start afresh with: git -C {ROOT} worktree remove --force {path}")
    subprocess.run(["git", "-C", str(path), "checkout", "-q", "--detach", head], check=True)


def environment(worktree: Path) -> dict:
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=str(worktree), PYTHONDONTWRITEBYTECODE="1")
    probe = subprocess.run([sys.executable, "-c", "import tips_hf; print(tips_hf.__file__)"], cwd=worktree, env=env,
                           capture_output=True, text=True, check=True).stdout.strip()
    if not Path(probe).resolve().is_relative_to(worktree.resolve()):
        raise SystemExit(f"tips_hf imports from {probe}, not from the worktree {worktree}")
    print(f"tips_hf imported from {probe}", flush=True)
    return env


def check(worktree: Path) -> list[str]:
    problems = []
    for mutant in MUTANTS:
        text = (worktree / mutant.path).read_text()
        count = text.count(mutant.old)
        if count != 1:
            problems.append(f"{mutant.name}: the original text occurs {count} times in {mutant.path}")
            continue
        with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as handle:
            handle.write(text.replace(mutant.old, mutant.new))
        try:
            py_compile.compile(handle.name, doraise=True)
        except py_compile.PyCompileError as error:
            problems.append(f"{mutant.name}: does not compile: {error}")
        finally:
            os.unlink(handle.name)
    names = [m.name for m in MUTANTS]
    problems += [f"duplicate name {n}" for n in sorted({n for n in names if names.count(n) > 1})]
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--worktree", type=Path, default=Path(tempfile.gettempdir()) / "mutwt")
    parser.add_argument("--only", nargs="*", help="mutant names (or prefixes such as 'ibot.')")
    parser.add_argument("--check", action="store_true", help="only check that every mutant applies and compiles")
    parser.add_argument("--timeout", type=float, default=900, help="seconds per mutant (a timeout counts as killed)")
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--no-baseline", action="store_true", help="skip the unmutated run of every test set")
    parser.add_argument("--tests-from", metavar="REV",
                        help="score another revision's tests/ (e.g. the suite before a change) against HEAD's code")
    args = parser.parse_args(argv)

    worktree = args.worktree.resolve()
    prepare_worktree(worktree)
    problems = check(worktree)
    if problems:
        print("\n".join(problems))
        return 1
    if args.check:
        print(f"{len(MUTANTS)} mutants apply and compile")
        return 0
    if args.tests_from:
        swap_tests(worktree, args.tests_from)
    try:
        return score(args, worktree)
    finally:
        if args.tests_from:
            swap_tests(worktree, "HEAD")


def swap_tests(worktree: Path, revision: str) -> None:
    """Replace the worktree's tests/ by `revision`'s (git archive; nothing in the main checkout changes)."""
    import shutil

    shutil.rmtree(worktree / "tests")
    archive = subprocess.run(["git", "-C", str(worktree), "archive", revision, "tests"], capture_output=True,
                             check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(worktree)], input=archive, check=True)


def score(args, worktree: Path) -> int:
    env = environment(worktree)
    mutants = [m for m in MUTANTS if not args.only or any(m.name == o or m.name.startswith(o) for o in args.only)]
    for mutant in mutants:  # only the test files this revision has (--tests-from)
        mutant.tests = [t for t in dict.fromkeys(mutant.tests) if (worktree / t).is_file()]
    base = [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", "-m", "not slow"]
    if not args.no_baseline:
        for tests in sorted({tuple(m.tests) for m in mutants}):
            code, output, seconds = run(base + list(tests), worktree, env, args.timeout)
            print(f"baseline {' '.join(tests)}: exit {code} in {seconds:.0f} s", flush=True)
            if code != 0:
                print(output)
                return 1
    results = []
    for index, mutant in enumerate(mutants, 1):
        path = worktree / mutant.path
        original = path.read_text()
        path.write_text(original.replace(mutant.old, mutant.new))
        try:
            code, output, seconds = run(base + mutant.tests, worktree, env, args.timeout)
        finally:
            path.write_text(original)
        status = "survived" if code == 0 else "killed"
        failed = [line.split(" ")[1] for line in output.splitlines() if line.startswith("FAILED ")]
        results.append({"name": mutant.name, "what": mutant.what, "status": status, "exit": code,
                        "seconds": round(seconds, 1), "killed_by": failed[:1], "equivalent": mutant.equivalent})
        note = f" (judged equivalent: {mutant.equivalent})" if mutant.equivalent and status == "survived" else ""
        print(f"[{index}/{len(mutants)}] {status:8s} {mutant.name:45s} {seconds:5.0f} s  "
              f"{failed[0] if failed else ('exit ' + str(code) if code not in (0, 1) else '')}{note}", flush=True)
    equivalent = [r for r in results if r["status"] == "survived" and r["equivalent"]]
    survived = [r for r in results if r["status"] == "survived" and not r["equivalent"]]
    killed = [r for r in results if r["status"] == "killed"]
    scored = len(results) - len(equivalent)
    print(f"\n{len(killed)} of {scored} non-equivalent mutants killed ({100 * len(killed) / max(scored, 1):.1f} %); "
          f"{len(equivalent)} equivalent; {sum(r['seconds'] for r in results) / 60:.1f} min")
    for r in survived:
        print(f"  SURVIVED {r['name']}: {r['what']}")
    for r in equivalent:
        print(f"  equivalent {r['name']}: {r['equivalent']}")
    if args.json:
        args.json.write_text(json.dumps({"results": results, "killed": len(killed), "scored": scored}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
