"""Typed pretraining configuration: a YAML file, overridden by `--section.key value` / `section.key=value` arguments.

Every field has a one-line description; unknown keys and ill-typed values raise a ValueError naming the key.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


@dataclass
class ModelConfig:
    preset: str | None = None  # TipsConfig preset to build (e.g. tips-v2-b14); None: use `vision`/`text` below
    vision: dict = field(default_factory=dict)  # TipsVisionConfig fields (override the preset's)
    text: dict = field(default_factory=dict)  # TipsTextConfig fields (override the preset's)
    init_from: str | None = None  # start from a TipsModel folder instead of random weights
    # a previous stage's checkpoint-<step> folder: its self-distillation heads, teacher and loss centres carry over
    # (the student comes from init_from); e.g. the 448-px stage continuing the 224-px run
    init_heads_from: str | None = None
    tokenizer: str | None = None  # tokenizer.model; None: the embedded dataset's tokenizer
    temperature_init: float = 0.07  # initial softmax temperature of both heads (released models end near 0.005)
    temperature_min: float = 0.001  # clamp range of the learnable temperatures (admits the released values)
    temperature_max: float = 1.0
    attn_implementation: str = "sdpa"  # eager | sdpa | flash_attention_2 | flex_attention
    drop_path_rate: float = 0.0  # stochastic depth of the student vision tower


@dataclass
class DataConfig:
    source: str = "scenes"  # scenes | imagefolder | parquet | arrow | webdataset | hub (datasets.load_dataset name)
    path: str | None = None  # folder, file glob or dataset name (not used by `scenes`)
    split: str = "train"  # split to train on
    streaming: bool = False  # stream instead of loading (large corpora; resume skips consumed samples)
    image_column: str = "image"  # column holding the image (decoded PIL or bytes/path)
    alt_text_column: str = "alt_text"  # noisy web caption for the alt-text head
    synthetic_columns: list[str] = field(default_factory=lambda: ["synthetic_caption"])  # synthetic caption columns
    num_examples: int = 2000  # size of the embedded `scenes` training split
    scene_image_size: int = 112  # image side of the embedded scenes
    scene_options: dict = field(default_factory=dict)  # other SceneConfig fields (e.g. max_objects) of the scenes
    global_size: int = 112  # global crop side (224 low-res stage, 448 high-res stage)
    local_size: int = 56  # local crop side (98 with 224 globals, 140 with 448)
    num_local_crops: int = 6  # M local crops per image (the paper's 6)
    global_scale: tuple[float, float] = (0.32, 1.0)  # random-resized-crop area range of the global crop
    local_scale: tuple[float, float] = (0.05, 0.32)  # ... of the local crops
    flip_probability: float = 0.5  # horizontal flips
    num_workers: int = 0  # DataLoader worker processes
    max_text_length: int = 64  # tokens per caption


@dataclass
class ObjectiveConfig:
    recipe: str = "v2"  # v1 (EMA teacher, iBOT on masked patches) | v2 (head-only EMA, iBOT++ on all patches)
    contrastive: str = "softmax"  # softmax (paper) | sigmoid (SigLIP)
    use_alt_text: bool = True  # CLS-1 ↔ alt-text contrastive term
    use_synthetic: bool = True  # CLS-2 ↔ synthetic caption contrastive term
    synthetic_sampling: str = "random"  # random (v2 multi-granularity) | first (v1: the first synthetic column)
    clip_weight: float = 1.0  # weight of the contrastive loss (mean of the heads)
    distill_weight: float = 1.0  # weight of the CLS self-distillation (DINO) loss; 0 disables it
    mask_weight: float = 2.0  # weight of the masked-image-modeling loss; 0 disables it
    koleo_weight: float = 0.0  # KoLeo regulariser on the student's un-masked CLS (off in the paper)
    mask_ratio: float = 0.75  # fraction of global-crop patches masked for the student
    mask_mode: str = "random"  # random | block
    ibot_normalisation: str = "masked_plus_visible"  # v2: masked_plus_visible | mean
    ibot_visible_weight: float = 1.0  # v2: weight of the visible-patch term
    centering: str = "softmax"  # softmax (EMA centre) | sinkhorn
    head_prototypes: int = 1024  # prototypes of the CLS (DINO) head (32k at scale)
    patch_prototypes: int = 1024  # prototypes of the patch (iBOT) head
    share_heads: bool = False  # one head for CLS and patches
    head_hidden_dim: int = 512  # MLP width of the heads (2048 at scale)
    head_bottleneck_dim: int = 128  # bottleneck before the prototypes (256 at scale)
    head_layers: int = 3  # MLP layers of the heads
    student_temperature: float = 0.1  # τ_s
    teacher_temperature: float = 0.07  # τ_t after warm-up
    teacher_temperature_warmup: float = 0.04  # τ_t at step 0
    teacher_temperature_warmup_steps: int = 100  # linear τ_t warm-up
    center_momentum: float = 0.9  # EMA momentum of the softmax centres
    distillation_teacher: str | None = None  # distillation mode: a frozen (larger) TipsModel folder as teacher
    # iBOT head + loss in chunks of this many tokens (recomputed in backward); None: 2^24 ÷ patch_prototypes tokens
    # (64 MiB of float32 logits a chunk; one chunk, no recomputation, whenever the batch fits)
    loss_chunk_tokens: int | None = None
    # v2 teacher tokens: clean_pass (a no-grad pass without drop-path) | student_view (the student's un-masked view,
    # drop-path included); equal when drop_path_rate is 0
    v2_teacher: str = "clean_pass"


@dataclass
class TeacherConfig:
    momentum: float = 0.994  # EMA momentum at step 0
    momentum_final: float = 1.0  # at the last step (cosine); equal to `momentum` for a fixed momentum


@dataclass
class OptimConfig:
    lr: float = 5e-4  # peak learning rate (AdamW)
    min_lr: float = 1e-5  # final learning rate (cosine)
    warmup_steps: int = 50  # linear warm-up from 0
    weight_decay: float = (
        0.04  # at step 0 (cosine to `weight_decay_final`); none on biases, norms, tokens, temperatures
    )
    weight_decay_final: float = 0.2
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    grad_clip: float = 3.0  # max gradient norm; 0 disables clipping
    fused: bool = False  # torch's fused AdamW (CUDA)
    layer_decay: float = 1.0  # layer-wise LR decay of the vision tower: block i of L gets lr · decay^(L − i)
    patch_embed_lr_mult: float = 1.0  # extra LR factor of the patch embedding (DINOv2: 0.2)
    freeze_last_layer_steps: int = 0  # the heads' prototype layers get no update for this many steps (DINO)


@dataclass
class EvalConfig:
    num_examples: int = 200  # validation images
    split: str = "validation"  # scenes split to score on (tune recipes on `test`, report `validation`)
    probe_train_examples: int = 200  # images to fit the linear probe on (from the training split)
    batch_size: int = 50
    image_size: int | None = None  # evaluation resolution; None: data.global_size
    retrieval_ks: tuple[int, ...] = (1, 5)


@dataclass
class LoraConfig:
    enabled: bool = False  # wrap the student with LoRA adapters (fine-tuning; the base weights stay frozen)
    preset: str = "all"  # tips_hf.lora.PRESETS: vision, text, all, vision-attention, ...
    r: int = 8  # adapter rank
    alpha: int = 16  # LoRA scaling numerator
    dropout: float = 0.0
    target_modules: str | None = None  # a regex over module names, instead of the preset


@dataclass
class TrainingConfig:
    output_dir: str = "outputs/pretrain"
    max_steps: int = 200
    batch_size: int = 32  # per process, per micro-batch
    gradient_accumulation_steps: int = 1
    mixed_precision: str = "no"  # no | bf16 | fp16
    gradient_checkpointing: bool = False
    compile: bool = False  # torch.compile the student forward
    seed: int = 0
    logging_steps: int = 10
    save_steps: int = 100
    eval_steps: int = 0  # 0: evaluate only at the end
    keep_last: int = 2  # checkpoints kept
    report_to: str = "tensorboard"  # tensorboard | trackio | none
    resume_from_checkpoint: str | None = None  # latest | a checkpoint folder
    progress_bar: bool = True
    distributed: str = "ddp"  # ddp | fsdp (torch FSDP2: per block, then the root; sharded checkpoints)
    cpu_threads: int | None = None  # torch threads per process on CPU; None: cores ÷ processes (accelerate sets 1)


@dataclass
class PretrainConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    lora: LoraConfig = field(default_factory=LoraConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def validate(self) -> PretrainConfig:
        choices = {
            "objective.recipe": ("v1", "v2"),
            "objective.contrastive": ("softmax", "sigmoid"),
            "objective.mask_mode": ("random", "block"),
            "objective.centering": ("softmax", "sinkhorn"),
            "objective.synthetic_sampling": ("random", "first"),
            "objective.ibot_normalisation": ("masked_plus_visible", "mean"),
            "training.mixed_precision": ("no", "bf16", "fp16"),
            "training.report_to": ("tensorboard", "trackio", "none"),
            "training.distributed": ("ddp", "fsdp"),
            "objective.v2_teacher": ("clean_pass", "student_view"),
            "data.source": ("scenes", "imagefolder", "parquet", "arrow", "webdataset", "hub"),
            "eval.split": ("validation", "test"),
        }
        for key, allowed in choices.items():
            section, name = key.split(".")
            value = getattr(getattr(self, section), name)
            if value not in allowed:
                raise ValueError(f"{key} must be one of {allowed}, got {value!r}.")
        if not 0.0 < self.objective.mask_ratio < 1.0:
            raise ValueError(f"objective.mask_ratio must be in (0, 1), got {self.objective.mask_ratio}.")
        if not (self.objective.use_alt_text or self.objective.use_synthetic) and self.objective.clip_weight > 0:
            raise ValueError("objective.clip_weight > 0 needs objective.use_alt_text or objective.use_synthetic.")
        for key in ("global_size", "local_size"):
            if getattr(self.data, key) % 14:
                raise ValueError(f"data.{key} must be a multiple of the patch size 14, got {getattr(self.data, key)}.")
        if self.data.source != "scenes" and not self.data.path:
            raise ValueError(f"data.path is required with data.source={self.data.source!r} (a folder, files or a Hub id).")
        if self.objective.distill_weight > 0 and self.data.num_local_crops < 1:
            raise ValueError("objective.distill_weight > 0 needs data.num_local_crops >= 1.")
        for key in ("max_steps", "batch_size", "gradient_accumulation_steps", "logging_steps"):
            if getattr(self.training, key) < 1:
                raise ValueError(f"training.{key} must be >= 1, got {getattr(self.training, key)}.")
        return self


def _coerce(value: Any, annotation: Any, key: str) -> Any:
    """Convert a YAML/CLI value to the field's annotated type; a clear error naming the key otherwise."""
    if isinstance(annotation, str):
        annotation = eval(annotation, {**vars(typing), "typing": typing})  # noqa: S307 - our own annotations only
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except ValueError as error:
                errors.append(str(error))
        raise ValueError(errors[0] if errors else f"{key}: bad value {value!r}")
    if annotation is Any:
        return value
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"{key} must be a list, got {value!r}.")
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise ValueError(f"{key} must have {len(args)} items, got {value!r}.")
            return tuple(_coerce(v, a, key) for v, a in zip(value, args))
        inner = args[0] if args else Any
        items = [_coerce(v, inner, key) for v in value]
        return tuple(items) if origin is tuple else items
    if origin is dict or annotation is dict:
        if not isinstance(value, dict):
            raise ValueError(f"{key} must be a mapping, got {value!r}.")
        return dict(value)
    if annotation is bool:
        if isinstance(value, bool):
            return value
        raise ValueError(f"{key} must be true or false, got {value!r}.")
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{key} must be an integer, got {value!r}.")
        return value
    if annotation is float:
        if isinstance(value, str):  # YAML 1.1 reads "3e-3" (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"{key} must be a number, got {value!r}.")
        return float(value)
    if annotation is str:
        if not isinstance(value, str):
            raise ValueError(f"{key} must be a string, got {value!r}.")
        return value
    return value


