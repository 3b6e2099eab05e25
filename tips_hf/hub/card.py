"""Model cards for TIPS repositories: architecture table, parity figures, usage snippet, metadata."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from huggingface_hub import ModelCard, ModelCardData

from ..conversion.verify import PARITY_FILE
from ..modeling.configuration_tips import PRESETS, TipsConfig

logger = logging.getLogger("tips_hf.hub")

# Hub repositories of Google's releases, by `TipsConfig.preset`; they become the card's `base_model`.
GOOGLE_HUB_IDS: dict[str, str] = {name: preset.hub_id for name, preset in PRESETS.items()}

CARD_TAGS = [
    "tips",
    "vision-language",
    "zero-shot-image-classification",
    "image-feature-extraction",
    "dense-features",
    "tips-hf",
    "custom_code",
]

_OUTPUT_NAMES = {
    "cls1": "alt-text CLS embedding",
    "cls2": "synthetic-caption CLS embedding",
    "cls_tokens": "both CLS embeddings",
    "patch_tokens": "patch tokens",
    "text_embeds": "text embedding",
}



class PublishError(ValueError):
    """A problem with the inputs of [`publish`] (bad folder, repository id, token...): reported without traceback."""



# ---------------------------------------------------------------------------------------------------------------------
# Model card


def base_model_for(preset: str | None) -> str | None:
    """Hub id of the Google release a preset reproduces (`"tips-v2-b14"` → `"google/tipsv2-b14"`), or `None`."""
    return GOOGLE_HUB_IDS.get(preset) if preset else None


def variant_name(config: TipsConfig) -> str:
    """Human name of the variant: `"TIPSv2 B/14"`, `"TIPS (v1) g/14 low-res"`, or a description of a custom one."""
    preset = config.preset
    if preset in PRESETS:
        return PRESETS[preset].display_name
    v = config.vision_config
    return f"TIPS (custom: width {v.hidden_size}, {v.num_hidden_layers} vision layers, patch {v.patch_size})"


def _param_counts(model_or_config) -> tuple[int, int, int]:
    if isinstance(model_or_config, TipsConfig):
        from ..modeling.modeling_tips import meta_model

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


