"""A transformers image captioner behind one call: PIL images in, one caption per image and task out.

Three input conventions cover the captioners transformers generates with:

- prompt-free models (BLIP, GIT, VisionEncoderDecoder): the processor gets only the images;
- task-prompted models (PaliGemma / PaliGemma 2: `caption en`, Florence-2: `<CAPTION>`): images + the prompt text;
- chat VLMs (SmolVLM, Idefics3, Qwen-VL, ...): the prompt goes through the processor's chat template.

Decoding is deterministic (greedy, or beam search with `num_beams > 1`; never sampling), so a captioned dataset is
reproducible and a resumed run writes what an uninterrupted one would.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from PIL import Image

from .._paths import check_model_path

logger = logging.getLogger(__name__)

PROMPT_FREE = ("blip", "git", "vision-encoder-decoder")
TASK_PROMPTED = ("paligemma", "florence2")
PRESET_NAMES = ("short", "detailed")

# TIPSv2's multi-granularity captions: a short one (PaliGemma-style) and a detailed one (Gemini-style); SPEC §3.2.
# Per family: (prompt, max_new_tokens, extra generate() arguments). Prompt None: the model takes no prompt.
_CHAT_SHORT = "Describe this image in one short sentence."
_CHAT_DETAILED = (
    "Describe this image in detail: the objects, their colours, shapes and sizes, where they are relative to each "
    "other, and the background."
)
PRESETS: dict[str, dict[str, tuple[str | None, int, dict]]] = {
    # BLIP/GIT have no "detailed" mode; the preset asks for a longer caption (at least 20 new tokens, no repeated
    # trigrams). Use a prompted VLM for genuinely detailed captions.
    "prompt-free": {
        "short": (None, 30, {}),
        "detailed": (None, 75, {"min_new_tokens": 20, "no_repeat_ngram_size": 3}),
    },
    "paligemma": {"short": ("caption en", 40, {}), "detailed": ("describe en", 200, {})},
    "florence2": {"short": ("<CAPTION>", 40, {}), "detailed": ("<MORE_DETAILED_CAPTION>", 200, {})},
    "chat": {"short": (_CHAT_SHORT, 40, {}), "detailed": (_CHAT_DETAILED, 200, {})},
}
PRESETS["text"] = PRESETS["chat"]


@dataclass(frozen=True)
class CaptionTask:
    """One caption column: what to ask the model and how long it may answer."""

    column: str
    prompt: str | None = None  # None: a prompt-free captioner (BLIP); text for prompted ones
    max_new_tokens: int = 40
    generate_kwargs: dict = field(default_factory=dict)  # e.g. min_new_tokens; never sampling


def model_family(model_type: str, has_chat_template: bool) -> str:
    """`prompt-free`, `paligemma`, `florence2`, `chat` (chat template) or `text` for a config's `model_type`."""
    if model_type in PROMPT_FREE:
        return "prompt-free"
    if model_type in TASK_PROMPTED:
        return model_type
    # an image-text-to-text model without a chat template gets the prompt as plain text
    return "chat" if has_chat_template else "text"


def preset_task(family: str, preset: str, column: str, max_new_tokens: int | None = None,
                min_new_tokens: int | None = None) -> CaptionTask:
    """The `short` or `detailed` caption task of a model family; `min_new_tokens` (`--min-new-tokens`) replaces the
    preset's minimum (a captioner that ends at once writes empty captions)."""
    if preset not in PRESET_NAMES:
        raise ValueError(f"unknown caption preset {preset!r} (presets: {', '.join(PRESET_NAMES)}).")
    prompt, default_tokens, extra = PRESETS[family][preset]
    return custom_task(column, prompt, max_new_tokens or default_tokens, min_new_tokens, extra)


def custom_task(column: str, prompt: str | None, max_new_tokens: int, min_new_tokens: int | None = None,
                generate_kwargs: dict | None = None) -> CaptionTask:
    """A caption task; `min_new_tokens` (else `generate_kwargs`' own) is clamped to `max_new_tokens`, which wins."""
    extra = dict(generate_kwargs or {})
    if min_new_tokens is not None:
        if min_new_tokens < 0:
            raise ValueError(f"--min-new-tokens must be >= 0, got {min_new_tokens}.")
        extra["min_new_tokens"] = min_new_tokens
    if "min_new_tokens" in extra:  # a --max-new-tokens below the minimum wins
        extra["min_new_tokens"] = min(extra["min_new_tokens"], max_new_tokens)
    return CaptionTask(column, prompt, max_new_tokens, extra)


