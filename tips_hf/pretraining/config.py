"""Typed training configuration: one loader for the pretraining and the fine-tuning schemas.

A schema (`Schema`) is a dataclass of sections (`Section`), each a dataclass of settings declared with `setting(default,
help)`. Values come from a YAML file (after the files its `base:` names, in order), then `--section.key VALUE` flags and
`section.key=value` overrides (values parsed as YAML). They are checked against the type hints (`Literal[...]` choices, integers, numbers, lists, ...); an error
names the file (or the command line), the section and the key, suggests a close match for an unknown key and repeats
the setting's help, which `training/pretrain.py --help` and `training/finetune.py --help` also print.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import difflib
import functools
import inspect
import os
import tempfile
import types
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml

from ..lora import PRESETS, lora_config
from ..modeling.configuration_tips import TipsConfig
from .tracking import REPORT_TO_HELP, tracker_names


# --------------------------------------------------------------------------------------------------------- loader
def setting(default: Any, help: str) -> Any:
    """A dataclass field with a help text (shown by `--help` and in errors); a list/dict default is copied per
    instance."""
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: copy.deepcopy(default), metadata={"help": help})
    return field(default=default, metadata={"help": help})


class _Mismatch(Exception):
    """A value that does not fit a type (the caller names the key and the expected type)."""


def _describe(annotation: Any) -> str:
    """The type in words, for errors: `int | None` → "an integer or null"."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        words = [_describe(arg) for arg in args if arg is not type(None)]
        return " or ".join(words + (["null"] if type(None) in args else []))
    if origin is Literal:
        return "one of " + ", ".join(repr(arg) for arg in args)
    if origin is tuple and args[-1] is not Ellipsis:
        return f"a list of {len(args)} items ({', '.join(_describe(arg) for arg in args)})"
    if origin in (list, tuple):
        return f"a list (items: {_describe(args[0])})"
    if origin is dict:
        return f"a mapping ({_describe(args[0])} → {_describe(args[1])})"
    words = {bool: "true or false", int: "an integer", float: "a number", str: "a string", dict: "a mapping",
             list: "a list"}
    return words.get(annotation, f"a {getattr(annotation, '__name__', annotation)}")


def _convert(value: Any, annotation: Any) -> Any:
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is not type(None):
                try:
                    return _convert(value, arg)
                except _Mismatch:
                    pass
        raise _Mismatch
    if origin is Literal:
        if any(value == arg and type(value) is type(arg) for arg in args):
            return value
        raise _Mismatch
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise _Mismatch
        if origin is tuple and args[-1] is not Ellipsis:  # fixed length, e.g. tuple[float, float]
            if len(value) != len(args):
                raise _Mismatch
            return tuple(_convert(item, arg) for item, arg in zip(value, args))
        items = [_convert(item, args[0]) for item in value]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise _Mismatch
        return {_convert(k, args[0]): _convert(v, args[1]) for k, v in value.items()}
    if annotation is float:
        if isinstance(value, str):  # YAML 1.1 reads "3e-3" (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                raise _Mismatch from None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _Mismatch
        return float(value)
    if annotation is int and isinstance(value, bool):  # bool is an int subclass; `true` is no step count
        raise _Mismatch
    if not isinstance(value, annotation):  # bool, int, str, a bare dict/list, or a class (peft's own configs)
        raise _Mismatch
    return value


