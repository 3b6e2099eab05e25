"""Pretraining data through HF `datasets`: sources, a deterministic global-batch sampler, multi-crop views, masks
and tokenised caption pairs.

Determinism: the order of samples is a per-epoch permutation drawn from (seed, epoch); each sample's crops, flips,
mask and synthetic-caption choice come from a generator seeded by (seed, epoch, index). A global batch therefore
holds the same views whatever the number of processes or DataLoader workers, and a run resumed at step s sees
exactly the batches an uninterrupted run would.
"""

from __future__ import annotations

import io
import itertools
import logging
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image, UnidentifiedImageError

from .augment import MultiCropTransform
from .config import DataConfig, ObjectiveConfig
from .masking import MaskGenerator

logger = logging.getLogger(__name__)

PATCH_SIZE = 14
# how a streamed source gets back to a checkpoint's position (data.stream_resume; StreamingPretrainingDataset)
STREAM_RESUME = ("exact", "fast")


def load_source(
    config: DataConfig,
    split: str | None = None,
    num_examples: int | None = None,
    seed: int = 0,
    extra_columns: Sequence[str] = (),
):
    """The HF dataset named by `config` (map-style, or iterable when streaming), image column left undecoded so that
    corrupt files can be skipped instead of crashing the loader. Only the configured columns (plus `extra_columns`)
    are kept, so unused image columns such as label maps are never decoded."""
    import datasets

    split = split or config.split
    if config.source == "scenes":
        from ..data import load_scenes_dataset

        dataset = load_scenes_dataset(
            split, num_examples or config.num_examples, image_size=config.scene_image_size, seed=seed,
            **config.scene_options,
        )
    else:
        if not config.path:
            raise ValueError(f"data.path is required for data.source={config.source!r}.")
        if config.source == "imagefolder":
            # a folder of images with metadata.jsonl / metadata.csv (file_name + caption columns)
            dataset = datasets.load_dataset(
                "imagefolder", data_dir=config.path, split=split, streaming=config.streaming
            )
        elif config.source in ("parquet", "arrow", "webdataset"):
            dataset = datasets.load_dataset(
                config.source, data_files=config.path, split=split, streaming=config.streaming
            )
        else:
            dataset = datasets.load_dataset(config.path, split=split, streaming=config.streaming)
    columns = dataset.column_names or []
    needed = list(dict.fromkeys([config.image_column, config.alt_text_column, *config.synthetic_columns, *extra_columns]))
    missing = [c for c in needed if columns and c not in columns]
    if missing:
        raise ValueError(
            f"data: column(s) {missing} not in the dataset (columns: {columns}); set data.image_column / "
            "data.alt_text_column / data.synthetic_columns."
        )
    if columns and set(columns) - set(needed):
        dataset = dataset.select_columns(needed)
    if isinstance(dataset.features.get(config.image_column) if dataset.features else None, datasets.Image):
        dataset = dataset.cast_column(config.image_column, datasets.Image(decode=False))
    return dataset


def decode_image(value: Any) -> Image.Image:
    """A PIL RGB image from a `datasets.Image(decode=False)` value, a PIL image, bytes or a path."""
    if isinstance(value, Image.Image):
        image = value
    elif isinstance(value, dict):
        if value.get("bytes") is not None:
            image = Image.open(io.BytesIO(value["bytes"]))
        elif value.get("path"):
            image = Image.open(value["path"])
        else:
            raise ValueError("empty image")
    elif isinstance(value, (bytes, bytearray)):
        image = Image.open(io.BytesIO(value))
    elif isinstance(value, (str, Path)):
        image = Image.open(value)
    else:
        raise ValueError(f"unsupported image value of type {type(value).__name__}")
    image.load()
    return image.convert("RGB")


# what decode_image raises for a corrupt, truncated, empty or oversized image: such a row is skipped and counted
UNREADABLE_IMAGE_ERRORS = (OSError, ValueError, UnidentifiedImageError, Image.DecompressionBombError)


def sample_generator(seed: int, epoch: int, index: int) -> torch.Generator:
    generator = torch.Generator()
    generator.manual_seed((seed * 1_000_003 + epoch) * 1_000_033 + index)
    return generator


