"""The TIPS pretraining "meta-architecture": student, teacher, projection heads and losses in one `nn.Module`.

One module, so that DDP wraps a single model and one checkpoint holds everything. The student is a plain
`TipsModel` (exported with `save_pretrained` at the end); the teacher is never exported.

Recipes (SPEC §3):
- v1: teacher = EMA of the student vision tower and heads; iBOT on masked patches only.
- v2: teacher encoder = the student's own un-masked forward (detached); only the heads keep an EMA copy; iBOT++ on
  all patches.
- distillation (`objective.distillation_teacher`): teacher = a frozen TipsModel (typically larger); the student
  matches its CLS and patch features through a linear projector (cosine loss, all patches, no masking). [ours]
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..losses import DINOLoss, DualCaptionContrastiveLoss, IBOTPatchLoss, KoLeoLoss
from ..modeling.modeling_tips import TipsModel
from .config import PretrainConfig
from .heads import DINOHead

NO_DECAY_NAMES = ("cls_token", "register_tokens", "mask_token", "position_embeddings", "log_temperature", "logit_bias")
VISION_BLOCK = re.compile(r"vision_model\.encoder\.layers\.(\d+)\.")
# 512 MiB of float32 logits per iBOT chunk by default (objective.loss_chunk_tokens): 4096 tokens at 32k prototypes,
# the chunk's loss and gradient hold ~3 such tensors at once
CHUNK_ELEMENTS = 2**27


@dataclass
class StepOutput:
    """`loss` with its graph; `logs`: detached per-loss values, still on the device (the trainer moves them to the
    host only on logging steps, so a step never waits for the device)."""

    loss: torch.Tensor
    logs: dict[str, torch.Tensor]


def _local(tensor: torch.Tensor) -> torch.Tensor:
    """This process's shard of an FSDP2 (DTensor) parameter; the tensor itself otherwise."""
    return tensor.to_local() if hasattr(tensor, "to_local") else tensor


def _frozen(module: nn.Module) -> nn.Module:
    for param in module.parameters():
        param.requires_grad_(False)
    return module.eval()