def coerce(value: Any, annotation: Any, key: str) -> Any:
    """`value` (from YAML or the command line) converted to the type `annotation`; a ValueError naming `key` and the
    expected type otherwise."""
    try:
        return _convert(value, annotation)
    except _Mismatch:
        close = difflib.get_close_matches(str(value), [str(choice) for choice in _choices(annotation)], n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(f"{key} must be {_describe(annotation)}, got {value!r}{hint}.") from None


def _choices(annotation: Any) -> list[Any]:
    """The Literal values an annotation admits (also inside a union)."""
    if typing.get_origin(annotation) is Literal:
        return list(typing.get_args(annotation))
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return [choice for arg in typing.get_args(annotation) for choice in _choices(arg)]
    return []


def _unknown(source: str, what: str, name: str, known: Iterable[str]) -> str:
    known = sorted(known)
    close = difflib.get_close_matches(name, known, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"{source}: unknown {what}{hint}; known: {', '.join(known)}."


def _checked(value: Any, annotation: Any, source: str, key: str, help: str) -> Any:
    try:
        return coerce(value, annotation, key)
    except ValueError as error:
        raise ValueError(f"{source}: {error}\n  {key}: {help}") from None


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


class Section:
    """Base of the config sections: dataclasses of settings, each with a type hint and a help text."""

    @classmethod
    def settings(cls) -> list[dataclasses.Field]:
        return [f for f in dataclasses.fields(cls) if f.init]

    def set(self, section: str, key: str, value: Any, source: str) -> None:
        """Set `key` to `value` converted to its type; a ValueError naming `source`, `section` and `key` otherwise."""
        fields = {f.name: f for f in self.settings()}
        if key not in fields:
            raise ValueError(_unknown(source, f"key {section}.{key}", key, fields))
        help = fields[key].metadata["help"]
        setattr(self, key, _checked(value, _hints(type(self))[key], source, f"{section}.{key}", help))

    def to_dict(self) -> dict[str, Any]:
        return {f.name: copy.deepcopy(getattr(self, f.name)) for f in self.settings()}


S = TypeVar("S", bound="Schema")


BASE_KEY = "base"  # a config file's list of files it builds on


def read_yaml(path: str | os.PathLike) -> dict[str, Any]:
    """A config file's mapping of sections (and its `base:` file or list of files); a ValueError naming the file if it
    is missing, not YAML or not a mapping of mappings."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"cannot read config {path}: the file does not exist.")
    try:
        document = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise ValueError(f"{path}: not valid YAML ({error}).") from None
    if not isinstance(document, dict):
        raise ValueError(f"{path}: the top level must be a mapping of sections, got {document!r}.")
    for section, values in document.items():
        if section == BASE_KEY:
            files = [values] if isinstance(values, str) else values
            if not isinstance(files, list) or not files or not all(isinstance(file, str) for file in files):
                raise ValueError(f"{path}: base must be a file or a list of files (relative to the config), "
                                 f"got {values!r}.")
        elif not isinstance(values, dict):
            raise ValueError(f"{path}: section {section!r} must be a mapping of settings, got {values!r}.")
    return document


def config_documents(path: str | os.PathLike, chain: tuple[Path, ...] = ()) -> list[tuple[str, dict[str, Any]]]:
    """(file, sections) of a config and of the files it builds on, in the order they apply: the files its `base:`
    names (a file or a list, relative to the config; each after its own bases), in order, then the file itself. A
    file reached twice applies once, at its first place; a cycle is an error naming the files."""
    path = Path(os.path.normpath(path))
    if path.resolve() in chain:
        raise ValueError(f"{path}: base files form a cycle: {' -> '.join(map(str, (*chain, path.resolve())))}.")
    document = read_yaml(path)
    bases = document.pop(BASE_KEY, [])
    documents = []
    for base in [bases] if isinstance(bases, str) else bases:
        if not (path.parent / base).is_file():
            raise ValueError(f"{path}: base {base!r} does not exist ({os.path.normpath(path.parent / base)}).")
        documents += config_documents(path.parent / base, (*chain, path.resolve()))
    documents.append((str(path), document))
    applied, ordered = set(), []
    for file, sections in documents:
        if Path(file).resolve() not in applied:
            applied.add(Path(file).resolve())
            ordered.append((file, sections))
    return ordered


def parse_overrides(overrides: Iterable[str] | None) -> list[tuple[str, str, Any]]:
    """`section.key=value` strings → (section, key, YAML-parsed value) triples; a clear error for other shapes."""
    parsed = []
    for item in overrides or []:
        if "=" not in item or "." not in item.split("=", 1)[0]:
            raise ValueError(f"override {item!r} must look like section.key=value (e.g. training.max_steps=100).")
        key, raw = item.split("=", 1)
        section, name = key.split(".", 1)
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError as error:
            raise ValueError(f"command line: {key}: {raw!r} is not a valid YAML value ({error}).") from None
        parsed.append((section, name, value))
    return parsed


class Schema:
    """Base of a training configuration: a dataclass whose fields are `Section`s; `load` fills it, then calls the
    subclass's `validate()` (checks across settings; the types are already checked), which returns the config."""

    @classmethod
    def load(cls: type[S], path: str | os.PathLike | None = None, overrides: Iterable[str] | None = None) -> S:
        """Defaults, then the YAML file's base files and sections (`config_documents`), then the `section.key=value`
        overrides; then `validate()`. `config.sources` maps each `section.key` set to the file (or "command line")
        that set it last; a validation error names it."""
        config = cls()
        items = []
        if path is not None:
            items = [(section, key, value, file) for file, document in config_documents(path)
                     for section, values in document.items() for key, value in values.items()]
        items += [(section, key, value, "command line") for section, key, value in parse_overrides(overrides)]
        names = [f.name for f in dataclasses.fields(cls)]
        config.sources = {}
        for section, key, value, source in items:
            if section not in names:
                raise ValueError(_unknown(source, f"section {section!r}", section, names))
            getattr(config, section).set(section, key, value, source)
            config.sources[f"{section}.{key}"] = source
        try:
            return config.validate()
        except ValueError as error:
            named = [f"{key} from {source}" for key, source in config.sources.items() if key in str(error)]
            raise ValueError(f"{error}" + (f"\n  ({'; '.join(named)})" if named else "")) from None

    def to_dict(self) -> dict[str, dict[str, Any]]:
        return {f.name: getattr(self, f.name).to_dict() for f in dataclasses.fields(self)}


def _plain(config: Schema) -> dict[str, dict[str, Any]]:
    """`config.to_dict()` with YAML's types (tuples as lists)."""
    return {name: {key: list(value) if isinstance(value, tuple) else value for key, value in section.items()}
            for name, section in config.to_dict().items()}


def format_config(config: Schema) -> str:
    """`config` as YAML that `load` reads back, one setting a line; a setting that a file or the command line set
    ends with a comment naming it (`config.sources`). What `--print-config` prints."""
    sources = getattr(config, "sources", {})
    lines = []
    for name, section in _plain(config).items():
        lines.append(f"{name}:")
        for key, value in section.items():
            text = yaml.safe_dump([value], default_flow_style=True, width=float("inf")).strip()[1:-1]
            source = sources.get(f"{name}.{key}")
            lines.append(f"  {key}: {text}" + (f"  # {source}" if source else ""))
    return "\n".join(lines) + "\n"


def save_config(config: Schema, path: str | os.PathLike) -> None:
    """`config` as YAML that `load` reads back (written to a temporary file, then renamed)."""
    data = _plain(config)
    path = Path(path)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(handle, "w") as stream:
            yaml.safe_dump(data, stream, sort_keys=False)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _metavar(annotation: Any) -> str:
    """`{v1,v2}` for a Literal, else the type's name (`INT`, `FLOAT`, ...; YAML for lists and mappings)."""
    if typing.get_origin(annotation) is Literal:
        return "{" + ",".join(_choices(annotation)) + "}"
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return "|".join(_metavar(arg) for arg in typing.get_args(annotation) if arg is not type(None))
    return {bool: "BOOL", int: "INT", float: "FLOAT", str: "STR"}.get(annotation, "YAML")


def add_config_arguments(parser: argparse.ArgumentParser, schema: type[Schema],
                         aliases: Mapping[str, str] | None = None) -> None:
    """`--config FILE`, a `--section.key VALUE` flag per setting (grouped by section, with its help and default;
    `aliases` maps `section.key` to a short flag such as `--max_steps`) and positional `section.key=value`
    overrides. `config_overrides(args)` turns the parsed flags into overrides for `Schema.load`."""
    aliases = aliases or {}
    parser.usage = "%(prog)s --config FILE [--section.key VALUE ...] [section.key=value ...]"
    parser.add_argument("--config", metavar="FILE", help="YAML configuration file (sections of settings, as below; "
                        "`base: [FILE, ...]` builds on other files, relative to it, merged in order before it)")
    parser.add_argument("--print-config", action="store_true",
                        help="print the resolved configuration (base files, the file, the command line; each value's "
                        "source as a comment) and exit")
    defaults = schema()
    for section in dataclasses.fields(schema):
        values = getattr(defaults, section.name)
        group = parser.add_argument_group(f"{section.name} settings", inspect.getdoc(type(values)))
        hints = _hints(type(values))
        for setting_field in values.settings():
            key = f"{section.name}.{setting_field.name}"
            help = f"{setting_field.metadata['help']} (default: {getattr(values, setting_field.name)!r})"
            group.add_argument(f"--{key}", *[aliases[key]] if key in aliases else [], dest=key,
                               default=argparse.SUPPRESS, help=help.replace("%", "%%"),
                               metavar=_metavar(hints[setting_field.name]))
    parser.add_argument("overrides", nargs="*", metavar="section.key=value",
                        help="more overrides (values parsed as YAML), applied after the flags")


def config_overrides(args: argparse.Namespace) -> list[str]:
    """The `--section.key VALUE` flags, then the positional overrides, as `section.key=value` strings."""
    flags = [f"{key}={value}" for key, value in vars(args).items() if "." in key]
    return [*flags, *args.overrides]


# ------------------------------------------------------------------------------------------------- shared sections
DataSource = Literal["scenes", "imagefolder", "parquet", "arrow", "webdataset", "hub"]
MixedPrecision = Literal["no", "bf16", "fp16"]


def prepare_launch_environment() -> None:
    """What `Accelerator()` needs to see several CPU processes as one run: accelerate's own `--cpu` launcher needs
    MPI for several processes; its torchrun-based launcher works on CPU once ACCELERATE_USE_CPU is set (see
    training/accelerate_configs/cpu-2proc.yaml). Without it each process trains alone as its own main process."""
    import torch

    if not torch.cuda.is_available():
        os.environ.setdefault("ACCELERATE_USE_CPU", "1")


def launcher_precision_conflict(mixed_precision: str) -> str | None:
    """A warning when `accelerate launch` asked for another precision than the config's `training.mixed_precision`.

    The trainers pass the config's value to `Accelerator`, which then overrides the launcher's (its config file's
    `mixed_precision`, exported as `ACCELERATE_MIXED_PRECISION`): say so instead of silently training in another
    precision than the launcher's config file promises."""
    launcher = os.environ.get("ACCELERATE_MIXED_PRECISION")
    if not launcher or launcher == mixed_precision:
        return None
    return (
        f"training.mixed_precision={mixed_precision} (the training config) is used, not the accelerate launcher's "
        f"mixed_precision={launcher}; pass training.mixed_precision={launcher} to train in {launcher}."
    )
LoraPreset = Literal[tuple(PRESETS)]  # the names of tips_hf.lora.PRESETS, not a second list
ModelPreset = Literal[tuple(TipsConfig.preset_names())]  # TipsConfig.from_preset's names

# lora_config's short names of two peft.LoraConfig fields (the names the committed configs use)
_LORA_SHORT_NAMES = {"lora_alpha": "alpha", "lora_dropout": "dropout"}


@functools.cache
def peft_lora_fields() -> dict[str, tuple[Any, str]]:
    """`peft.LoraConfig`'s own settings, name → (type, help), read from its dataclass fields (so they follow the
    installed peft version)."""
    from peft import LoraConfig

    hints = typing.get_type_hints(LoraConfig)
    return {f.name: (hints[f.name], f.metadata.get("help", "").split(". ")[0])
            for f in dataclasses.fields(LoraConfig) if f.init}


@dataclass
class LoraSection(Section):
    """LoRA adapters (peft). Besides `enabled` and `preset`, any peft.LoraConfig field as `lora.KEY=VALUE` (r,
    alpha = lora_alpha, dropout = lora_dropout, target_modules, use_rslora, use_dora, ...), checked against the
    installed peft's own fields and types; unset ones keep the defaults of tips_hf.lora.lora_config."""

    enabled: bool = setting(False, "wrap the model with LoRA adapters (the base weights stay frozen)")
    preset: LoraPreset = setting("all", "target modules: a tips_hf.lora preset (peft's target_modules replaces it)")
    options: dict[str, Any] = field(default_factory=dict, init=False)  # the peft fields set, by lora_config's names

    def set(self, section: str, key: str, value: Any, source: str) -> None:
        if key in {f.name for f in self.settings()}:
            return super().set(section, key, value, source)
        fields = peft_lora_fields()
        name = {short: name for name, short in _LORA_SHORT_NAMES.items()}.get(key, key)
        if name not in fields:
            known = [*(f.name for f in self.settings()), *_LORA_SHORT_NAMES.values(), *fields]
            raise ValueError(_unknown(source, f"key {section}.{key} (not a peft.LoraConfig field)", key, known))
        annotation, help = fields[name]
        self.options[_LORA_SHORT_NAMES.get(name, name)] = _checked(value, annotation, source, f"{section}.{key}", help)

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), **copy.deepcopy(self.options)}

    def peft_config(self, modules_to_save: list[str] | None = None):
        """The `peft.LoraConfig` (`tips_hf.lora.lora_config` of the preset and the section's peft fields);
        `modules_to_save` (a trainer's new heads) joins the section's own."""
        options = dict(self.options)
        modules = [*(modules_to_save or []), *(options.pop("modules_to_save", None) or [])]
        return lora_config(self.preset, modules_to_save=modules or None, **options)

    def check(self) -> None:
        """Let peft validate the combination (its `__post_init__`), at load time instead of at model build."""
        if self.enabled:
            try:
                self.peft_config()
            except (TypeError, ValueError) as error:
                raise ValueError(f"lora: peft.LoraConfig refuses these settings: {error}") from None


