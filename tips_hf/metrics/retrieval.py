# Copyright 2026 The tips-hf authors. Licensed under the Apache License, Version 2.0.
"""Image–text retrieval Recall@K: the one implementation, used directly and by the `retrieval_recall` evaluate
module (`tips_hf/metrics/retrieval_recall`)."""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn.functional as F


def _ranks_text_to_image(similarity: torch.Tensor, text_to_image: torch.Tensor, chunk_size: int) -> torch.Tensor:
    num_images, num_texts = similarity.shape
    ranks = torch.empty(num_texts, dtype=torch.long, device=similarity.device)
    for start in range(0, num_texts, chunk_size):
        block = similarity[:, start : start + chunk_size]  # (N_img, chunk)
        columns = torch.arange(block.shape[1], device=similarity.device)
        positive = block[text_to_image[start : start + chunk_size], columns]
        # Other images scoring at least as high as the right one (ties count against it): rank 0 = retrieved first.
        ranks[start : start + block.shape[1]] = (block >= positive[None, :]).sum(dim=0) - 1
    return ranks


def _ranks_image_to_text(similarity: torch.Tensor, text_to_image: torch.Tensor, chunk_size: int) -> torch.Tensor:
    num_images, num_texts = similarity.shape
    positive = similarity[text_to_image, torch.arange(num_texts, device=similarity.device)]
    # Best-scoring matching text of every image; images without a text keep -inf and are not scored.
    best = torch.full((num_images,), float("-inf"), dtype=similarity.dtype, device=similarity.device)
    best = best.scatter_reduce(0, text_to_image, positive, reduce="amax")
    has_text = torch.zeros(num_images, dtype=torch.bool, device=similarity.device)
    has_text[text_to_image] = True
    ranks = torch.empty(num_images, dtype=torch.long, device=similarity.device)
    for start in range(0, num_images, chunk_size):
        block = similarity[start : start + chunk_size]  # (chunk, N_txt)
        rows = torch.arange(start, start + block.shape[0], device=similarity.device)
        negative = text_to_image[None, :] != rows[:, None]
        ranks[start : start + block.shape[0]] = ((block >= best[rows, None]) & negative).sum(dim=1)
    return ranks[has_text]


def retrieval_recall_from_similarity(
    similarity: torch.Tensor,
    text_to_image: torch.Tensor | None = None,
    ks: Iterable[int] = (1, 5),
    chunk_size: int = 1024,
) -> dict[str, float]:
    """Recall@K in both directions from an image–text similarity matrix.

    Args:
        similarity (`torch.Tensor` of shape `(num_images, num_texts)`): scores, e.g. cosine similarities or
            `logits_per_image`.
        text_to_image (`torch.LongTensor` of shape `(num_texts,)`, *optional*): index of the image each text
            describes (several texts may share an image). Defaults to `arange(num_texts)` (pair i ↔ i, needs a
            square matrix).
        ks (iterable of `int`): the K values.
        chunk_size (`int`): rows/columns compared at a time (bounds memory to `chunk_size × max(N_img, N_txt)`).

    Returns:
        `dict` with `text_to_image_recall@K` (fraction of texts whose image is among the top K images) and
        `image_to_text_recall@K` (fraction of images with at least one of their texts among the top K texts; images
        without any text are not scored) for each K. Ties count against the right answer.
    """
    similarity = torch.as_tensor(similarity)
    if similarity.ndim != 2:
        raise ValueError(f"similarity must be (num_images, num_texts), got shape {tuple(similarity.shape)}.")
    if not similarity.is_floating_point():
        similarity = similarity.float()
    num_images, num_texts = similarity.shape
    if text_to_image is None:
        if num_images != num_texts:
            raise ValueError(
                f"Without text_to_image the pairs are i ↔ i and the matrix must be square, got {num_images} images "
                f"and {num_texts} texts."
            )
        text_to_image = torch.arange(num_texts)
    text_to_image = torch.as_tensor(text_to_image, dtype=torch.long, device=similarity.device).reshape(-1)
    if text_to_image.shape[0] != num_texts:
        raise ValueError(f"text_to_image has {text_to_image.shape[0]} entries for {num_texts} texts.")
    if num_texts and (text_to_image.min() < 0 or text_to_image.max() >= num_images):
        raise ValueError(f"text_to_image must index the {num_images} images, got values outside [0, {num_images}).")
    t2i = _ranks_text_to_image(similarity, text_to_image, chunk_size)
    i2t = _ranks_image_to_text(similarity, text_to_image, chunk_size)
    results = {}
    for k in ks:
        results[f"image_to_text_recall@{k}"] = (i2t < k).double().mean().item()
        results[f"text_to_image_recall@{k}"] = (t2i < k).double().mean().item()
    return results


def retrieval_recall(
    image_embeds: torch.Tensor,
    text_embeds: torch.Tensor,
    ks: Iterable[int] = (1, 5),
    text_to_image: torch.Tensor | None = None,
) -> dict[str, float]:
    """Recall@K of image↔text retrieval by cosine similarity of embeddings.

    Args:
        image_embeds (`torch.Tensor` of shape `(num_images, dim)`): e.g. `get_image_features(...).pooler_output`.
        text_embeds (`torch.Tensor` of shape `(num_texts, dim)`): e.g. `get_text_features(...).pooler_output`.
        ks (iterable of `int`): the K values.
        text_to_image (`torch.LongTensor` of shape `(num_texts,)`, *optional*): image index of each text; defaults to
            pair i ↔ i.

    Returns:
        `dict` of floats, see [`retrieval_recall_from_similarity`].
    """
    image_embeds = F.normalize(torch.as_tensor(image_embeds).float(), dim=-1)
    text_embeds = F.normalize(torch.as_tensor(text_embeds).float().to(image_embeds.device), dim=-1)
    if image_embeds.ndim != 2 or text_embeds.ndim != 2 or image_embeds.shape[1] != text_embeds.shape[1]:
        raise ValueError(
            f"Embeddings must be (N, D) with the same D, got {tuple(image_embeds.shape)} and {tuple(text_embeds.shape)}."
        )
    return retrieval_recall_from_similarity(image_embeds @ text_embeds.T, text_to_image, ks)


__all__ = ["retrieval_recall", "retrieval_recall_from_similarity"]