class PretrainingDataset(torch.utils.data.Dataset):
    """Map-style view of a source dataset that returns ready views for a `(epoch, index)` key.

    A sample whose image cannot be decoded is replaced by the next decodable one (deterministically), and the number
    of skipped images travels with the sample so that the trainer can log it.
    """

    def __init__(self, source, data: DataConfig, objective: ObjectiveConfig, seed: int = 0, max_skips: int = 100):
        self.source = source
        self.data = data
        self.seed = seed
        self.max_skips = max_skips
        self.transform = MultiCropTransform(
            data.global_size,
            data.local_size,
            data.num_local_crops,
            tuple(data.global_scale),
            tuple(data.local_scale),
            data.flip_probability,
        )
        grid = data.global_size // PATCH_SIZE
        self.masks = MaskGenerator((grid, grid), objective.mask_ratio, objective.mask_mode)
        self.synthetic_sampling = objective.synthetic_sampling

    def __len__(self) -> int:
        return len(self.source)

    def captions(self, row: dict, generator: torch.Generator) -> tuple[str, str]:
        alt = row.get(self.data.alt_text_column) or ""
        options: list[str] = []
        for column in self.data.synthetic_columns:
            value = row.get(column)
            options.extend(value if isinstance(value, (list, tuple)) else [value] if value else [])
        if not options:
            synthetic = ""
        elif self.synthetic_sampling == "first":
            synthetic = options[0]
        else:
            synthetic = options[int(torch.randint(len(options), (), generator=generator))]
        return str(alt), str(synthetic)

    def __getitem__(self, key: tuple[int, int]) -> dict[str, Any]:
        epoch, index = key
        skipped = 0
        while True:
            row = self.source[(index + skipped) % len(self.source)]
            try:
                image = decode_image(row[self.data.image_column])
                break
            except UNREADABLE_IMAGE_ERRORS as error:
                skipped += 1
                logger.warning("skipping unreadable image at index %d: %s", (index + skipped - 1) % len(self), error)
                if skipped > self.max_skips:
                    raise RuntimeError(f"more than {self.max_skips} unreadable images in a row near index {index}") from error
        generator = sample_generator(self.seed, epoch, index)
        views = self.transform(image, generator)
        views["mask"] = self.masks(generator)
        views["alt_text"], views["synthetic"] = self.captions(row, generator)
        views["skipped"] = skipped
        return views


