"""The data of dense fine-tuning: image + label-map pairs from the embedded scenes or an HF dataset, the training
view that keys them by (epoch, index) for the process-count-invariant `GlobalBatchSampler`, and the collator."""

from __future__ import annotations

import numpy as np
import torch

from ..pretraining.data import pixels_to_model, sample_generator
from .config import DenseDataSection


class DenseDataset(torch.utils.data.Dataset):
    """(image uint8 (3, S, S), label map at the source resolution) pairs from the scenes or an HF dataset."""

    def __init__(self, config: DenseDataSection, task: str, split: str, num_examples: int, seed: int = 0):
        self.config, self.task = config, task
        if config.source == "scenes":
            from ..data import SpatialScenes

            self.rows = SpatialScenes(split, num_examples, image_size=config.scene_image_size, seed=seed,
                                      **config.scene_options)
            self.label_key = "depth" if task == "depth" else "class_mask"
        else:
            from ..pretraining.config import DataConfig
            from ..pretraining.data import load_source

            source = DataConfig(source=config.source, path=config.path, image_column=config.image_column,
                                alt_text_column=config.image_column, synthetic_columns=[])
            self.rows = load_source(source, split=split, extra_columns=[config.label_column])
            if num_examples and num_examples < len(self.rows):
                self.rows = self.rows.select(range(num_examples))
            self.label_key = config.label_column

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        from torchvision.transforms.v2 import functional as TF

        from ..pretraining.data import decode_image

        row = self.rows[index]
        image = decode_image(row[self.config.image_column])
        label = row[self.label_key]
        label = np.asarray(label if not hasattr(label, "convert") else label, dtype=np.float32 if self.task == "depth"
                           else np.int64)
        side = self.config.image_size
        pixels = TF.resize(TF.pil_to_tensor(image), [side] * 2, antialias=True)
        label = torch.from_numpy(label)
        if label.ndim != 2:
            raise ValueError(f"data.label_column {self.label_key!r}: row {index} is not a 2-D map (shape {tuple(label.shape)}).")
        if tuple(label.shape) != (side, side):  # label maps of any size batch together; nearest keeps ids and depths
            label = TF.resize(label[None], [side] * 2, interpolation=TF.InterpolationMode.NEAREST)[0]
        if self.task == "segmentation" and self.config.reduce_labels:
            label = torch.where((label == 0) | (label == 255), 255, label - 1)
        elif self.task == "depth" and self.config.depth_offset:
            label = label + self.config.depth_offset
        return {"pixel_values": pixels, "labels": label}


class DenseCollator:
    """`DenseDataset` samples -> `{"pixel_values": (B, 3, S, S) float, "labels": (B, S, S)}`, the pixels scaled to
    [0, 1] and normalised as the backbone was pretrained (`normalisation`: its processor's `(image_mean, image_std)`,
    `(None, None)` for none)."""

    def __init__(self, normalisation: tuple = (None, None)):
        self.normalisation = normalisation

    def __call__(self, samples: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        pixels = torch.stack([sample["pixel_values"] for sample in samples])
        return {"pixel_values": pixels_to_model(pixels, *self.normalisation),
                "labels": torch.stack([sample["labels"] for sample in samples])}


class TrainingView(torch.utils.data.Dataset):
    """`(epoch, index)` keys of `GlobalBatchSampler` -> the example, flipped horizontally by a generator of
    (seed, epoch, index): the same batches and flips whatever the process count or the step a run resumed at."""

    def __init__(self, dataset: DenseDataset, flip_probability: float, seed: int):
        self.dataset, self.flip_probability, self.seed = dataset, flip_probability, seed

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]) -> dict[str, torch.Tensor]:
        epoch, index = key
        sample = self.dataset[index]
        if self.flip_probability and torch.rand(1, generator=sample_generator(self.seed, epoch, index)).item() < (
            self.flip_probability
        ):
            sample = {name: value.flip(-1) for name, value in sample.items()}
        return sample


class CaptionedView(torch.utils.data.Dataset):
    """Image–caption rows for contrastive fine-tuning: `{"image": PIL image, "alt_text": str, "synthetic": str}`.

    Indexed by the `(epoch, index)` keys of `GlobalBatchSampler` (training) or by `index` (evaluation: epoch 0). A row
    whose synthetic column holds several captions gives one of them, drawn by a generator of (seed, epoch, index): the
    same caption whatever the process count or the step a run resumed at, another one each epoch."""

    def __init__(self, rows, image_column: str, alt_text_column: str, synthetic_column: str | None, seed: int = 0):
        self.rows, self.seed = rows, seed
        self.image_column, self.alt_text_column, self.synthetic_column = image_column, alt_text_column, synthetic_column
        missing = [name for name in (image_column, alt_text_column, synthetic_column)
                   if name is not None and name not in rows.column_names]
        if missing:
            raise ValueError(f"data: column(s) {missing} not in the dataset (columns: {rows.column_names}); set "
                             "data.image_column / data.alt_text_column / data.synthetic_column.")

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, key: tuple[int, int] | int) -> dict:
        from ..pretraining.data import decode_image

        epoch, index = key if isinstance(key, tuple) else (0, key)
        row = self.rows[int(index)]
        alt_text = row[self.alt_text_column]
        synthetic = row[self.synthetic_column] if self.synthetic_column is not None else alt_text
        if isinstance(synthetic, (list, tuple)):
            if not synthetic:
                raise ValueError(f"data.synthetic_column {self.synthetic_column!r}: row {index} has no caption.")
            pick = torch.randint(len(synthetic), (), generator=sample_generator(self.seed, epoch, int(index)))
            synthetic = synthetic[int(pick)]
        return {"image": decode_image(row[self.image_column]), "alt_text": alt_text,
                "synthetic": synthetic}