# ------------------------------------------------------------------------------------------------ pretraining schema
@dataclass
class ModelConfig(Section):
    """The student TipsModel: a preset or explicit tower settings, or a folder to start from."""

    preset: ModelPreset | None = setting(None, "TipsConfig preset to build; null: use vision/text")
    vision: dict = setting({}, "TipsVisionConfig fields (override the preset's)")
    text: dict = setting({}, "TipsTextConfig fields (override the preset's)")
    init_from: str | None = setting(None, "start from a TipsModel folder instead of random weights")
    init_heads_from: str | None = setting(
        None, "a previous stage's checkpoint-<step> folder: its self-distillation heads, teacher and loss centres "
        "carry over (the student comes from init_from); e.g. the 448-px stage continuing the 224-px run")
    tokenizer: str | None = setting(None, "tokenizer.model; null: the embedded dataset's tokenizer")
    temperature_init: float = setting(
        0.07, "initial softmax temperature of both heads (released models end near 0.005)")
    temperature_min: float = setting(0.001, "lower clamp of the learnable temperatures (admits the released values)")
    temperature_max: float = setting(1.0, "upper clamp of the learnable temperatures")
    attn_implementation: str = setting("sdpa", "eager | sdpa | flash_attention_2 | flex_attention")
    drop_path_rate: float = setting(0.0, "stochastic depth of the student vision tower")