class StreamingPretrainingDataset(torch.utils.data.IterableDataset):
    """Views from a streamed (iterable) HF dataset, forever, one independent stream per (process, DataLoader worker)
    "slot": slot `rank · workers + worker` of `processes · workers`.

    Sharding: with at least as many shards (files) as slots, slot s reads the s-th contiguous group of shards
    (`IterableDataset.shard`; groups differ by at most one shard when the counts do not divide); with fewer shards,
    slot s reads shard `s mod shards` and keeps every k-th row of it (k = slots reading that shard). No slot ever
    reads the whole corpus. Each slot shuffles with a buffer, reshuffles every pass (`set_epoch`), and seeds each
    sample's randomness by (seed, slot, samples it yielded).

    Resume: every sample carries `stream_position` = (worker, pass, rows read in it, samples yielded) after it, and
    `stream_state`, its stream's `datasets` state after it (`IterableDataset.state_dict()`: the shard being read and
    the example offset in it); the trainer keeps the latest of both per worker and checkpoints them, so either mode
    resumes a checkpoint written in the other. Batches come from the workers in turn (worker = micro-batch mod
    workers), so a resumed loader's worker w plays worker (w + `start_batch`) mod workers. `resume` (the trainer's
    `data.stream_resume`) chooses how a stream gets back to its position:

    - `exact`: re-read the pass from its start and drop the rows already read. The resumed stream is the uninterrupted
      one, sample for sample (augmentations included), at the cost of reading again every row consumed in the pass:
      hours of I/O at LAION/WebLI scale.
    - `fast`: `IterableDataset.load_state_dict(stream_state)` reopens the stream at the saved shard and example offset
      in it: the shards before it are never opened, and the current one is read again only up to the offset (parquet
      and arrow files skip whole record batches without making rows of them). With `shuffle_buffer=0` the rest of the
      pass is then the uninterrupted stream's, row for row and sample for sample. With a shuffle buffer it is not,
      because the state holds where the buffer was filled from, not what it held (datasets' docs: "examples from
      shuffle buffers are lost when resuming and the buffers are refilled with new data"): the rows that sat in the
      buffer at the checkpoint are not read in the rest of that pass, and the resumed order differs from the
      uninterrupted run's. With datasets 4 that is exactly `shuffle_buffer` rows per stream and none repeats; datasets
      >= 5 shuffles otherwise (its buffer is fed from up to 10 shards at once) and a resume there loses fewer rows but
      also yields again some rows yielded before the checkpoint (`benchmarks/bench_data.py`, 20k rows, buffer 1000,
      resumed at row 15k: 1000 lost, 0 repeated on datasets 4.0; 622 lost, 122 repeated on 5.2). Nothing is lost
      for good: the next pass is read whole (`set_epoch`). Where a shard is split between streams (fewer shards than
      processes × workers: every k-th row each), the streams reading it keep a row-exact split after a fast resume
      only with `shuffle_buffer=0`; give a streamed corpus at least as many files as streams.
    """

    def __init__(self, source, data: DataConfig, objective: ObjectiveConfig, seed: int = 0, rank: int = 0,
                 world_size: int = 1, num_workers: int = 0, start_positions: Sequence[Sequence[int]] | None = None,
                 start_batch: int = 0, shuffle_buffer: int = 10_000, resume: str = "exact",
                 start_states: Sequence[dict | None] | None = None):
        self.views = PretrainingDataset([], data, objective, seed)
        self.source = source.shuffle(seed=seed, buffer_size=shuffle_buffer) if shuffle_buffer else source
        if resume not in STREAM_RESUME:
            raise ValueError(f"data.stream_resume={resume!r}: choose one of {', '.join(STREAM_RESUME)}.")
        self.resume = resume
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.workers = max(num_workers, 1)
        if start_positions is None:
            start_positions = [[0, 0, 0]] * self.workers
        if len(start_positions) != self.workers or any(len(p) != 3 for p in start_positions):
            raise ValueError(
                f"the checkpoint's stream positions ({len(start_positions)} per process) do not match "
                f"data.num_workers={num_workers} ({self.workers} stream(s) per process); resume with the "
                "number of workers and processes of the run that wrote it."
            )
        self.start_positions = [list(map(int, p)) for p in start_positions]
        self.start_states = list(start_states) if start_states is not None else [None] * self.workers
        if len(self.start_states) != self.workers:
            raise ValueError(f"{len(self.start_states)} stream state(s) for {self.workers} stream(s) per process.")
        if resume == "fast":
            for (epoch, rows, _), state in zip(self.start_positions, self.start_states, strict=True):
                if rows and state is None:
                    from .checkpointing import CheckpointMismatch

                    raise CheckpointMismatch(
                        "data.stream_resume=fast needs the datasets stream state that checkpoints hold since "
                        "data.stream_resume exists; this checkpoint has only the row count: resume it with "
                        "data.stream_resume=exact (re-reads the pass so far); its next checkpoints hold the state.")
                if rows and state.get("epoch") != epoch:
                    from .checkpointing import CheckpointMismatch

                    raise CheckpointMismatch(f"the checkpoint's stream state is of pass {state.get('epoch')}, its "
                                             f"position of pass {epoch}; resume with data.stream_resume=exact.")
        self.start_batch = start_batch

    def slot_stream(self, slot: int, slots: int):
        """(stream, keep every k-th row, offset) of a slot."""
        shards = getattr(self.source, "n_shards", 1) or 1
        if shards >= slots:
            return self.source.shard(num_shards=slots, index=slot, contiguous=True), 1, 0
        readers = len(range(slot % shards, slots, shards))
        stream = self.source.shard(num_shards=shards, index=slot % shards) if shards > 1 else self.source
        return stream, readers, slot // shards

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        workers = info.num_workers if info is not None else 1
        if workers != self.workers:
            raise ValueError(f"built for {self.workers} DataLoader worker(s), iterated by {workers}.")
        worker = ((info.id if info is not None else 0) + self.start_batch) % workers
        slot, slots = self.rank * workers + worker, self.world_size * workers
        stream, every, offset = self.slot_stream(slot, slots)
        epoch, rows, position = self.start_positions[worker]
        state = self.start_states[worker] if self.resume == "fast" and rows else None
        skipped = 0
        while True:
            stream.set_epoch(epoch)
            first_row, yielded, skip = rows, False, rows
            if state is not None:  # fast: datasets reopens the saved shard at the saved offset (only this pass)
                stream.load_state_dict(state)
                state, skip = None, 0
            # exact: read past the rows already consumed (`IterableDataset.skip` does not compose with sharding)
            for row in itertools.islice(_rows(stream), skip, None):
                rows += 1
                if (rows - 1) % every != offset:
                    continue
                try:
                    image = decode_image(row[self.views.data.image_column])
                except UNREADABLE_IMAGE_ERRORS as error:
                    skipped += 1
                    logger.warning("skipping unreadable image in the stream: %s", error)
                    continue
                generator = sample_generator(self.seed, slot, position)
                sample = self.views.transform(image, generator)
                sample["mask"] = self.views.masks(generator)
                sample["alt_text"], sample["synthetic"] = self.views.captions(row, generator)
                sample["skipped"], skipped = skipped, 0
                position += 1
                sample["stream_position"] = (worker, epoch, rows, position)
                sample["stream_state"] = stream.state_dict()
                yielded = True
                yield sample
            if not yielded and first_row == 0:
                raise ValueError(
                    f"process {self.rank}, worker {worker}: a whole pass over its share of the stream gave no "
                    f"readable image ({rows} rows read); check data.image_column and the files."
                )
            epoch, rows = epoch + 1, 0


