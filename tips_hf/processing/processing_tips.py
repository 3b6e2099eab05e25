# Copyright 2026 The tips-hf authors. Licensed under the Apache License, Version 2.0.
"""`TipsProcessor`: a [`TipsImageProcessor`] and a [`TipsTokenizer`] behind one call.

Texts are padded to 64 tokens and cut beyond, as the official pipeline does. Self-contained so that it travels with
the remote-code files.
"""

from transformers.processing_utils import ProcessingKwargs, ProcessorMixin

from .image_processing_tips import TipsImageProcessor, TipsImageProcessorKwargs  # noqa: F401 (remote-code lookup)
from .tokenization_tips import TipsTokenizer  # noqa: F401 (remote-code lookup)

_TEXT_DEFAULTS = {"padding": "max_length", "truncation": True, "max_length": 64}


class TipsProcessorKwargs(ProcessingKwargs, total=False):
    images_kwargs: TipsImageProcessorKwargs
    # transformers < 5.2x reads defaults from here; newer versions from the class attribute below.
    _defaults = {"text_kwargs": _TEXT_DEFAULTS}


class TipsProcessor(ProcessorMixin):
    r"""Processor for [`TipsModel`]: `processor(images=..., text=..., return_tensors="pt")` returns `pixel_values`,
    `input_ids` and `attention_mask`.

    Args:
        image_processor ([`TipsImageProcessor`]): RGB, resize, [0, 1].
        tokenizer ([`TipsTokenizer`]): SentencePiece, lowercased, padded/cut to 64.
    """

    valid_processor_kwargs = TipsProcessorKwargs
    text_kwargs = dict(_TEXT_DEFAULTS)

    def __init__(self, image_processor=None, tokenizer=None, **kwargs):
        super().__init__(image_processor, tokenizer, **kwargs)


__all__ = ["TipsProcessor"]