class TipsPretrainingModel(nn.Module):
    """Student `TipsModel` + teacher + heads + losses. `forward(batch, teacher_temperature)` returns the weighted
    total loss and a dict of detached per-loss values; `update_teacher(momentum)` runs the EMA after each
    optimizer step.

    Batch keys (all on the model's device): `global_crop` (B, 3, G, G) float in [0, 1], `local_crops`
    (B, M, 3, L, L), `mask` (B, N) bool, `input_ids`/`attention_mask` (C·B, T) with the caption streams stacked in
    the order of `caption_streams` (alt-text first).
    """

    def __init__(self, student: TipsModel, config: PretrainConfig, distillation_teacher: TipsModel | None = None):
        super().__init__()
        self.config = config
        objective = config.objective
        self.student = student
        width = student.config.vision_config.hidden_size
        self.num_registers = student.config.vision_config.num_register_tokens
        self.recipe = objective.recipe
        self.distilling = distillation_teacher is not None
        self.use_distill = objective.distill_weight > 0
        self.use_mask = objective.mask_weight > 0
        self.caption_streams = [
            name for name, on in (("alt_text", objective.use_alt_text), ("synthetic", objective.use_synthetic)) if on
        ]
        self.use_clip = objective.clip_weight > 0 and bool(self.caption_streams)

        self.contrastive = DualCaptionContrastiveLoss(objective.contrastive)
        if objective.contrastive == "sigmoid":
            self.logit_bias = nn.Parameter(torch.full((2,), -10.0))  # SigLIP's initialisation
        else:
            self.logit_bias = None
        self.koleo = KoLeoLoss() if objective.koleo_weight > 0 else None

        if self.distilling:
            teacher_width = distillation_teacher.config.vision_config.hidden_size
            self.teacher_model = _frozen(distillation_teacher)
            self.projector = nn.Linear(width, teacher_width)
        elif self.use_distill or self.use_mask:
            head = dict(
                hidden_dim=objective.head_hidden_dim,
                bottleneck_dim=objective.head_bottleneck_dim,
                num_layers=objective.head_layers,
                precision=objective.prototype_precision,
            )
            self.student_cls_head = DINOHead(width, objective.head_prototypes, **head)
            self.student_patch_head = (
                self.student_cls_head if objective.share_heads else DINOHead(width, objective.patch_prototypes, **head)
            )
            self.teacher_cls_head = _frozen(copy.deepcopy(self.student_cls_head))
            self.teacher_patch_head = (
                self.teacher_cls_head if objective.share_heads else _frozen(copy.deepcopy(self.student_patch_head))
            )
            if self.recipe == "v1":
                self.teacher_vision = _frozen(copy.deepcopy(student.vision_model))
            losses = dict(
                student_temperature=objective.student_temperature,
                center_momentum=objective.center_momentum,
                centering=objective.centering,
            )
            self.dino_loss = DINOLoss(objective.head_prototypes, **losses)
            self.ibot_loss = IBOTPatchLoss(
                objective.patch_prototypes,
                mode="masked" if self.recipe == "v1" else "all",
                normalisation=objective.ibot_normalisation,
                visible_weight=objective.ibot_visible_weight,
                **losses,
            )

    # ------------------------------------------------------------------------------------------------------------
    def train(self, mode: bool = True) -> TipsPretrainingModel:
        super().train(mode)
        for name in ("teacher_vision", "teacher_cls_head", "teacher_patch_head", "teacher_model"):
            if hasattr(self, name):
                getattr(self, name).eval()  # teachers never drop out
        return self

    def freeze_unused(self) -> None:
        """Parameters this objective never uses get no gradient (DDP requires every trainable one to be used)."""
        unused: list[nn.Module | nn.Parameter] = []
        if not self.use_mask or self.distilling:
            unused.append(self.student.vision_model.embeddings.mask_token)
        if not self.use_clip:
            unused += [self.student.text_model, self.student.log_temperature]
            if self.logit_bias is not None:
                unused.append(self.logit_bias)
        if hasattr(self, "student_cls_head") and not self.config.objective.share_heads:
            if not self.use_distill:
                unused.append(self.student_cls_head)
            if not self.use_mask:
                unused.append(self.student_patch_head)
        for item in unused:
            for param in item.parameters() if isinstance(item, nn.Module) else [item]:
                param.requires_grad_(False)

    def lr_scale(self, name: str, layer_decay: float = 1.0, patch_embed_lr_mult: float = 1.0) -> float:
        """LR factor of a parameter (DINOv2/BEiT layer-wise decay): vision block i of L gets `decay^(L − i)`, the
        vision embeddings `decay^(L + 1) · patch_embed_lr_mult` (the patch embedding; tokens without the
        multiplier), the rest (final norm, text tower, heads, temperatures) 1."""
        if "vision_model." not in name or (layer_decay == 1.0 and patch_embed_lr_mult == 1.0):
            return 1.0
        depth = self.student.config.vision_config.num_hidden_layers if hasattr(self.student, "config") else 0
        block = VISION_BLOCK.search(name)
        if block:
            return layer_decay ** (depth - int(block.group(1)))
        if "vision_model.embeddings." in name:
            scale = layer_decay ** (depth + 1)
            return scale * patch_embed_lr_mult if "patch_embedding" in name else scale
        return 1.0

    def parameter_groups(
        self, weight_decay: float, layer_decay: float = 1.0, patch_embed_lr_mult: float = 1.0
    ) -> list[dict]:
        """AdamW groups by (weight decay, LR factor): no weight decay on biases, norms, tokens, temperatures (1-D
        params and named tokens); `lr_scale` from `lr_scale` (the trainer sets `lr = scheduled lr · lr_scale`)."""
        groups: dict[tuple[bool, float], list[nn.Parameter]] = {}
        for name, param in self.named_parameters():
            if not param.requires_grad:
                continue
            decay = not (param.ndim < 2 or name.split(".")[-1] in NO_DECAY_NAMES)
            groups.setdefault((decay, self.lr_scale(name, layer_decay, patch_embed_lr_mult)), []).append(param)
        return [
            {"params": params, "weight_decay": weight_decay if decay else 0.0, "apply_decay": decay, "lr_scale": scale}
            for (decay, scale), params in sorted(groups.items(), key=lambda item: (not item[0][0], -item[0][1]))
        ]

    def last_layer_parameters(self) -> list[nn.Parameter]:
        """The heads' prototype weights (frozen for `optim.freeze_last_layer_steps`, as in DINO)."""
        heads = [getattr(self, n) for n in ("student_cls_head", "student_patch_head") if hasattr(self, n)]
        unique = {id(h.prototypes.weight): h.prototypes.weight for h in heads}
        return [p for p in unique.values() if p.requires_grad]

    @torch.no_grad()
    def update_teacher(self, momentum: float) -> None:
        """After each optimizer step (every process): the loss centres move once with the statistics of all its
        micro-batches, then the EMA teacher ← m · teacher + (1 − m) · student (v1: vision tower + heads; v2: heads
        only)."""
        for name in ("dino_loss", "ibot_loss"):
            if hasattr(self, name):
                getattr(self, name).center.apply()
        pairs = []
        if hasattr(self, "teacher_cls_head"):
            pairs.append((self.teacher_cls_head, self.student_cls_head))
            if self.teacher_patch_head is not self.teacher_cls_head:
                pairs.append((self.teacher_patch_head, self.student_patch_head))
        if hasattr(self, "teacher_vision"):
            pairs.append((self.teacher_vision, self.student.vision_model))
        if not pairs or momentum >= 1.0:
            return
        # FSDP2 shards teacher and student alike: the EMA runs on the local shards
        teacher = [_local(p) for t, _ in pairs for p in t.parameters()]
        student = [_local(p.detach()) for _, s in pairs for p in s.parameters()]
        torch._foreach_lerp_(teacher, student, 1.0 - momentum)

    # ------------------------------------------------------------------------------------------------------------
    def forward(self, batch: dict[str, torch.Tensor], teacher_temperature: float) -> StepOutput:
        objective = self.config.objective
        images = batch["global_crop"]
        batch_size = images.shape[0]
        first_patch = 1 + self.num_registers
        vision = self.student.vision_model
        logs: dict[str, torch.Tensor] = {}
        total = images.new_zeros(())

        # Student global view: un-masked (contrastive, v2 teacher) and masked (MIM) in one batched forward.
        masked_view = self.use_mask and not self.distilling
        if masked_view:
            no_mask = torch.zeros_like(batch["mask"])
            tokens = vision(
                pixel_values=torch.cat([images, images]), bool_masked_pos=torch.cat([no_mask, batch["mask"]])
            ).last_hidden_state
            unmasked, masked = tokens[:batch_size], tokens[batch_size:]
        else:
            unmasked, masked = vision(pixel_values=images).last_hidden_state, None

        if self.use_clip:
            text = self.student.text_model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
            # float32 from here: the contrastive logits are cosines ÷ temperatures near 0.005
            text_embeds = F.normalize(text.pooler_output.float(), dim=-1).chunk(len(self.caption_streams))
            captions = dict(zip(self.caption_streams, text_embeds))
            clip = self.contrastive(
                F.normalize(unmasked[:, 0].float(), dim=-1),
                F.normalize(unmasked[:, 1].float(), dim=-1),
                captions.get("alt_text"),
                captions.get("synthetic"),
                self.student.temperature,
                self.logit_bias,
            )
            logs.update({f"clip/{k}": v for k, v in clip.items()})
            total = total + objective.clip_weight * clip["loss"]
            temperature = self.student.temperature.detach()
            logs["temperature/alt_text"], logs["temperature/synthetic"] = temperature[0], temperature[1]

        if self.koleo is not None:
            koleo = self.koleo(unmasked[:, 0])
            logs["koleo"] = koleo
            total = total + objective.koleo_weight * koleo

        if self.distilling:
            total = total + self._distillation(batch, unmasked, first_patch, logs)
        elif self.use_distill or self.use_mask:
            total = total + self._self_distillation(batch, unmasked, masked, first_patch, teacher_temperature, logs)
        logs["loss"] = total
        return StepOutput(total, {k: v.detach() for k, v in logs.items()})

    def _teacher_tokens(self, images: torch.Tensor, unmasked: torch.Tensor) -> torch.Tensor:
        if self.recipe == "v1":
            with torch.no_grad():
                return self.teacher_vision(pixel_values=images).last_hidden_state
        vision = self.student.vision_model
        drop_path = getattr(vision.config, "drop_path_rate", 0.0)
        if self.config.objective.v2_teacher == "student_view" or not self.training or not drop_path:
            return unmasked.detach()  # v2: the student's own un-masked view is the teacher's
        # clean_pass: the same encoder without drop-path (eval mode), no gradient: targets without stochastic depth
        with torch.no_grad():
            vision.eval()
            try:
                return vision(pixel_values=images).last_hidden_state
            finally:
                vision.train(True)

    def _self_distillation(self, batch, unmasked, masked, first_patch, teacher_temperature, logs) -> torch.Tensor:
        objective = self.config.objective
        teacher_tokens = self._teacher_tokens(batch["global_crop"], unmasked)
        total = unmasked.new_zeros(())
        # Each head's prototypes are normalised once per step (a shared head's once for both losses).
        student_prototypes = {id(h): h.unit_prototypes() for h in (self.student_cls_head, self.student_patch_head)}
        with torch.no_grad():
            teacher_prototypes = {id(h): h.unit_prototypes() for h in (self.teacher_cls_head, self.teacher_patch_head)}
        if self.use_distill:
            head, teacher_head = self.student_cls_head, self.teacher_cls_head
            with torch.no_grad():  # the centre moves once per optimizer step (update_teacher)
                teacher_logits = teacher_head.logits(
                    teacher_head.bottleneck(teacher_tokens[:, 0]), teacher_prototypes[id(teacher_head)]
                )
                targets = self.dino_loss.teacher_targets(teacher_logits, teacher_temperature, update=False)
            local = batch["local_crops"]
            batch_size, crops = local.shape[:2]
            local_cls = self.student.vision_model(pixel_values=local.flatten(0, 1)).last_hidden_state[:, 0]
            student = head.logits(head.bottleneck(local_cls), student_prototypes[id(head)])
            student = student.reshape(batch_size, crops, -1).transpose(0, 1)
            dino = self.dino_loss(student, targets)
            logs["distill"] = dino
            total = total + objective.distill_weight * dino
        if self.use_mask:
            mask = batch["mask"]
            teacher_patches = teacher_tokens[:, first_patch:]
            student_patches = masked[:, first_patch:]
            if self.recipe == "v1":
                # Only masked patches are supervised: run the heads on them alone. Masks hold exactly
                # round(ratio · N) patches (MaskGenerator), so the count comes from the config, not the device.
                count = int(round(objective.mask_ratio * mask.shape[1]))
                order = torch.argsort(mask.to(torch.uint8), dim=1, descending=True, stable=True)[:, :count, None]
                teacher_patches = torch.gather(teacher_patches, 1, order.expand(-1, -1, teacher_patches.shape[-1]))
                student_patches = torch.gather(student_patches, 1, order.expand(-1, -1, student_patches.shape[-1]))
                patch_mask = torch.ones(mask.shape[0], count, dtype=torch.bool, device=mask.device)
            else:
                patch_mask = mask
            chunk = objective.loss_chunk_tokens or max(1, CHUNK_ELEMENTS // objective.patch_prototypes)
            head, teacher_head = self.student_patch_head, self.teacher_patch_head
            # The MLPs run once over all tokens (large GEMMs); only the K-wide part is chunked, inside the loss.
            with torch.no_grad():
                teacher_features = teacher_head.bottleneck(teacher_patches)
            ibot = self.ibot_loss.loss_from_features(
                head.bottleneck(student_patches), student_prototypes[id(head)], teacher_features,
                teacher_prototypes[id(teacher_head)], patch_mask, teacher_temperature, chunk, update=False,
                matmul_dtype=head.matmul_dtype(student_patches.device.type),
            )
            logs["mask"] = ibot
            total = total + objective.mask_weight * ibot
        return total

    def _distillation(self, batch, unmasked, first_patch, logs) -> torch.Tensor:
        """Feature distillation from a frozen TipsModel: CLS (both heads, from local crops against the teacher's
        global view) and every patch of the global view, cosine distance through a linear projector."""
        objective = self.config.objective
        images = batch["global_crop"]
        with torch.no_grad():
            teacher = self.teacher_model.vision_model(pixel_values=images).last_hidden_state
        teacher_first = 1 + self.teacher_model.config.vision_config.num_register_tokens
        total = unmasked.new_zeros(())
        if self.use_distill:
            local = batch["local_crops"]
            batch_size, crops = local.shape[:2]
            local_cls = self.student.vision_model(pixel_values=local.flatten(0, 1)).last_hidden_state[:, :2]
            student = self.projector(local_cls).reshape(batch_size, crops, 2, -1)
            cls = 1 - F.cosine_similarity(student, teacher[:, None, :2].float(), dim=-1).mean()
            logs["distill"] = cls
            total = total + objective.distill_weight * cls
        if self.use_mask:
            student = self.projector(unmasked[:, first_patch:])
            patches = 1 - F.cosine_similarity(student, teacher[:, teacher_first:].float(), dim=-1).mean()
            logs["mask"] = patches
            total = total + objective.mask_weight * patches
        return total