def _rows(stream):
    """Rows of an HF IterableDataset, through its public `iter` in batches of one. Iterating the dataset itself inside
    a DataLoader worker would make `datasets` split it over the workers again (worker i of n keeps shards i, i + n, …),
    but a slot is already this worker's own share; `iter` reads the stream as it is, in any process, and tracks its
    `state_dict()` the same way (the rows are those of `iter(stream)` outside a worker)."""
    for batch in stream.iter(batch_size=1):
        yield {column: values[0] for column, values in batch.items()}


class GlobalBatchSampler(torch.utils.data.Sampler):
    """Yields, for this process, its slice of every global batch, forever (epochs chain), from `start_batch`.

    Global batch g of epoch e holds `permutation_e[g·B : (g+1)·B]` (B = per-process batch × processes; the last
    incomplete batch of an epoch is dropped); process r takes items [r·b, (r+1)·b).
    """

    def __init__(
        self, num_samples: int, batch_size: int, rank: int = 0, world_size: int = 1, seed: int = 0, start_batch: int = 0
    ):
        self.num_samples, self.batch_size = num_samples, batch_size
        self.rank, self.world_size, self.seed = rank, world_size, seed
        self.global_batch = batch_size * world_size
        self.per_epoch = num_samples // self.global_batch
        if self.per_epoch == 0:
            raise ValueError(
                f"the dataset has {num_samples} samples, fewer than one global batch "
                f"({batch_size} per process × {world_size} processes)."
            )
        self.start_batch = start_batch

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        batch, order, order_epoch = self.start_batch, None, None
        while True:
            epoch, position = divmod(batch, self.per_epoch)
            if epoch != order_epoch:  # one permutation per epoch, not per batch
                order = torch.randperm(self.num_samples, generator=torch.Generator().manual_seed(self.seed + epoch))
                order_epoch = epoch
            start = position * self.global_batch + self.rank * self.batch_size
            yield [(epoch, int(i)) for i in order[start : start + self.batch_size]]
            batch += 1

    def __len__(self) -> int:  # pragma: no cover - infinite; DataLoader only needs it for len()
        return 2**62