@dataclass
class DataConfig(Section):
    """Training images and captions, and the multi-crop views."""

    source: DataSource = setting(
        "scenes", "scenes (embedded) | imagefolder | parquet | arrow | webdataset | hub (datasets.load_dataset name)")
    path: str | None = setting(None, "folder, file glob or dataset name (not used by `scenes`)")
    split: str = setting("train", "split to train on")
    streaming: bool = setting(False, "stream instead of loading (large corpora; resume: data.stream_resume)")
    stream_resume: Literal["exact", "fast"] = setting(
        "exact", "how a streamed source resumes from a checkpoint: exact (re-reads the rows consumed in the pass so "
        "far and drops them: the uninterrupted stream, sample for sample, but hours of I/O at web scale) | fast "
        "(datasets' IterableDataset.load_state_dict: reopens the saved shard at the saved offset; exact too with "
        "data.shuffle_buffer=0; otherwise the buffer's rows are not restored: they are skipped for the rest of that "
        "pass, datasets >= 5 also repeats some rows, and the order differs from the uninterrupted run's). A "
        "checkpoint resumes in either mode")
    shuffle_buffer: int = setting(
        10_000, "rows in each stream's shuffle buffer (data.streaming); 0: no buffer, rows in their files' order")
    image_column: str = setting("image", "column holding the image (decoded PIL or bytes/path)")
    alt_text_column: str = setting("alt_text", "noisy web caption for the alt-text head")
    synthetic_columns: list[str] = setting(["synthetic_caption"], "synthetic caption columns")
    num_examples: int = setting(2000, "size of the embedded `scenes` training split")
    scene_image_size: int = setting(112, "image side of the embedded scenes")
    scene_options: dict = setting({}, "other SceneConfig fields (e.g. max_objects) of the scenes")
    global_size: int = setting(112, "global crop side (224 low-res stage, 448 high-res stage)")
    local_size: int = setting(56, "local crop side (98 with 224 globals, 140 with 448)")
    num_local_crops: int = setting(6, "M local crops per image (the paper's 6)")
    global_scale: tuple[float, float] = setting((0.32, 1.0), "random-resized-crop area range of the global crop")
    local_scale: tuple[float, float] = setting((0.05, 0.32), "random-resized-crop area range of the local crops")
    flip_probability: float = setting(0.5, "probability of a horizontal flip")
    num_workers: int = setting(0, "DataLoader worker processes")
    max_text_length: int = setting(64, "tokens per caption")
    pixel_mean: tuple[float, float, float] | None = setting(
        None, "RGB mean subtracted from [0, 1] pixels (with pixel_std); null: none, the released models' input")
    pixel_std: tuple[float, float, float] | None = setting(
        None, "RGB std dividing the centred pixels; a from-scratch model trains much faster on zero-mean inputs "
        "(docs/results.md); saved into the exported processor (do_normalize)")


