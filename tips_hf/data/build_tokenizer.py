"""Build `scenes_tokenizer.model`: a SentencePiece BPE tokenizer in the TIPS layout (pad 0, unk 1, no BOS/EOS) for
the embedded spatial-scenes dataset.

    python -m tips_hf.data.build_tokenizer   # rewrites tips_hf/data/scenes_tokenizer.model

The file ships with the package; this script documents how it was made (and remakes it byte-identically).
"""

from __future__ import annotations

import argparse
import io
from pathlib import Path

TOKENIZER_PATH = Path(__file__).with_name("scenes_tokenizer.model")


def caption_corpus(num_examples: int = 6000, seed: int = 12345) -> list[str]:
    """Lowercased alt-texts and synthetic captions of training scenes (a seed not used by the default runs)."""
    from .scenes import SpatialScenes

    scenes = SpatialScenes("train", num_examples, seed=seed, image_size=56)
    lines = []
    for i in range(num_examples):
        example = scenes[i]
        lines.extend(text.lower() for text in (example["alt_text"], *example["synthetic_captions"]) if text)
    return lines


def build(path: Path = TOKENIZER_PATH, vocab_size: int = 512, num_examples: int = 6000) -> Path:
    import sentencepiece as spm

    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(caption_corpus(num_examples)),
        model_writer=model,
        model_type="bpe",
        vocab_size=vocab_size,
        character_coverage=1.0,
        pad_id=0,
        unk_id=1,
        bos_id=-1,
        eos_id=-1,
        num_threads=1,
        minloglevel=2,
    )
    path.write_bytes(model.getvalue())
    return path


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--output", type=Path, default=TOKENIZER_PATH)
    parser.add_argument("--vocab-size", type=int, default=512)
    args = parser.parse_args()
    print(build(args.output, args.vocab_size))