def _apply(config: PretrainConfig, section: str, values: dict, source: str) -> None:
    if not hasattr(config, section):
        sections = ", ".join(f.name for f in dataclasses.fields(PretrainConfig))
        raise ValueError(f"{source}: unknown section {section!r} (sections: {sections}).")
    target = getattr(config, section)
    hints = typing.get_type_hints(type(target))
    names = {f.name for f in dataclasses.fields(target)}
    for key, value in (values or {}).items():
        if key not in names:
            raise ValueError(f"{source}: unknown key {section}.{key} (known: {', '.join(sorted(names))}).")
        setattr(target, key, _coerce(value, hints[key], f"{source}: {section}.{key}"))


def parse_overrides(overrides: list[str] | None) -> list[tuple[str, str, Any]]:
    """`section.key=value` strings → (section, key, YAML-parsed value) triples; a clear error for other shapes."""
    parsed = []
    for item in overrides or []:
        if "=" not in item or "." not in item.split("=", 1)[0]:
            raise ValueError(f"override {item!r} must look like section.key=value (e.g. training.max_steps=100).")
        key, raw = item.split("=", 1)
        section, name = key.split(".", 1)
        parsed.append((section, name, yaml.safe_load(raw)))
    return parsed


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> PretrainConfig:
    """A `PretrainConfig` from a YAML file (sections as in the dataclasses) and `section.key=value` overrides (values
    parsed as YAML, e.g. `objective.recipe=v1`, `data.global_scale=[0.4,1.0]`)."""
    config = PretrainConfig()
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ValueError(f"config file {path} does not exist.")
        try:
            document = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as error:
            raise ValueError(f"{path}: not valid YAML ({error}).") from None
        if not isinstance(document, dict):
            raise ValueError(f"{path}: the top level must be a mapping of sections.")
        for section, values in document.items():
            if not isinstance(values, dict):
                raise ValueError(f"{path}: section {section!r} must be a mapping.")
            _apply(config, section, values, str(path))
    for section, key, value in parse_overrides(overrides):
        _apply(config, section, {key: value}, "command line")
    return config.validate()


def save_config(config: PretrainConfig, path: str | Path) -> None:
    data = config.to_dict()
    for section in data.values():
        for key, value in section.items():
            if isinstance(value, tuple):
                section[key] = list(value)
    Path(path).write_text(yaml.safe_dump(data, sort_keys=False))