class Collator:
    """Stacks views and tokenises the caption streams (alt-text first, then synthetic) into one (C·B, T) batch, so
    that the shared text tower runs once for both."""

    def __init__(self, tokenizer, streams: list[str], max_length: int = 64):
        self.tokenizer = tokenizer
        self.streams = streams
        self.max_length = max_length

    def __call__(self, samples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        batch = {
            "global_crop": torch.stack([s["global_crop"] for s in samples]),
            "mask": torch.stack([s["mask"] for s in samples]),
            "skipped": torch.tensor(sum(s["skipped"] for s in samples)),
        }
        if "stream_position" in samples[0]:
            # a batch comes from one worker, in order: its position after the batch
            batch["stream_position"] = torch.tensor(samples[-1]["stream_position"])
            batch["stream_state"] = samples[-1].get("stream_state")  # the datasets state (a dict) after it
        if "local_crops" in samples[0]:
            batch["local_crops"] = torch.stack([s["local_crops"] for s in samples])
        if self.streams:
            texts = [s["alt_text" if stream == "alt_text" else "synthetic"] for stream in self.streams for s in samples]
            # Pad to the batch's longest caption, not to 64: padding is masked, so only the cost changes.
            tokens = self.tokenizer(
                texts, padding="longest", truncation=True, max_length=self.max_length, return_tensors="pt"
            )
            batch["input_ids"], batch["attention_mask"] = tokens["input_ids"], tokens["attention_mask"]
        return batch


def pixels_to_model(
    pixels: torch.Tensor,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """uint8 pixels (..., 3, H, W) → the model's input: [0, 1], then `(x - mean) / std` when given (a model pretrained
    with `data.pixel_mean`/`pixel_std`; what its processor's `do_normalize` does). Pretraining, its evaluation and
    dense fine-tuning all go through here."""
    pixels = pixels.to(dtype) / 255.0
    if mean is None:
        return pixels
    # made on the host and copied without waiting (`torch.tensor(..., device="cuda")` would block on the device)
    mean = torch.tensor(mean, dtype=dtype).view(3, 1, 1).to(pixels.device, non_blocking=True)
    std = torch.tensor(std, dtype=dtype).view(3, 1, 1).to(pixels.device, non_blocking=True)
    return (pixels - mean) / std


def processor_normalisation(folder: str | os.PathLike) -> tuple[tuple[float, ...] | None, tuple[float, ...] | None]:
    """`(image_mean, image_std)` of a model folder's image processor when it normalises (a model pretrained with
    `data.pixel_mean`/`pixel_std`), else `(None, None)`: whatever trains or scores that model further must feed it
    the pixels it was trained on."""
    from ..processing.image_processing_tips import TipsImageProcessor

    try:
        processor = TipsImageProcessor.from_pretrained(folder)
    except OSError:  # a model folder without preprocessor_config.json: the released models' [0, 1] input
        return None, None
    if not processor.do_normalize:
        return None, None
    return tuple(processor.image_mean), tuple(processor.image_std)


def square_image_processor(side: int, mean: Sequence[float] | None = None, std: Sequence[float] | None = None):
    """The `TipsImageProcessor` saved with a trained model: `side`×`side` inputs, normalised with `mean`/`std` when the
    model was trained on normalised pixels (what `processor_normalisation` reads back)."""
    from ..processing.image_processing_tips import TipsImageProcessor

    normalise = {} if mean is None else dict(do_normalize=True, image_mean=list(mean), image_std=list(std))
    return TipsImageProcessor(size={"height": side, "width": side}, **normalise)


def to_device(batch: dict[str, torch.Tensor], data: DataConfig, device: torch.device, dtype: torch.dtype = torch.float32):
    """Move a collated batch to the device; uint8 crops become model inputs there (4× less host traffic)."""
    out = {}
    for key, value in batch.items():
        value = value.to(device, non_blocking=True)
        if key in ("global_crop", "local_crops"):
            value = pixels_to_model(value, data.pixel_mean, data.pixel_std, dtype)
        out[key] = value
    return out
