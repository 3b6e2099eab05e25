# Copyright 2026 The tips-hf authors. Licensed under the Apache License, Version 2.0.
"""Image↔text retrieval on Flickr30k / COCO (the README table's "Flickr I→T" and "Flickr T→I").

Protocol
--------
- Data: the Karpathy test split (Flickr30k: 1,000 images × 5 captions; COCO 5k: 5,000 × ~5). Every caption of an
  image is a separate query/target.
- Images: squared to the model's input size (448×448 for the released HR and v2 models, 224×224 for g/14-LR) with
  the model's own `TipsImageProcessor` (bilinear with antialiasing, RGB in [0, 1], no mean/std) — the resize of the
  official `run_image_encoder_inference.py` (`--resize center-crop`: short side to size / 0.875, central crop, to
  study how much the resize matters; mteb#5067 attributed its 1–2 point gap to it). Texts: the exact TIPS tokenizer, lowercased, padded/cut to 64.
- Scores: cosine similarity of L2-normalised embeddings, for each head separately: the alt-text head (CLS-1) and
  the synthetic-caption head (CLS-2) against the same text embeddings. The official README does not say which head
  its Flickr numbers use; both are reported.
- Metric: `tips_hf.metrics.retrieval_recall_from_similarity` — I→T R@K: fraction of images with at least one of
  their captions among the K best-scoring texts; T→I R@K: fraction of captions whose image is among the K
  best-scoring images; ties count against the right answer. K = 1, 5, 10.

Layouts
-------
- Karpathy JSON (`dataset_flickr30k.json`, `dataset_coco.json`): `{"images": [{"filename", "split",
  "sentences": [{"raw"}], "filepath" (COCO)}]}`. `--data` is the JSON file or a folder holding it; images are looked
  up as `<root>/<filepath>/<filename>`, `<root>/flickr30k-images/<filename>`, `<root>/images/<filename>`,
  `<root>/<filename>` (root = the JSON's folder, or `--image-root`). `--split` picks the Karpathy split (`test`).
- A `datasets` dataset with an image column and a caption column holding a list of strings (or one string per row):
  a Hub id (`--where split=test` filters a column, e.g. `nlphuji/flickr30k`), a `save_to_disk` folder, data files
  (parquet, arrow, csv, json lines), or a folder that `datasets.load_dataset` reads, such as an `imagefolder` whose
  `metadata.jsonl` lists the captions of each image (`{"file_name": "1.jpg", "captions": ["...", "..."]}`; the
  Hub's Flickr30k / COCO caption datasets look like this). `--image-column` / `--text-column` name the columns
  (default: the first of `image, img, jpg, png` and of `caption, captions, sentences, text, raw`); a missing one
  is an error listing the columns found. `--split` picks the split (`test`; a dataset of one split, such as an
  imagefolder without split folders, is read whatever its name).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from ..dense.zero_shot import encode_texts
from ..metrics.retrieval import retrieval_recall_from_similarity
from .common import (
    HEADS,
    IMAGE_COLUMNS,
    EvalError,
    EvalOptions,
    batches,
    evenly_spaced,
    image_embeddings,
    is_file_layout,
    load_hf,
    model_image_size,
    open_image,
    percent,
    pick_column,
    pixels_for,
    resize_description,
)

KS = (1, 5, 10)
KARPATHY_FILES = ("dataset_flickr30k.json", "dataset_coco.json", "dataset_flickr8k.json")
CAPTION_COLUMNS = ("caption", "captions", "sentences", "text", "raw")


def _find_karpathy(data: Path) -> Path | None:
    """The Karpathy JSON `data` names (a `.json` file, or a folder holding one); None for any other layout."""
    if data.is_file():
        return data if data.suffix.lower() == ".json" else None
    for name in KARPATHY_FILES:
        if (data / name).is_file():
            return data / name
    found = sorted(data.glob("dataset_*.json"))
    if len(found) > 1:
        raise EvalError(f"{data}: several Karpathy caption files ({', '.join(p.name for p in found)}); pass one")
    return found[0] if found else None


def _caption_text(sentence: Any, where: str) -> str:
    if isinstance(sentence, str):
        return sentence
    if isinstance(sentence, dict):
        if isinstance(sentence.get("raw"), str):
            return sentence["raw"]
        if isinstance(sentence.get("tokens"), list):
            return " ".join(sentence["tokens"])
    raise EvalError(f"{where}: a sentence needs a 'raw' string (or 'tokens'), got {sentence!r:.80}")


def read_karpathy(
    path: Path, split: str, image_root: Path | None = None, limit: int | None = None
) -> tuple[list[Path], list[str], list[int]]:
    """Image paths, captions and the image index of every caption for one Karpathy split."""
    try:
        content = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise EvalError(f"{path}: cannot read the Karpathy JSON: {error}") from None
    entries = content.get("images") if isinstance(content, dict) else None
    if not isinstance(entries, list):
        raise EvalError(f"{path}: expected a top-level 'images' list (Karpathy layout)")
    root = image_root or path.parent
    selected = []
    for index, entry in enumerate(entries):
        where = f"{path}: images[{index}]"
        if not isinstance(entry, dict):
            raise EvalError(f"{where} is not an object")
        for key in ("filename", "split", "sentences"):
            if key not in entry:
                raise EvalError(f"{where} has no '{key}' (needs filename, split, sentences[].raw)")
        if entry["split"] == split:
            selected.append((index, entry))
    if not selected:
        splits = sorted({str(e.get("split")) for e in entries if isinstance(e, dict)})
        raise EvalError(f"{path}: no image in split {split!r}; splits present: {', '.join(splits)}")
    images, captions, owner = [], [], []
    for position in evenly_spaced(len(selected), limit):
        index, entry = selected[position]
        where = f"{path}: images[{index}]"
        sentences = entry["sentences"]
        if not isinstance(sentences, list) or not sentences:
            raise EvalError(f"{where}: 'sentences' must be a non-empty list")
        images.append(_image_path(root, entry, where))
        for sentence in sentences:
            captions.append(_caption_text(sentence, where))
            owner.append(len(images) - 1)
    return images, captions, owner


def _image_path(root: Path, entry: dict[str, Any], where: str) -> Path:
    name = str(entry["filename"])
    candidates = [root / str(entry["filepath"]) / name] if entry.get("filepath") else []
    candidates += [root / "flickr30k-images" / name, root / "images" / name, root / name]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise EvalError(f"{where}: image {name!r} not found (tried {', '.join(str(c) for c in candidates)})")


def _hf_rows(data: Any, options: EvalOptions) -> tuple[Any, str, list[str], list[int]]:
    try:
        dataset = load_hf(data, options.split or "test", options, any_single_split=True)
    except EvalError as error:
        if not is_file_layout(data):
            raise
        raise EvalError(f"{error}; nor is it a Karpathy caption file ({', '.join(KARPATHY_FILES)})") from None
    names = list(dataset.column_names or [])
    image_column = pick_column(names, options.image_column, IMAGE_COLUMNS, "image")
    text_column = pick_column(names, options.text_column, CAPTION_COLUMNS, "caption")
    if not hasattr(dataset, "__len__"):  # streamed: materialise (retrieval needs the whole gallery anyway)
        dataset = list(dataset)
    captions, owner = [], []
    for index in range(len(dataset)):
        value = dataset[index][text_column]
        values = value if isinstance(value, list) else [value]
        if not values:
            raise EvalError(f"row {index}: column {text_column!r} holds no caption")
        for sentence in values:
            captions.append(_caption_text(sentence, f"row {index}, column {text_column!r}"))
            owner.append(index)
    return dataset, image_column, captions, owner


@torch.no_grad()
def evaluate_retrieval(model: Any, processor: Any, data: Any, options: EvalOptions) -> dict[str, Any]:
    """Run the retrieval protocol above; returns the result dict (metrics, protocol, table)."""
    start = time.perf_counter()
    size = model_image_size(model, processor, options.image_size)
    split = options.split or "test"
    resize = options.extra.get("resize") or "square"
    json_path = _find_karpathy(Path(data)) if is_file_layout(data) else None
    if json_path is not None:
        image_root = options.extra.get("image_root")
        records, captions, owner = read_karpathy(
            json_path, split, Path(image_root) if image_root else None, options.limit
        )

        def load(path: Path) -> dict[str, Any]:
            return {"pixel_values": pixels_for(processor, open_image(path, str(path)), size, resize)}

    else:
        records, image_column, captions, owner = _hf_rows(data, options)
        split = str(getattr(records, "split", None) or split)  # the one split of a single-split dataset

        def load(row: dict[str, Any]) -> dict[str, Any]:
            return {"pixel_values": pixels_for(processor, open_image(row[image_column], image_column), size, resize)}

    embeds: dict[str, list[torch.Tensor]] = {head: [] for head in HEADS}
    for batch in batches(records, load, options, desc="retrieval: images"):
        for head, value in image_embeddings(model, batch["pixel_values"]).items():
            embeds[head].append(F.normalize(value, dim=-1).cpu())
    texts = _encode_texts(model, processor, captions, options)
    text_to_image = torch.tensor(owner)
    metrics: dict[str, float] = {}
    for head in HEADS:
        similarity = torch.cat(embeds[head]) @ texts.T
        for key, value in retrieval_recall_from_similarity(similarity, text_to_image, ks=KS).items():
            metrics[f"{head}/{key}"] = value
    num_images = int(text_to_image.max()) + 1 if len(owner) else 0
    rows = [
        [head]
        + [percent(metrics[f"{head}/image_to_text_recall@{k}"]) for k in KS]
        + [percent(metrics[f"{head}/text_to_image_recall@{k}"]) for k in KS]
        for head in HEADS
    ]
    return {
        "task": "retrieval",
        "split": split,
        "num_examples": num_images,
        "num_texts": len(captions),
        "metrics": metrics,
        "protocol": {
            "image_size": [size, size],
            "resize": resize_description(resize, size),
            "text": "TIPS SentencePiece tokenizer, lowercased, padded/cut to 64",
            "score": "cosine similarity of L2-normalised embeddings, per head",
            "ks": list(KS),
        },
        "table": {
            "columns": ["head"] + [f"I→T R@{k}" for k in KS] + [f"T→I R@{k}" for k in KS],
            "rows": rows,
        },
        "runtime_s": time.perf_counter() - start,
    }


def _encode_texts(model: Any, processor: Any, texts: list[str], options: EvalOptions) -> torch.Tensor:
    from tqdm.auto import tqdm

    chunk = max(1, options.batch_size) * 4
    parts = []
    for begin in tqdm(range(0, len(texts), chunk), desc="retrieval: texts", disable=not options.progress):
        parts.append(encode_texts(model, processor, texts[begin : begin + chunk], batch_size=chunk).cpu())
    return torch.cat(parts) if parts else torch.empty(0)


__all__ = ["evaluate_retrieval", "read_karpathy"]