@dataclass
class ObjectiveConfig(Section):
    """The losses: contrastive heads, CLS self-distillation, masked image modelling, their heads and weights."""

    recipe: Literal["v1", "v2"] = setting(
        "v2", "v1 (EMA teacher, iBOT on masked patches) | v2 (head-only EMA, iBOT++ on all patches)")
    contrastive: Literal["softmax", "sigmoid"] = setting("softmax", "softmax (paper) | sigmoid (SigLIP)")
    use_alt_text: bool = setting(True, "CLS-1 ↔ alt-text contrastive term")
    use_synthetic: bool = setting(True, "CLS-2 ↔ synthetic caption contrastive term")
    synthetic_sampling: Literal["random", "first"] = setting(
        "random", "random (v2 multi-granularity) | first (v1: the first synthetic column)")
    clip_weight: float = setting(1.0, "weight of the contrastive loss (mean of the heads)")
    distill_weight: float = setting(1.0, "weight of the CLS self-distillation (DINO) loss; 0 disables it")
    mask_weight: float = setting(2.0, "weight of the masked-image-modeling loss; 0 disables it")
    koleo_weight: float = setting(0.0, "KoLeo regulariser on the student's un-masked CLS (off in the paper)")
    mask_ratio: float = setting(0.75, "fraction of global-crop patches masked for the student, in (0, 1)")
    mask_mode: Literal["random", "block"] = setting("random", "masked patches: random ones | contiguous blocks")
    ibot_normalisation: Literal["masked_plus_visible", "mean"] = setting(
        "masked_plus_visible", "v2 iBOT++: mean over masked + w · mean over visible patches | mean over all")
    ibot_visible_weight: float = setting(1.0, "v2: weight of the visible-patch term")
    centering: Literal["softmax", "sinkhorn"] = setting(
        "softmax", "teacher centring: softmax (EMA centre) | sinkhorn (Sinkhorn-Knopp)")
    head_prototypes: int = setting(1024, "prototypes of the CLS (DINO) head (32k at scale)")
    patch_prototypes: int = setting(1024, "prototypes of the patch (iBOT) head")
    share_heads: bool = setting(False, "one head for CLS and patches")
    head_hidden_dim: int = setting(512, "MLP width of the heads (2048 at scale)")
    head_bottleneck_dim: int = setting(128, "bottleneck before the prototypes (256 at scale)")
    head_layers: int = setting(3, "MLP layers of the heads")
    student_temperature: float = setting(0.1, "τ_s")
    teacher_temperature: float = setting(0.07, "τ_t after warm-up")
    teacher_temperature_warmup: float = setting(0.04, "τ_t at step 0")
    teacher_temperature_warmup_steps: int = setting(100, "steps of the linear τ_t warm-up")
    center_momentum: float = setting(0.9, "EMA momentum of the softmax centres")
    distillation_teacher: str | None = setting(
        None, "distillation mode: a frozen (larger) TipsModel folder as teacher")
    loss_chunk_tokens: int | None = setting(
        None, "iBOT loss over the prototypes in chunks of this many tokens (bounds its memory); null: 2^27 ÷ "
        "patch_prototypes tokens (512 MiB of float32 logits a chunk, ~4 alive at once: 4096 tokens at 32k)")
    prototype_precision: Literal["autocast", "float32"] = setting(
        "autocast", "inputs of the prototype GEMMs: autocast (bf16/fp16 under mixed precision, float32 accumulation "
        "and output) | float32 (IEEE; TF32 if torch.backends.cuda.matmul.allow_tf32 is set)")
    v2_teacher: Literal["clean_pass", "student_view"] = setting(
        "clean_pass", "v2 teacher tokens: clean_pass (a no-grad pass without drop-path) | student_view (the "
        "student's un-masked view, drop-path included); equal when drop_path_rate is 0")