class Captioner:
    """A captioning model and its processor, loaded with the Auto classes.

    Args:
        model: a local folder or Hub id (loaded with `AutoProcessor` + `AutoModelForImageTextToText`).
        device: where to run (`cuda:0`, `cpu`, ...).
        dtype: weights' dtype; None: bfloat16 on CUDA, float32 elsewhere.
        num_beams: 1 (greedy) or beam search; decoding never samples.
    """

    def __init__(self, model: str, device: torch.device | str = "cpu", dtype: torch.dtype | None = None,
                 num_beams: int = 1):
        from transformers import AutoConfig, AutoModelForImageTextToText, AutoProcessor

        check_model_path(model, "--model", "pass a captioner folder (save_pretrained) or a Hub model id",
                         error=ValueError)
        self.device = torch.device(device)
        if dtype is None:
            dtype = torch.bfloat16 if self.device.type == "cuda" else torch.float32
        try:
            config = AutoConfig.from_pretrained(model)
        except (OSError, ValueError) as error:
            raise ValueError(f"--model {model}: not a transformers model folder or Hub id ({error}).") from None
        try:
            self.processor = AutoProcessor.from_pretrained(model)
        except (OSError, ValueError) as error:
            raise ValueError(
                f"--model {model}: no processor could be loaded (save it next to the model; {error})."
            ) from None
        try:
            self.model = AutoModelForImageTextToText.from_pretrained(model, dtype=dtype)
        except ValueError as error:
            raise ValueError(
                f"--model {model}: model type {config.model_type!r} is not an image-text-to-text (captioning) model "
                f"in transformers ({error})."
            ) from None
        self.model.to(self.device).eval()
        self.dtype = dtype
        self.num_beams = num_beams
        self.family = model_family(config.model_type, getattr(self.processor, "chat_template", None) is not None)
        tokenizer = getattr(self.processor, "tokenizer", None)
        if tokenizer is not None and self.family != "prompt-free":
            # batched decoder-only generation continues every row from its last prompt token
            tokenizer.padding_side = "left"
        self._prompts: dict[str, str] = {}

    def _prompt_text(self, prompt: str) -> str:
        if self.family == "paligemma":  # PaliGemma's documented form: the image token(s) first, then the task
            return f"{getattr(self.processor, 'image_token', '')}{prompt}"
        if self.family != "chat":
            return prompt
        if prompt not in self._prompts:
            messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}]
            self._prompts[prompt] = self.processor.apply_chat_template(messages, add_generation_prompt=True)
        return self._prompts[prompt]

    def _inputs(self, images: list[Image.Image], task: CaptionTask) -> dict[str, torch.Tensor]:
        if task.prompt is None:
            if self.family != "prompt-free":
                raise ValueError(f"a {self.family} captioner needs a prompt (use --preset or --prompt).")
            encoded = self.processor(images=images, return_tensors="pt")
        else:
            text = [self._prompt_text(task.prompt)] * len(images)
            batch_images = [[image] for image in images] if self.family == "chat" else images
            encoded = self.processor(images=batch_images, text=text, return_tensors="pt", padding=True)
        return {
            k: v.to(self.device, self.dtype if v.is_floating_point() else None) if torch.is_tensor(v) else v
            for k, v in encoded.items()
        }

    @torch.inference_mode()
    def caption(self, images: Sequence[Image.Image], task: CaptionTask) -> list[str]:
        """One caption per image (RGB PIL images), for one task."""
        images = list(images)
        if not images:
            return []
        inputs = self._inputs(images, task)
        generated = self.model.generate(
            **inputs, max_new_tokens=task.max_new_tokens, num_beams=self.num_beams, do_sample=False,
            **task.generate_kwargs,
        )
        prompt_ids = inputs.get("input_ids")
        if prompt_ids is not None:
            # decoder-only models return prompt + continuation; BLIP returns its prompt minus the final [SEP] with
            # [BOS] first; encoder-decoder models (Florence-2) return only the answer
            length = prompt_ids.shape[1] - (1 if self.model.config.model_type == "blip" else 0)
            head = generated[:, 1:length] if length > 1 else generated[:, :0]
            if generated.shape[1] >= length and torch.equal(head, prompt_ids[:, 1:length]):
                generated = generated[:, length:]
        texts = self.processor.batch_decode(generated, skip_special_tokens=True)
        return [text.strip() for text in texts]
