# Copyright 2026 The tips-hf authors. Licensed under the Apache License, Version 2.0.
"""`evaluate` module: image↔text Recall@K (maths in `tips_hf.metrics.retrieval`)."""

import evaluate
import numpy as np
import torch

from tips_hf.metrics import retrieval_recall, retrieval_recall_from_similarity
from tips_hf.metrics.info import example_features, metric_info

_DESCRIPTION = """
Image→text and text→image Recall@K. Two input forms, one example per text:

1. Similarities: `predictions[j]` is text j's similarity to every image (a row of `logits_per_text`, shape
   (num_texts, num_images)) and `references[j]` the index of its image. Several texts may share an image.
2. Paired embeddings: `predictions[i]` an image embedding and `references[i]` the embedding of its text (pair i ↔ i,
   cosine similarity). With several texts per image, repeat the image embedding and pass `image_ids` (one id per
   pair; rows with the same id are one image).

Image→text recall@K: fraction of images with at least one of their texts in the top K texts; text→image recall@K:
fraction of texts whose image is in the top K images. Ties count against the right answer.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions: `(num_texts, num_images)` similarities, or `(N, D)` image embeddings.
    references: `(num_texts,)` image indices, or `(N, D)` text embeddings.
    ks (`tuple[int]`, defaults to `(1, 5)`): the K values.
    image_ids (`(N,)` hashable ids, *optional*, embeddings form only): which pairs share an image.

Returns:
    `image_to_text_recall@K` and `text_to_image_recall@K` (`float`) for each K.

Examples:
    >>> metric = tips_hf.metrics.load_metric("retrieval_recall")
    >>> metric.compute(predictions=[[0.9, 0.1], [0.8, 0.2]], references=[0, 1], ks=(1,))
    {'image_to_text_recall@1': 1.0, 'text_to_image_recall@1': 0.5}
"""


class RetrievalRecall(evaluate.Metric):
    def _info(self):
        row = ("float32", 1)  # a text's similarities to the images, or an embedding
        # evaluate picks the first feature set that encodes the first example: int references = similarities.
        features = [example_features(row, ("int64", 0)), example_features(row, row)]
        return metric_info(_DESCRIPTION, _KWARGS_DESCRIPTION, features)

    def _compute(self, predictions, references, ks=(1, 5), image_ids=None):
        predictions = torch.tensor(np.asarray(predictions, dtype=np.float32))
        if len(references) and isinstance(references[0], (list, tuple, np.ndarray)):
            text_embeds = torch.tensor(np.asarray(references, dtype=np.float32))
            if image_ids is None:
                return retrieval_recall(predictions, text_embeds, ks=ks)
            ids = np.asarray(image_ids)
            if ids.shape[0] != predictions.shape[0]:
                raise ValueError(f"image_ids has {ids.shape[0]} entries for {predictions.shape[0]} pairs.")
            # One row per distinct image (its first occurrence); each text points at its image's row.
            _, first, text_to_image = np.unique(ids, return_index=True, return_inverse=True)
            return retrieval_recall(
                predictions[torch.from_numpy(first)], text_embeds, ks=ks, text_to_image=torch.from_numpy(text_to_image)
            )
        if image_ids is not None:
            raise ValueError(
                "image_ids is for the paired-embeddings form; with similarities, references are image ids."
            )
        similarity = predictions.T  # (num_images, num_texts)
        return retrieval_recall_from_similarity(similarity, torch.tensor(references, dtype=torch.long), ks=ks)