@dataclass
class TeacherConfig(Section):
    """The EMA teacher."""

    momentum: float = setting(0.994, "EMA momentum at step 0")
    momentum_final: float = setting(1.0, "at the last step (cosine); equal to `momentum` for a fixed momentum")


@dataclass
class OptimConfig(Section):
    """AdamW and its schedules."""

    lr: float = setting(5e-4, "peak learning rate (AdamW)")
    min_lr: float = setting(1e-5, "final learning rate (cosine)")
    warmup_steps: int = setting(50, "linear warm-up from 0")
    weight_decay: float = setting(
        0.04, "at step 0 (cosine to `weight_decay_final`); none on biases, norms, tokens, temperatures")
    weight_decay_final: float = setting(0.2, "weight decay at the last step")
    betas: tuple[float, float] = setting((0.9, 0.999), "AdamW betas")
    eps: float = setting(1e-8, "AdamW epsilon")
    grad_clip: float = setting(3.0, "max gradient norm; 0 disables clipping")
    fused: bool = setting(False, "torch's fused AdamW (CUDA)")
    layer_decay: float = setting(
        1.0, "layer-wise LR decay of the vision tower: block i of L gets lr · decay^(L − i)")
    patch_embed_lr_mult: float = setting(1.0, "extra LR factor of the patch embedding (DINOv2: 0.2)")
    freeze_last_layer_steps: int = setting(
        0, "the heads' prototype layers get no update for this many steps (DINO)")


