# Copyright 2026 The tips-hf authors. Licensed under the Apache License, Version 2.0.
"""Publish TIPS models to the Hugging Face Hub: `tips-publish` and [`publish`].

tips-publish --model DIR --repo-id ORG/NAME [--private] [--token TOKEN] [--revision BRANCH] [--commit-message MSG]
             [--max-shard-size 5GB] [--base-model ORG/NAME] [--dry-run [--output OUT [--overwrite]]]

The folder that is uploaded is rebuilt from the model, never copied blindly: the weights are re-saved as (sharded)
safetensors with the remote-code module files and `auto_map` (so the repository loads with `trust_remote_code=True`
without tips-hf installed), the processor is re-saved, the conversion's `parity.json` is carried over and a model card
(`README.md`) is generated from the configuration and the parity report. `--dry-run --output OUT` writes exactly that
folder to OUT and sends nothing.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from huggingface_hub import HfApi, ModelCard, ModelCardData, get_token, split_torch_state_dict_into_shards
from huggingface_hub.errors import HfHubHTTPError, HFValidationError
from huggingface_hub.utils import validate_repo_id

from . import __version__
from .configuration_tips import PRESETS, TipsConfig
from .conversion.verify import PARITY_FILE

DEFAULT_MAX_SHARD_SIZE = "5GB"
logger = logging.getLogger(__name__)

# Hub repositories of Google's releases, by `TipsConfig.preset`; they become the card's `base_model`.
GOOGLE_HUB_IDS: dict[str, str] = {
    "tips-v1-s14-hr": "google/tipsv1-s14",
    "tips-v1-b14-hr": "google/tipsv1-b14",
    "tips-v1-l14-hr": "google/tipsv1-l14",
    "tips-v1-so400m14-hr": "google/tipsv1-so400m14",
    "tips-v1-g14-hr": "google/tipsv1-g14",
    "tips-v1-g14-lr": "google/tipsv1-g14-lowres",
    "tips-v2-b14": "google/tipsv2-b14",
    "tips-v2-l14": "google/tipsv2-l14",
    "tips-v2-so400m14": "google/tipsv2-so400m14",
    "tips-v2-g14": "google/tipsv2-g14",
}

CARD_TAGS = [
    "tips",
    "vision-language",
    "zero-shot-image-classification",
    "image-feature-extraction",
    "dense-features",
    "tips-hf",
    "custom_code",
]

_SIZE_NAMES = {"s14": "S/14", "b14": "B/14", "l14": "L/14", "so400m14": "So400m/14", "g14": "g/14"}
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".msgpack", ".h5")
# Processor files the re-save may write under another name (e.g. preprocessor_config.json -> processor_config.json).
_PROCESSOR_FILES = {
    "processor_config.json",
    "preprocessor_config.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "tokenizer.json",
}
_OUTPUT_NAMES = {
    "cls1": "alt-text CLS embedding",
    "cls2": "synthetic-caption CLS embedding",
    "cls_tokens": "both CLS embeddings",
    "patch_tokens": "patch tokens",
    "text_embeds": "text embedding",
}


class PublishError(ValueError):
    """A problem with the inputs of [`publish`] (bad folder, repository id, token...): reported without traceback."""


@dataclass
class PublishResult:
    """What [`publish`] built and, unless `dry_run`, sent.

    Attributes:
        repo_id (`str`): target repository.
        files (`list[tuple[str, int]]`): every file of the uploaded (or dry-run) folder: relative path, size in bytes.
        card (`ModelCard`): the generated model card (the folder's `README.md`).
        dry_run (`bool`): nothing was sent.
        output_dir (`Path`, *optional*): where the dry-run folder was written.
        commit (*optional*): what `HfApi.upload_folder` returned (a `CommitInfo` with the commit URL).
        not_included (`list[str]`): files of the source folder that the published folder does not carry.
        warnings (`list[str]`): things worth a look before (or after) publishing.
    """

    repo_id: str
    files: list[tuple[str, int]]
    card: ModelCard
    dry_run: bool
    output_dir: Path | None = None
    commit: Any = None
    not_included: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"https://huggingface.co/{self.repo_id}"


# ---------------------------------------------------------------------------------------------------------------------
# Model card


def base_model_for(preset: str | None) -> str | None:
    """Hub id of the Google release a preset reproduces (`"tips-v2-b14"` → `"google/tipsv2-b14"`), or `None`."""
    return GOOGLE_HUB_IDS.get(preset) if preset else None


def variant_name(config: TipsConfig) -> str:
    """Human name of the variant: `"TIPSv2 B/14"`, `"TIPS (v1) g/14 low-res"`, or a description of a custom one."""
    preset = config.preset
    if preset in PRESETS:
        size = _SIZE_NAMES[PRESETS[preset][0]]
        if preset.startswith("tips-v2"):
            return f"TIPSv2 {size}"
        return f"TIPS (v1) {size} {'low-res' if preset.endswith('-lr') else 'high-res'}"
    v = config.vision_config
    return f"TIPS (custom: width {v.hidden_size}, {v.num_hidden_layers} vision layers, patch {v.patch_size})"


def _param_counts(model_or_config) -> tuple[int, int, int]:
    if isinstance(model_or_config, TipsConfig):
        from .modeling_tips import meta_model

        model = meta_model(model_or_config)  # shapes only: counting a g/14 this way costs no memory
    else:
        model = model_or_config
    vision = sum(p.numel() for p in model.vision_model.parameters())
    text = sum(p.numel() for p in model.text_model.parameters())
    return vision, text, sum(p.numel() for p in model.parameters())


def _human(count: int) -> str:
    for unit, scale in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if count >= scale:
            return f"{count / scale:.1f}{unit}"
    return str(count)


def format_param_count(count: int) -> str:
    """`86316288` → `"86,316,288 (86.3M)"`, as written in the card's architecture table."""
    return f"{count:,} ({_human(count)})"


def architecture_table(model_or_config) -> str:
    """Markdown table of both towers: layers, width, heads, FFN type and width, position grid, parameters."""
    config = model_or_config if isinstance(model_or_config, TipsConfig) else model_or_config.config
    v, t = config.vision_config, config.text_config
    vision_params, text_params, _ = _param_counts(model_or_config)
    grid = v.position_grid_size
    ffn = "SwiGLU" if v.ffn_type == "swiglu" else f"MLP ({v.hidden_act})"
    rows = [
        ("Layers", v.num_hidden_layers, t.num_hidden_layers),
        ("Width", v.hidden_size, t.hidden_size),
        ("Attention heads", v.num_attention_heads, t.num_attention_heads),
        ("FFN type", ffn, f"MLP ({t.hidden_act})"),
        ("FFN width", v.intermediate_size, t.intermediate_size),
        (
            "Position grid",
            f"{grid}×{grid} learned ({v.image_size} px / patch {v.patch_size}), interpolated",
            f"{t.max_position_embeddings} tokens, sinusoidal",
        ),
        ("Extra tokens", f"CLS + {v.num_register_tokens} register (the 1st is the 2nd CLS)", "–"),
        ("Vocabulary", "–", f"{t.vocab_size:,} SentencePiece pieces"),
        ("Parameters", format_param_count(vision_params), format_param_count(text_params)),
    ]
    lines = ["| | Vision | Text |", "|---|---|---|"]
    lines += [f"| {name} | {vision} | {text} |" for name, vision, text in rows]
    return "\n".join(lines)


def _load_parity(parity) -> dict[str, Any] | None:
    """Normalise `parity` (a `parity.json` payload, a bare `{output: max|Δ|}` dict or a path) to the payload form."""
    if parity is None:
        return None
    if isinstance(parity, (str, os.PathLike)):
        path = Path(parity)
        try:
            parity = json.loads(path.read_text())
        except json.JSONDecodeError as error:
            raise PublishError(f"{path} is not valid JSON ({error}).") from None
    if not isinstance(parity, dict):
        raise PublishError(f"parity must be a dict or a path to {PARITY_FILE}, got {type(parity).__name__}.")
    if "max_abs_diff" not in parity:
        parity = {"max_abs_diff": parity}
    values = parity["max_abs_diff"]
    if not isinstance(values, dict) or not all(isinstance(x, (int, float)) for x in values.values()):
        raise PublishError(f"{PARITY_FILE}: 'max_abs_diff' must map output names to numbers, got {values!r}.")
    return parity


def parity_section(parity) -> str:
    """Markdown for the parity figures measured at conversion time, or a plain statement that there are none."""
    payload = _load_parity(parity)
    if payload is None or not payload["max_abs_diff"]:
        return (
            f"No parity report (`{PARITY_FILE}`) was found for this model: its outputs have **not** been compared "
            "against a reference implementation by tips-hf. Convert with `tips-convert ... --verify EXPECTED.npz` to "
            "measure and record them."
        )
    values = payload["max_abs_diff"]
    reference = payload.get("reference") or "an unnamed reference"
    setting = ", ".join(str(payload[k]) for k in ("dtype", "device") if payload.get(k))
    intro = f"Measured at conversion time against the **{reference}**"
    if payload.get("expected_file"):
        intro += f" (expected outputs `{payload['expected_file']}`)"
    intro += f", {setting}:" if setting else ":"
    lines = [intro, "", "| Output | Input | max \\|Δ\\| |", "|---|---|---|"]
    for name, value in values.items():
        output, _, size = name.partition("@")
        label = _OUTPUT_NAMES.get(output, output)
        lines.append(f"| {label} (`{output}`) | {size.replace('x', '×') if size else 'text'} | {value:.3e} |")
    overall = payload.get("max_abs_diff_overall")
    overall = max(values.values()) if overall is None else overall
    lines.append(f"| **overall** | | **{overall:.3e}** |")
    lines += ["", f"The report is included as [`{PARITY_FILE}`]({PARITY_FILE})."]
    return "\n".join(lines)


def usage_snippet(config: TipsConfig, repo_id: str) -> str:
    """Python code that loads `repo_id` with remote code and runs zero-shot classification and patch features."""
    side = config.image_resolution // config.vision_config.patch_size
    width = config.vision_config.hidden_size
    return f"""import torch
from PIL import Image
from transformers import AutoModel, AutoProcessor, pipeline

repo_id = "{repo_id}"
model = AutoModel.from_pretrained(repo_id, trust_remote_code=True).eval()
processor = AutoProcessor.from_pretrained(repo_id, trust_remote_code=True)

image = Image.open("cat.jpg").convert("RGB")  # any image
texts = ["a photo of a cat", "a photo of a dog"]
inputs = processor(images=image, text=texts, return_tensors="pt")
with torch.no_grad():
    outputs = model(**inputs)
# Two heads: the alt-text CLS (logits_per_image) and the synthetic-caption CLS (synthetic_logits_per_image).
print(dict(zip(texts, outputs.logits_per_image.softmax(dim=-1)[0].tolist())))

# Zero-shot classification through the pipeline.
classifier = pipeline("zero-shot-image-classification", model=repo_id, trust_remote_code=True)
print(classifier(image, candidate_labels=["cat", "dog", "car"]))

# Dense patch features for segmentation, depth, correspondences...
with torch.no_grad():
    features = model.get_image_features(pixel_values=inputs["pixel_values"])
print(features.patch_embeds.shape)  # (1, {side}, {side}, {width}) at {config.image_resolution} px"""


def build_model_card(
    model_or_config,
    parity: dict[str, Any] | str | os.PathLike | None = None,
    base_model: str | None = None,
    *,
    repo_id: str | None = None,
) -> ModelCard:
    r"""Build the model card of a TIPS model: Hub metadata, architecture table, usage snippet and parity figures.

    Args:
        model_or_config ([`TipsModel`] or [`TipsConfig`]): the model (its parameters are counted and its temperatures
            read) or only its configuration (parameters counted on the meta device).
        parity (`dict`, `str` or `os.PathLike`, *optional*): the conversion's `parity.json` (payload or path), or a
            bare `{output_name: max_abs_diff}` dict. Without it the card says that no parity was measured.
        base_model (`str`, *optional*): Hub id for the card's `base_model`. Defaults to the Google release of the
            config's `preset` (see `GOOGLE_HUB_IDS`); pass `""` for none.
        repo_id (`str`, *optional*): the repository the card is for, used in the usage snippet.

    Returns:
        `huggingface_hub.ModelCard`: `card.data` holds the metadata, `str(card)` the `README.md` text.

    Example, with `push_to_hub` (which uploads the weights, the remote code and a generic card; an existing card in
    the repository is kept, only tagged):

    ```python
    >>> import json
    >>> from tips_hf import TipsModel, TipsProcessor
    >>> from tips_hf.hub import build_model_card
    >>> model = TipsModel.from_pretrained("converted/tips-v2-b14")
    >>> model.push_to_hub("my-org/tips-v2-b14")
    >>> TipsProcessor.from_pretrained("converted/tips-v2-b14").push_to_hub("my-org/tips-v2-b14")
    >>> parity = json.load(open("converted/tips-v2-b14/parity.json"))
    >>> build_model_card(model, parity=parity, repo_id="my-org/tips-v2-b14").push_to_hub("my-org/tips-v2-b14")
    ```

    `tips-publish` (or [`publish`]) does all of this in one commit, and also uploads `parity.json`.
    """
    config = model_or_config if isinstance(model_or_config, TipsConfig) else model_or_config.config
    if not isinstance(config, TipsConfig):
        raise TypeError(f"build_model_card needs a TipsModel or a TipsConfig, got {type(model_or_config).__name__}.")
    if base_model is None:
        base_model = base_model_for(config.preset)
    title = repo_id.split("/")[-1] if repo_id else variant_name(config)
    repo_id = repo_id or "ORG/NAME"
    payload = _load_parity(parity)
    data = ModelCardData(
        library_name="transformers",
        pipeline_tag="zero-shot-image-classification",
        license="apache-2.0",
        tags=list(CARD_TAGS),
        base_model=base_model or None,
        model_name=repo_id.split("/")[-1],
    )
    name = variant_name(config)
    v = config.vision_config
    _, _, total = _param_counts(model_or_config)
    details = [
        f"- Embedding dimension: {v.hidden_size}; patch size {v.patch_size}; default processor resolution "
        f"{config.image_resolution}×{config.image_resolution} (RGB in [0, 1], no mean/std normalisation).",
        f"- Total parameters: {format_param_count(total)} (both towers and the two temperatures).",
    ]
    if not isinstance(model_or_config, TipsConfig):
        alt, synthetic = (float(x) for x in model_or_config.temperature.detach().float().cpu())
        details.append(f"- Softmax temperatures: {alt:.6g} (alt-text head), {synthetic:.6g} (synthetic-caption head).")
    if config.preset:
        details.append(f"- tips-hf preset: `{config.preset}`.")
    origin = None
    if base_model:
        link = f"[`{base_model}`](https://huggingface.co/{base_model})"
        origin = f"the Google release {link}" if base_model in GOOGLE_HUB_IDS.values() else link
    intro = (
        f"**{name}** — TIPS (Text-Image Pretraining with Spatial awareness), a CLIP-like image-text dual encoder "
        "whose vision tower has two CLS tokens (one trained against web alt-text, one against synthetic captions) "
        "and patch tokens aligned with text, for zero-shot classification, retrieval and dense tasks "
        "(segmentation, depth, correspondences)."
    )
    if origin:
        intro += f" Based on {origin}, in the [tips-hf](https://github.com/tips-hf/tips-hf) format."
    else:
        intro += " Packaged in the [tips-hf](https://github.com/tips-hf/tips-hf) format."
    body = "\n".join(
        [
            f"# {title}",
            "",
            intro,
            "",
            "The repository is self-contained: it loads with `trust_remote_code=True` and does not need tips-hf "
            "installed (with tips-hf installed, `tips_hf.TipsModel.from_pretrained` loads it without remote code).",
            "",
            "## Architecture",
            "",
            architecture_table(model_or_config),
            "",
            *details,
            "",
            "## Usage",
            "",
            "```bash",
            'pip install "transformers>=5.14" torch torchvision sentencepiece pillow',
            "```",
            "",
            "```python",
            usage_snippet(config, repo_id),
            "```",
            "",
            "## Parity with the reference implementation",
            "",
            parity_section(payload),
            "",
            "## References",
            "",
            "- TIPS: Text-Image Pretraining with Spatial awareness (ICLR 2025), https://arxiv.org/abs/2410.16512",
            "- TIPSv2: Advancing Vision-Language Pretraining with Enhanced Patch-Text Alignment (CVPR 2026), "
            "https://arxiv.org/abs/2604.12012",
            "- Official code: https://github.com/google-deepmind/tips",
        ]
    )
    return ModelCard.from_template(data, template_str="---\n{{ card_data }}\n---\n\n{{ body }}\n\n", body=body)


# ---------------------------------------------------------------------------------------------------------------------
# Publishing


def check_repo_id(repo_id: str, what: str = "repo id") -> str:
    """Raise [`PublishError`] unless `repo_id` has the form `ORG/NAME` with Hub-valid characters."""
    if not isinstance(repo_id, str) or repo_id.count("/") != 1 or not all(repo_id.split("/")):
        raise PublishError(f"invalid {what} {repo_id!r}: expected the form ORG/NAME (e.g. my-org/tips-v2-b14).")
    try:
        validate_repo_id(repo_id)
    except HFValidationError as error:
        raise PublishError(f"invalid {what} {repo_id!r}: {error}") from None
    return repo_id


def _describe(folder: Path) -> str:
    names = sorted(p.name + ("/" if p.is_dir() else "") for p in folder.iterdir())
    if not names:
        return "the folder is empty"
    return "found: " + ", ".join(names[:12]) + (f" and {len(names) - 12} more" if len(names) > 12 else "")


def check_model_dir(model_dir: str | os.PathLike) -> Path:
    """Raise [`PublishError`] unless `model_dir` is a TIPS model folder (config.json of model_type "tips" + weights)."""
    folder = Path(model_dir)
    if not folder.exists():
        raise PublishError(f"model folder {folder} does not exist.")
    if not folder.is_dir():
        raise PublishError(f"{folder} is a file, not a model folder.")
    config_path = folder / "config.json"
    if not config_path.is_file():
        hint = ""
        if any(p.suffix == ".npz" for p in folder.iterdir()):
            hint = " It holds .npz files: convert them first with `tips-convert official ... --output DIR`."
        raise PublishError(f"{folder} is not a TIPS model folder: no config.json ({_describe(folder)}).{hint}")
    try:
        config = json.loads(config_path.read_text())
    except json.JSONDecodeError as error:
        raise PublishError(f"{config_path} is not valid JSON ({error}).") from None
    model_type = config.get("model_type") if isinstance(config, dict) else None
    if model_type != TipsConfig.model_type:
        architectures = config.get("architectures") if isinstance(config, dict) else None
        raise PublishError(
            f"{folder} is not a TIPS model folder: config.json has model_type {model_type!r} "
            f"(architectures {architectures!r}), expected 'tips'. Convert it with `tips-convert` first."
        )
    if not any(p.name.endswith(_WEIGHT_SUFFIXES) for p in folder.iterdir()):
        raise PublishError(f"{folder} has a TIPS config.json but no weights ({_describe(folder)}).")
    return folder


def _load_processor(folder: Path):
    """The folder's processor (image processor + tokenizer), or whichever half it has, or `None`."""
    from .image_processing_tips import TipsImageProcessor
    from .processing_tips import TipsProcessor
    from .tokenization_tips import TipsTokenizer

    has_tokenizer = (folder / "tokenizer.model").is_file()
    has_images = (folder / "processor_config.json").is_file() or (folder / "preprocessor_config.json").is_file()
    try:
        if has_tokenizer and has_images:
            return TipsProcessor.from_pretrained(folder)
        if has_images:
            return TipsImageProcessor.from_pretrained(folder)
        if has_tokenizer:
            return TipsTokenizer.from_pretrained(folder)
    except (OSError, ValueError, TypeError, KeyError) as error:
        raise PublishError(f"could not load the processor files of {folder}: {error}") from None
    return None


def _list_files(folder: Path) -> list[tuple[str, int]]:
    return sorted((p.relative_to(folder).as_posix(), p.stat().st_size) for p in folder.rglob("*") if p.is_file())


def _build_folder(
    model_dir: Path,
    staging: Path,
    repo_id: str,
    max_shard_size: int | str,
    base_model: str | None,
) -> tuple[TipsConfig, ModelCard, list[str], list[str]]:
    """Write the folder to upload into `staging`; return its config, card, the source files left out, and warnings."""
    from .conversion.writer import meta_model, open_checkpoint, write_model_folder
    from .layouts_tips import LayoutError

    warnings: list[str] = []
    processor = _load_processor(model_dir)
    try:
        config, keys, read = open_checkpoint(model_dir)
    except (OSError, ValueError) as error:
        raise PublishError(f"could not read the model in {model_dir}: {error}") from None
    # Streamed tensor by tensor (memory near one shard); a partial or mismatched checkpoint is refused, never
    # published with random weights.
    model = meta_model(config)
    expected = model.state_dict()
    problems = {"missing_keys": sorted(set(expected) - set(keys)), "unexpected_keys": sorted(set(keys) - set(expected))}
    if any(problems.values()):
        details = "; ".join(f"{k}: {v[:5]}" for k, v in problems.items() if v)
        raise PublishError(f"the weights in {model_dir} do not match its config.json ({details}).")
    try:
        write_model_folder(
            staging,
            config,
            ((key, read(key)) for key in expected),
            processor,
            max_shard_size,
            overwrite=True,
            description="tips-publish",
            source=str(model_dir),
        )
    except LayoutError as error:
        raise PublishError(f"the weights in {model_dir} do not match its config.json ({error}).") from None
    # the card reads the temperatures: a meta-device model carrying only those
    model.load_state_dict({"log_temperature": read("log_temperature")}, strict=False, assign=True)
    if processor is None:
        warnings.append(
            f"{model_dir} has no processor files (tokenizer.model, processor_config.json): the repository will not "
            "work with AutoProcessor or pipeline(); convert with --tokenizer to ship them."
        )
    elif not (staging / "tokenizer.model").is_file():
        warnings.append(f"{model_dir} has no tokenizer.model: the repository can embed images but not text.")
    parity = None
    if (model_dir / PARITY_FILE).is_file():
        parity = _load_parity(model_dir / PARITY_FILE)
        shutil.copyfile(model_dir / PARITY_FILE, staging / PARITY_FILE)
    if base_model is None and config.preset and config.preset not in GOOGLE_HUB_IDS:
        warnings.append(f"preset {config.preset!r} has no known Google release; pass --base-model to set one.")
    if config.preset in PRESETS:
        # A preset claims an architecture (and the base_model derived from it): check that the weights agree.
        reference = TipsConfig.from_preset(config.preset)
        for tower in ("vision_config", "text_config"):
            for key in ("hidden_size", "num_hidden_layers", "intermediate_size"):
                want, got = getattr(getattr(reference, tower), key), getattr(getattr(config, tower), key)
                if want != got:
                    warnings.append(
                        f"config.preset is {config.preset!r} but {tower}.{key} is {got} (the preset has {want}); "
                        "check the card's base_model."
                    )
    for warning in warnings:
        logger.warning(warning)  # now, not with the result: a real upload may take a while
    card = build_model_card(model, parity=parity, base_model=base_model, repo_id=repo_id)
    card.save(staging / "README.md")
    written = {name for name, _ in _list_files(staging)}
    not_included = sorted(
        p.name
        for p in model_dir.iterdir()
        if p.is_file()
        and p.name not in written
        and not p.name.endswith(_WEIGHT_SUFFIXES)
        and not p.name.endswith(".index.json")
        and p.name not in _PROCESSOR_FILES
    )
    return config, card, not_included, warnings


def _resolve_token(token: str | None, api) -> str | None:
    return token or getattr(api, "token", None) or get_token()


def publish(
    model_dir: str | os.PathLike,
    repo_id: str,
    *,
    private: bool = False,
    token: str | None = None,
    dry_run: bool = False,
    output_dir: str | os.PathLike | None = None,
    overwrite: bool = False,
    max_shard_size: int | str = DEFAULT_MAX_SHARD_SIZE,
    commit_message: str | None = None,
    revision: str | None = None,
    base_model: str | None = None,
    api: HfApi | None = None,
) -> PublishResult:
    r"""Build the Hub folder of a TIPS model and upload it (or, with `dry_run`, only build it).

    The folder holds the re-saved weights (safetensors, sharded above `max_shard_size`), `config.json` with `auto_map`
    and the remote-code module files, the re-saved processor, the conversion's `parity.json` (if any) and a generated
    `README.md` (see [`build_model_card`]).

    Args:
        model_dir (`str` or `os.PathLike`): a TIPS model folder (written by `tips-convert` or `save_pretrained`).
        repo_id (`str`): target repository, `ORG/NAME`.
        private (`bool`, defaults to `False`): create the repository private (no effect on an existing one).
        token (`str`, *optional*): Hub token; defaults to the `api`'s, then `HF_TOKEN`, then the stored login.
        dry_run (`bool`, defaults to `False`): build the folder, send nothing.
        output_dir (`str` or `os.PathLike`, *optional*): with `dry_run`, where to write the folder (atomically).
        overwrite (`bool`, defaults to `False`): replace a non-empty `output_dir`.
        max_shard_size (`int` or `str`, defaults to `"5GB"`): largest safetensors shard.
        commit_message (`str`, *optional*): commit message of the upload.
        revision (`str`, *optional*): branch to commit to (created if missing); defaults to the main branch.
        base_model (`str`, *optional*): the card's `base_model`; defaults to the Google release of the config's
            preset, `""` for none.
        api (`HfApi`, *optional*): the client used for the upload (tests pass a recording fake).

    Returns:
        [`PublishResult`]: the file listing, the card and, after an upload, the commit.
    """
    check_repo_id(repo_id)
    if base_model:
        check_repo_id(base_model, "base model")
    model_dir = check_model_dir(model_dir)
    try:
        split_torch_state_dict_into_shards({}, max_shard_size=max_shard_size)  # parses the size, nothing else
    except ValueError as error:
        raise PublishError(f"invalid max shard size {max_shard_size!r}: {error}") from None
    if output_dir is not None and not dry_run:
        raise PublishError("an output folder is only written with a dry run (dry_run=True / --dry-run).")
    if output_dir is not None:
        output_dir = Path(output_dir)
        if output_dir.exists() and not output_dir.is_dir():
            raise PublishError(f"output {output_dir} exists and is a file.")
        if output_dir.exists() and any(output_dir.iterdir()) and not overwrite:
            raise FileExistsError(f"{output_dir} exists and is not empty; pass --overwrite to replace it.")
        if output_dir.resolve() == model_dir.resolve():
            raise PublishError("the output folder must differ from the model folder.")

    if dry_run:
        if output_dir is None:
            with tempfile.TemporaryDirectory(prefix="tips-publish-") as tmp:
                config, card, not_included, warnings = _build_folder(
                    model_dir, Path(tmp), repo_id, max_shard_size, base_model
                )
                files = _list_files(Path(tmp))
            return PublishResult(repo_id, files, card, True, None, None, not_included, warnings)
        from .conversion.writer import atomic_folder

        with atomic_folder(output_dir, overwrite) as staging:
            config, card, not_included, warnings = _build_folder(
                model_dir, staging, repo_id, max_shard_size, base_model
            )
            files = _list_files(staging)
        return PublishResult(repo_id, files, card, True, output_dir, None, not_included, warnings)

    api = api if api is not None else HfApi()
    token = _resolve_token(token, api)
    if not token:
        raise PublishError(
            "no Hugging Face token for the upload: pass --token, set HF_TOKEN=hf_... in the environment, or run "
            "`hf auth login` (use --dry-run --output DIR to build the folder without uploading)."
        )
    with tempfile.TemporaryDirectory(prefix="tips-publish-") as tmp:
        staging = Path(tmp)
        # Build before touching the Hub, so that a bad folder never leaves an empty repository behind.
        config, card, not_included, warnings = _build_folder(model_dir, staging, repo_id, max_shard_size, base_model)
        files = _list_files(staging)
        message = commit_message or f"Upload {variant_name(config)} with tips-hf {__version__}"
        api.create_repo(repo_id, token=token, private=private, exist_ok=True, repo_type="model")
        if revision:
            api.create_branch(repo_id, branch=revision, token=token, exist_ok=True, repo_type="model")
        commit = api.upload_folder(
            repo_id=repo_id,
            folder_path=str(staging),
            commit_message=message,
            token=token,
            repo_type="model",
            revision=revision,
        )
    return PublishResult(repo_id, files, card, False, None, commit, not_included, warnings)


# ---------------------------------------------------------------------------------------------------------------------
# Command line


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tips-publish",
        description="Publish a TIPS model folder to the Hugging Face Hub, with remote code and a model card "
        "(--dry-run --output OUT: write the exact folder instead, send nothing).",
    )
    parser.add_argument("--model", required=True, help="TIPS model folder (from tips-convert or save_pretrained)")
    parser.add_argument("--repo-id", required=True, help="target Hub repository, ORG/NAME")
    parser.add_argument("--private", action="store_true", help="create the repository private")
    parser.add_argument(
        "--token", help="Hub token (prefer HF_TOKEN or `hf auth login`: a flag ends up in the shell history)"
    )
    parser.add_argument("--revision", help="branch to commit to (created if missing; default: main)")
    parser.add_argument("--commit-message", help="commit message of the upload")
    parser.add_argument(
        "--max-shard-size",
        default=DEFAULT_MAX_SHARD_SIZE,
        help=f"safetensors shard size (default {DEFAULT_MAX_SHARD_SIZE})",
    )
    parser.add_argument(
        "--base-model", help="card base_model (default: the Google release of the config's preset; '' for none)"
    )
    parser.add_argument("--dry-run", action="store_true", help="build the folder and list it; send nothing")
    parser.add_argument("--output", help="with --dry-run: write the folder here (atomically)")
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty --output folder")
    return parser


