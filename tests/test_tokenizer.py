"""TipsTokenizer is bit-exact with SentencePiece on the reference fixture (ids and paddings, every row)."""

import json

import numpy as np
import pytest
from conftest import REFERENCE, TOKENIZER_MODEL

from tips_hf import TipsProcessor, TipsTokenizer

EXPECTED = json.loads((REFERENCE / "tokenizer" / "expected.json").read_text())


@pytest.fixture(scope="module")
def tokenizer():
    return TipsTokenizer(str(TOKENIZER_MODEL))


def test_batch_matches_reference(tokenizer):
    out = tokenizer(
        EXPECTED["texts"], padding="max_length", truncation=True, max_length=EXPECTED["max_length"], return_tensors="np"
    )
    np.testing.assert_array_equal(out["input_ids"], np.array(EXPECTED["input_ids"]))
    np.testing.assert_array_equal(1 - out["attention_mask"], np.array(EXPECTED["paddings"]))


@pytest.mark.parametrize("row", range(len(EXPECTED["texts"])))
def test_each_row_alone(tokenizer, row):
    out = tokenizer(EXPECTED["texts"][row], padding="max_length", truncation=True, max_length=64)
    assert out["input_ids"] == EXPECTED["input_ids"][row]
    assert [1 - m for m in out["attention_mask"]] == EXPECTED["paddings"][row]


def test_unknown_characters_become_unk(tokenizer):
    ids = tokenizer.encode_ids("emoji \U0001f642 and unknown \u2603 glyphs")
    assert ids.count(tokenizer.unk_token_id) >= 2 and tokenizer.unk_token_id == 1 and tokenizer.pad_token_id == 0


def test_special_token_text_is_plain_text(tokenizer):
    # SentencePiece encodes the characters of "<pad>"; it must never become the padding id inside a caption.
    assert 0 not in tokenizer("<pad> <unk>")["input_ids"]


def test_lowercase_modes():
    ascii_tok = TipsTokenizer(str(TOKENIZER_MODEL))
    unicode_tok = TipsTokenizer(str(TOKENIZER_MODEL), lowercase="unicode")
    assert ascii_tok.normalize("ÉCOLE Abc") == "École abc"
    assert unicode_tok.normalize("ÉCOLE Abc") == "école abc"
    with pytest.raises(ValueError, match="lowercase"):
        TipsTokenizer(str(TOKENIZER_MODEL), lowercase="title")


def test_save_load_roundtrip(tokenizer, tmp_path):
    tokenizer.save_pretrained(tmp_path)
    loaded = TipsTokenizer.from_pretrained(tmp_path)
    assert (
        loaded(EXPECTED["texts"], padding="max_length", max_length=64, truncation=True)["input_ids"]
        == EXPECTED["input_ids"]
    )


def test_processor_defaults_pad_and_cut_to_64(tokenizer):
    from tips_hf import TipsImageProcessor

    processor = TipsProcessor(image_processor=TipsImageProcessor(), tokenizer=tokenizer)
    out = processor(text=EXPECTED["texts"], return_tensors="np")
    np.testing.assert_array_equal(out["input_ids"], np.array(EXPECTED["input_ids"]))