@dataclass
class EvalConfig(Section):
    """Zero-shot retrieval, classification and linear-probe evaluation on the scenes."""

    num_examples: int = setting(200, "validation images")
    split: Literal["validation", "test"] = setting(
        "validation", "scenes split to score on (tune recipes on `test`, report `validation`)")
    probe_train_examples: int = setting(200, "images to fit the linear probe on (from the training split)")
    batch_size: int = setting(50, "evaluation batch size")
    image_size: int | None = setting(None, "evaluation resolution; null: data.global_size")
    retrieval_ks: tuple[int, ...] = setting((1, 5), "K of the Recall@K retrieval metrics")


# training.loss_scaling keys: torch.amp.GradScaler's arguments
LOSS_SCALING_KEYS = ("init_scale", "growth_factor", "backoff_factor", "growth_interval")
# training.sdpa_backends names → torch.nn.attention.SDPBackend members
SDPA_BACKENDS = {"cudnn": "CUDNN_ATTENTION", "flash": "FLASH_ATTENTION", "efficient": "EFFICIENT_ATTENTION",
                 "math": "MATH"}


@dataclass
class TrainingConfig(Section):
    """The run: steps, batch, precision, logging, checkpoints, distribution."""

    output_dir: str = setting("outputs/pretrain", "run folder (metrics, checkpoints, final model)")
    max_steps: int = setting(200, "optimizer steps")
    batch_size: int = setting(32, "per process, per micro-batch")
    gradient_accumulation_steps: int = setting(1, "micro-batches per optimizer step")
    mixed_precision: MixedPrecision = setting("no", "autocast precision of the forward and backward passes")
    gradient_checkpointing: bool = setting(False, "recompute activations in backward (less memory)")
    checkpoint_every: int = setting(
        1, "with gradient_checkpointing: recompute every n-th transformer block of each tower (1: all; 2: half the "
        "recomputation for about half the saved memory)")
    compile: bool = setting(False, "torch.compile the student")
    compile_scope: Literal["blocks", "vision"] = setting(
        "blocks", "blocks: each transformer block of both towers (regional: one graph per tower, short compiles, "
        "composes with FSDP2 and checkpointing) | vision: the whole vision forward")
    compile_backend: str = setting("inductor", "torch.compile backend")
    sdpa_backends: tuple[str, ...] = setting(
        ("cudnn", "flash", "efficient", "math"), "attention kernels in order of preference on CUDA (SDPA falls back "
        "down the list when one does not support the inputs); cudnn | flash | efficient | math")
    seed: int = setting(0, "random seed")
    logging_steps: int = setting(10, "steps between metric records")
    save_steps: int = setting(100, "steps between checkpoints; 0: none")
    eval_steps: int = setting(0, "steps between evaluations; 0: evaluate only at the end")
    keep_last: int = setting(2, "checkpoints kept")
    save_on_signal: bool = setting(
        True, "on SIGTERM / SIGUSR1 (preemption, a time limit, torchrun's shutdown) save a checkpoint after the step "
        "in progress and exit with 128 + the signal's number; resume with --resume_from_checkpoint latest")
    report_to: str | list[str] = setting("tensorboard", REPORT_TO_HELP)
    resume_from_checkpoint: str | None = setting(None, "latest | a checkpoint folder")
    progress_bar: bool = setting(True, "show a progress bar")
    distributed: Literal["ddp", "fsdp", "hsdp"] = setting(
        "ddp", "ddp | fsdp (torch FSDP2: per block, then the root; sharded checkpoints) | hsdp (FSDP2 on a 2-D mesh: "
        "sharded within a node, replicated across nodes)")
    hsdp_shard_size: int | None = setting(
        None, "hsdp: processes in a shard group (replicas = processes ÷ this); null: the launcher's processes per node "
        "(LOCAL_WORLD_SIZE)")
    loss_scaling: dict = setting(
        {}, "fp16: torch.amp.GradScaler arguments (init_scale 65536, growth_factor 2, backoff_factor 0.5, "
        "growth_interval 2000); the scaler's state is checkpointed")
    cpu_threads: int | None = setting(
        None, "torch threads per process on CPU; null: cores ÷ processes (accelerate sets 1)")