def _print_files(files: list[tuple[str, int]]) -> None:
    width = max((len(name) for name, _ in files), default=4)
    for name, size in files:
        print(f"  {name:<{width}}  {size:>14,} bytes")
    print(f"  {len(files)} files, {sum(size for _, size in files):,} bytes")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # Warnings are logged while the folder is built, i.e. before a (long) upload starts.
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("tips-publish: warning: %(message)s"))
    logger.addHandler(handler)
    try:
        return _run(args)
    finally:
        logger.removeHandler(handler)


def _run(args: argparse.Namespace) -> int:
    if args.output and not args.dry_run:
        print("tips-publish: error: --output is only used with --dry-run.", file=sys.stderr)
        return 2
    try:
        result = publish(
            args.model,
            args.repo_id,
            private=args.private,
            token=args.token,
            dry_run=args.dry_run,
            output_dir=args.output,
            overwrite=args.overwrite,
            max_shard_size=args.max_shard_size,
            commit_message=args.commit_message,
            revision=args.revision,
            base_model=args.base_model,
        )
    except (PublishError, FileExistsError, FileNotFoundError) as error:
        print(f"tips-publish: error: {error}", file=sys.stderr)
        return 2
    except HfHubHTTPError as error:
        print(f"tips-publish: error: the Hub refused the upload: {error}", file=sys.stderr)
        return 1
    except ConnectionError as error:  # includes huggingface_hub's OfflineModeIsEnabled (HF_HUB_OFFLINE=1)
        print(f"tips-publish: error: could not reach the Hub: {error}", file=sys.stderr)
        return 1
    if result.dry_run:
        where = f"written to {result.output_dir}" if result.output_dir else "built (use --output DIR to keep it)"
        print(f"dry run, nothing sent: folder for {result.repo_id} {where}:")
    else:
        print(
            f"uploaded to {result.url}"
            + (f" ({result.commit.commit_url})" if hasattr(result.commit, "commit_url") else "")
        )
    _print_files(result.files)
    if result.not_included:
        print(f"not included from {args.model}: {', '.join(result.not_included)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
