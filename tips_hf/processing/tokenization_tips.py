# Copyright 2026 The tips-hf authors. Licensed under the Apache License, Version 2.0.
"""TIPS tokenizer: the SentencePiece model itself, bit-exact with the official pipeline.

The official code lowercases with `tf.strings.lower` (ASCII only by default), encodes with SentencePiece without
BOS/EOS, and right-pads with id 0 (or cuts) to 64. Characters outside the vocabulary become `<unk>` (id 1), as
SentencePiece emits them; transformers' `Tipsv2Tokenizer` (a `tokenizers` BPE conversion) drops them instead.

Self-contained (transformers + sentencepiece) so that it travels with the remote-code files.
"""

from __future__ import annotations

from typing import Any

from transformers.tokenization_utils_base import BatchEncoding
from transformers.tokenization_utils_sentencepiece import SentencePieceBackend
from transformers.utils import PaddingStrategy, logging

logger = logging.get_logger(__name__)

VOCAB_FILES_NAMES = {"vocab_file": "tokenizer.model"}
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


class TipsTokenizer(SentencePieceBackend):
    """SentencePiece tokenizer for TIPS.

    Args:
        vocab_file (`str`): path to `tokenizer.model`.
        lowercase (`str`, defaults to `"ascii"`): `"ascii"` lowercases A–Z only, as `tf.strings.lower` does in the
            official pipeline; `"unicode"` uses Python's `str.lower`; `"none"` keeps the case.
        model_max_length (`int`, defaults to 64): the text tower's maximum length.

    Padding is on the right with `<pad>` (id 0); the attention mask is 1 on tokens and 0 on padding, so
    `1 - attention_mask` equals the official `paddings`. No BOS/EOS are added.
    """

    vocab_files_names = VOCAB_FILES_NAMES
    model_input_names = ["input_ids", "attention_mask"]
    padding_side = "right"

    def __init__(
        self,
        vocab_file: str,
        lowercase: str = "ascii",
        unk_token: str = "<unk>",
        pad_token: str = "<pad>",
        model_max_length: int = 64,
        **kwargs: Any,
    ):
        if lowercase not in ("ascii", "unicode", "none"):
            raise ValueError(f"TipsTokenizer.lowercase must be 'ascii', 'unicode' or 'none', got {lowercase!r}.")
        self.lowercase = lowercase
        kwargs.update(bos_token=None, eos_token=None)  # TIPS adds none, whatever a saved tokenizer config names
        super().__init__(
            vocab_file=vocab_file, unk_token=unk_token, pad_token=pad_token, model_max_length=model_max_length,
            lowercase=lowercase, **kwargs,
        )
        if self.sp_model.pad_id() not in (-1, self.pad_token_id):
            logger.warning(
                f"tokenizer.model declares pad id {self.sp_model.pad_id()} but TIPS pads with {self.pad_token_id}."
            )

    def normalize(self, text: str) -> str:
        """The text as the official pipeline feeds it to SentencePiece."""
        if self.lowercase == "ascii":
            return text.translate(_ASCII_LOWER)
        if self.lowercase == "unicode":
            return text.lower()
        return text

    def encode_ids(self, text: str) -> list[int]:
        """SentencePiece ids of one text, no special tokens, no length limit."""
        return self.sp_model.encode(self.normalize(text))

    def tokenize(self, text: str, **kwargs: Any) -> list[str]:
        # SentencePiece sees the whole text: "<pad>" typed in a caption is text, not a special token.
        return self.sp_model.encode(self.normalize(text), out_type=str)

    def _tokenize(self, text: str, **kwargs: Any) -> list[str]:
        return self.tokenize(text)

    def _encode_plus(self, text, text_pair=None, is_split_into_words: bool = False, **kwargs: Any):
        if isinstance(text, str) and text_pair is None and not is_split_into_words:
            ids = self.encode_ids(text)  # straight from SentencePiece
            padding = kwargs["padding_strategy"]
            if not ids and padding != PaddingStrategy.DO_NOT_PAD:
                # transformers' pad() reads an empty id list as an empty batch; an empty caption is all padding.
                length = (
                    (kwargs.get("max_length") or self.model_max_length) if padding == PaddingStrategy.MAX_LENGTH else 0
                )
                data = {"input_ids": [self.pad_token_id] * length}
                if kwargs.get("return_attention_mask") is not False:
                    data["attention_mask"] = [0] * length
                return BatchEncoding(data, tensor_type=kwargs.get("return_tensors"), prepend_batch_axis=True)
            return self.prepare_for_model(
                ids,
                add_special_tokens=kwargs.get("add_special_tokens", True),
                padding=kwargs["padding_strategy"].value,
                truncation=kwargs["truncation_strategy"].value,
                max_length=kwargs.get("max_length"),
                stride=kwargs.get("stride", 0),
                pad_to_multiple_of=kwargs.get("pad_to_multiple_of"),
                padding_side=kwargs.get("padding_side"),
                return_tensors=kwargs.get("return_tensors"),
                prepend_batch_axis=True,
                return_attention_mask=kwargs.get("return_attention_mask"),
                return_token_type_ids=kwargs.get("return_token_type_ids"),
                return_overflowing_tokens=kwargs.get("return_overflowing_tokens", False),
                return_special_tokens_mask=kwargs.get("return_special_tokens_mask", False),
                return_length=kwargs.get("return_length", False),
                verbose=kwargs.get("verbose", True),
            )
        return super()._encode_plus(text, text_pair=text_pair, is_split_into_words=is_split_into_words, **kwargs)

    def build_inputs_with_special_tokens(self, token_ids_0: list[int], token_ids_1: list[int] | None = None):
        return token_ids_0 + (token_ids_1 or [])

    def num_special_tokens_to_add(self, pair: bool = False) -> int:
        return 0


__all__ = ["TipsTokenizer"]