@dataclass
class PretrainConfig(Schema):
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    lora: LoraSection = field(default_factory=LoraSection)
    training: TrainingConfig = field(default_factory=TrainingConfig)

    def validate(self) -> PretrainConfig:
        tracker_names(self.training.report_to)
        if not 0.0 < self.objective.mask_ratio < 1.0:
            raise ValueError(f"objective.mask_ratio must be in (0, 1), got {self.objective.mask_ratio}.")
        if not (self.objective.use_alt_text or self.objective.use_synthetic) and self.objective.clip_weight > 0:
            raise ValueError("objective.clip_weight > 0 needs objective.use_alt_text or objective.use_synthetic.")
        for key in ("global_size", "local_size"):
            if getattr(self.data, key) % 14:
                raise ValueError(f"data.{key} must be a multiple of the patch size 14, got {getattr(self.data, key)}.")
        if self.data.source != "scenes" and not self.data.path:
            raise ValueError(f"data.path is required with data.source={self.data.source!r} (a folder, files or a Hub id).")
        self.check_pixel_normalisation()
        if self.objective.distill_weight > 0 and self.data.num_local_crops < 1:
            raise ValueError("objective.distill_weight > 0 needs data.num_local_crops >= 1.")
        unknown = set(self.training.sdpa_backends) - set(SDPA_BACKENDS)
        if unknown or not self.training.sdpa_backends:
            raise ValueError(f"training.sdpa_backends: {sorted(unknown) or 'empty'} — choose from {list(SDPA_BACKENDS)}.")
        for key in ("max_steps", "batch_size", "gradient_accumulation_steps", "logging_steps", "checkpoint_every"):
            if getattr(self.training, key) < 1:
                raise ValueError(f"training.{key} must be >= 1, got {getattr(self.training, key)}.")
        if unknown := set(self.training.loss_scaling) - set(LOSS_SCALING_KEYS):
            raise ValueError(f"training.loss_scaling: unknown {sorted(unknown)}; choose from {list(LOSS_SCALING_KEYS)}.")
        self.lora.check()
        return self

    def check_pixel_normalisation(self, inherited: bool = False) -> None:
        """`data.pixel_mean`/`pixel_std`: both or neither, positive std, and no frozen distillation teacher (it expects
        the [0, 1] pixels of its own processor). Run again (`inherited=True`) once `model.init_from` has lent its
        normalisation."""
        if (self.data.pixel_mean is None) != (self.data.pixel_std is None):
            raise ValueError("data.pixel_mean and data.pixel_std go together: set both or neither.")
        if self.data.pixel_std is not None and min(self.data.pixel_std) <= 0:
            raise ValueError(f"data.pixel_std must be positive, got {list(self.data.pixel_std)}.")
        if self.data.pixel_mean is not None and self.objective.distillation_teacher:
            source = f" (inherited from model.init_from {self.model.init_from})" if inherited else ""
            raise ValueError(f"data.pixel_mean/pixel_std{source} cannot be combined with "
                             "objective.distillation_teacher: the frozen teacher expects the [0, 1] pixels of its own "
                             "processor.")


def load_config(path: str | os.PathLike | None = None, overrides: Iterable[str] | None = None) -> PretrainConfig:
    """A `PretrainConfig` from a YAML file (sections as in the dataclasses) and `section.key=value` overrides (values
    parsed as YAML, e.g. `objective.recipe=v1`, `data.global_scale=[0.4,1.0]`)."""
    return PretrainConfig.load(path, overrides)
