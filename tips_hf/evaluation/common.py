# Copyright 2026 The tips-hf authors. Licensed under the Apache License, Version 2.0.
"""Shared pieces of `tips-eval`: model loading, image decoding and resizing, batched feature extraction with a
progress bar, Hub/`datasets` sources, and the JSON + Markdown result files.

The metric maths is not here: it lives in `tips_hf.metrics` and `tips_hf.dense`; the task modules only gather
features and call those functions.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .._paths import check_model_path

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
# What every task looks for in a `datasets` dataset when the column is not named, and the two CLS heads it scores.
IMAGE_COLUMNS = ("image", "img", "jpg", "png")
LABEL_COLUMNS = ("label", "labels", "class", "cls")
HEADS = ("alt_text", "synthetic")


# what a missing --model should be
MODEL_HINT = "pass a folder written by save_pretrained (tips-convert, the training scripts) or a Hub model id"


class EvalError(Exception):
    """A problem with the inputs (missing file, malformed layout, unknown column); `tips-eval` prints it and exits
    with code 2."""


@dataclass
class EvalOptions:
    """Options shared by every task (the CLI flags of the same names); `extra` holds the task-specific flags
    (`templates`, `class_names`, `knn_k`, `mode`, `window`, `stride`, `probe_method`, `dpt`, ... as in `tips-eval`)."""

    split: str | None = None
    train_split: str | None = None
    batch_size: int = 64
    device: str | None = None
    limit: int | None = None
    train_limit: int | None = None
    num_workers: int = 0
    image_size: int | None = None
    streaming: bool = False
    where: dict[str, str] = field(default_factory=dict)
    image_column: str | None = None
    text_column: str | None = None
    label_column: str | None = None
    progress: bool = True
    extra: dict[str, Any] = field(default_factory=dict)

    def for_training(self) -> EvalOptions:
        """The options for a training split (k-NN memory bank, probe fits): `train_limit` replaces `limit` when set."""
        return replace(self, limit=self.train_limit or self.limit)


# ----------------------------------------------------------------------------------------------------------------------
# Model


def resolve_device(device: str | None) -> torch.device:
    return torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))


def load_model(model_dir: str | os.PathLike, device: str | None = None, dtype: str = "float32") -> tuple[Any, Any]:
    """`TipsModel` (eval mode, on `device`, in `dtype`) and `TipsProcessor` from a saved folder or Hub id."""
    from .. import TipsModel, TipsProcessor

    if dtype not in ("float32", "bfloat16", "float16"):
        raise EvalError(f"--dtype must be float32, bfloat16 or float16, got {dtype!r}")
    check_model_path(model_dir, "--model", MODEL_HINT, error=EvalError)
    try:
        processor = TipsProcessor.from_pretrained(str(model_dir))
    except (OSError, ValueError, TypeError, KeyError) as error:
        raise EvalError(
            f"no TIPS processor in {model_dir} (needs processor_config.json and tokenizer.model, as written by "
            f"TipsProcessor.save_pretrained): {_first_line(error)}"
        ) from None
    try:
        model = TipsModel.from_pretrained(str(model_dir), dtype=getattr(torch, dtype))
    except (OSError, ValueError, TypeError, KeyError) as error:
        raise EvalError(f"cannot load a TipsModel from {model_dir}: {_first_line(error)}") from None
    return model.to(resolve_device(device)).eval(), processor


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def model_image_size(model: Any, processor: Any, override: int | None = None) -> int:
    """Square input side: `override`, else the processor's configured size (448 for the released HR/v2 models)."""
    patch = model.config.vision_config.patch_size
    size = override
    if size is None:
        configured = getattr(processor.image_processor, "size", None) or {}
        size = int(configured.get("height", 448)) if isinstance(configured, dict) else int(configured.height)
    if size <= 0 or size % patch:
        raise EvalError(f"--image-size must be a positive multiple of the patch size {patch}, got {size}")
    return size


# ----------------------------------------------------------------------------------------------------------------------
# Images


def open_image(source: Any, where: str = "image"):
    """An RGB PIL image from a path, a PIL image, a `datasets` image dict or an array; errors name the source."""
    from PIL import Image

    try:
        if isinstance(source, (str, os.PathLike)):
            path = Path(source)
            if not path.is_file():
                raise EvalError(f"{where}: image file not found: {path}")
            with Image.open(path) as image:
                image.load()
                return image.convert("RGB")
        if isinstance(source, Image.Image):
            return source.convert("RGB")
        if isinstance(source, dict) and ("bytes" in source or "path" in source):
            if source.get("bytes") is not None:
                import io

                with Image.open(io.BytesIO(source["bytes"])) as image:
                    image.load()
                    return image.convert("RGB")
            return open_image(source["path"], where)
        if isinstance(source, np.ndarray):
            return Image.fromarray(source).convert("RGB")
    except (OSError, ValueError, Image.DecompressionBombError) as error:
        raise EvalError(f"{where}: cannot read image: {_first_line(error)}") from None
    raise EvalError(f"{where}: expected an image, got {type(source).__name__}")


def read_label_map(source: Any, where: str) -> np.ndarray:
    """A 2-D integer/float array from a PNG path (palette and 16-bit PNGs keep their raw values), a `.npy` file
    (read with `allow_pickle=False`), a PIL image or an array."""
    from PIL import Image

    try:
        if isinstance(source, (str, os.PathLike)):
            path = Path(source)
            if not path.is_file():
                raise EvalError(f"{where}: file not found: {path}")
            if path.suffix.lower() == ".npy":
                array = np.load(path, allow_pickle=False)
            else:
                with Image.open(path) as image:
                    array = np.array(image)
        elif isinstance(source, Image.Image):
            array = np.array(source)
        elif isinstance(source, dict) and ("bytes" in source or "path" in source):
            if source.get("bytes") is not None:
                import io

                with Image.open(io.BytesIO(source["bytes"])) as image:
                    array = np.array(image)
            else:
                return read_label_map(source["path"], where)
        else:
            array = np.asarray(source)
    except (OSError, ValueError) as error:
        raise EvalError(f"{where}: cannot read map: {_first_line(error)}") from None
    if array.ndim == 3 and array.shape[-1] in (3, 4) and np.ptp(array[..., :3], axis=-1).max() == 0:
        array = array[..., 0]  # a grey map saved as RGB
    if array.ndim != 2:
        raise EvalError(f"{where}: expected a single-channel (H, W) map, got shape {array.shape}")
    return array


def pixels_square(processor: Any, image: Any, size: int) -> torch.Tensor:
    """(3, size, size) in [0, 1] through the model's own image processor (bilinear, antialiased, no mean/std)."""
    return processor.image_processor(image, size={"height": size, "width": size}, return_tensors="pt")["pixel_values"][
        0
    ]


def pixels_center_crop(processor: Any, image: Any, size: int, crop_ratio: float = 0.875) -> torch.Tensor:
    """Resize the short side to `size / crop_ratio` (bicubic) and take the central `size`×`size` crop: DINO's
    256→224 k-NN preprocessing scaled to the model's resolution."""
    from PIL import Image

    short = int(round(size / crop_ratio))
    width, height = image.size
    scale = short / min(width, height)
    new_w, new_h = max(size, round(width * scale)), max(size, round(height * scale))
    image = image.resize((new_w, new_h), Image.BICUBIC)
    left, top = (new_w - size) // 2, (new_h - size) // 2
    image = image.crop((left, top, left + size, top + size))
    return processor.image_processor(image, do_resize=False, return_tensors="pt")["pixel_values"][0]


RESIZE_MODES = ("square", "center-crop")


def pixels_for(processor: Any, image: Any, size: int, resize: str) -> torch.Tensor:
    """`--resize square` ([`pixels_square`]) or `center-crop` ([`pixels_center_crop`])."""
    if resize == "square":
        return pixels_square(processor, image, size)
    if resize == "center-crop":
        return pixels_center_crop(processor, image, size)
    raise EvalError(f"--resize must be one of {', '.join(RESIZE_MODES)}, got {resize!r}")


def resize_description(resize: str, size: int) -> str:
    if resize == "center-crop":
        return f"short side to {round(size / 0.875)} (bicubic), centre crop {size}x{size}, RGB in [0, 1]"
    return f"{size}x{size} bilinear with antialiasing (TipsImageProcessor), no crop, RGB in [0, 1]"


def pixels_short_side(image: Any, size: int, processor: Any = None) -> torch.Tensor:
    """Short side resized to `size` (PIL bicubic, long side truncated as `int(size * long / short)`), (3, H, W) in
    [0, 1]: the official zero-shot segmentation notebook's `ShortSideResize` + `ToTensor`. A `processor` whose image
    processor normalises (a model pretrained with `data.pixel_mean`) gets its mean/std applied too."""
    from PIL import Image

    width, height = image.size
    if min(width, height) != size:
        if width < height:
            new_w, new_h = size, int(size * height / width)
        else:
            new_w, new_h = int(size * width / height), size
        image = image.resize((new_w, new_h), Image.BICUBIC)
    pixels = torch.from_numpy(np.asarray(image, dtype=np.uint8).copy()).permute(2, 0, 1).float() / 255.0
    images = getattr(processor, "image_processor", None)
    if images is not None and getattr(images, "do_normalize", False):
        pixels = images.normalize(pixels, images.image_mean, images.image_std)
    return pixels


# ----------------------------------------------------------------------------------------------------------------------
# Sources and batches


def evenly_spaced(count: int, limit: int | None) -> list[int]:
    """`limit` indices spread over `range(count)` (all of them without a limit): a `--limit` that still covers every
    class of a dataset sorted by class."""
    if limit is None or limit >= count:
        return list(range(count))
    if limit <= 0:
        raise EvalError(f"--limit must be positive, got {limit}")
    return sorted({int(i * count / limit) for i in range(limit)})


def is_local(data: Any) -> bool:
    return isinstance(data, (str, os.PathLike)) and Path(data).exists()


def is_saved_dataset(data: Any) -> bool:
    """A folder written by `datasets`' `save_to_disk` (read with `load_from_disk`, not as a dataset layout)."""
    path = Path(data)
    return path.is_dir() and ((path / "state.json").is_file() or (path / "dataset_dict.json").is_file())


def is_file_layout(data: Any) -> bool:
    """`data` is a local file or folder in a task's own layout (class folders, Karpathy JSON, ADE20K, ...), not a
    `datasets` dataset, a `save_to_disk` folder or a Hub id."""
    return is_local(data) and not is_saved_dataset(data)


# local data files that `datasets` reads with a builder named by their extension
_FILE_BUILDERS = {".parquet": "parquet", ".arrow": "arrow", ".csv": "csv", ".jsonl": "json", ".json": "json"}


def load_local(data: str | os.PathLike) -> Any:
    """Every split of a local dataset: a `save_to_disk` folder (`load_from_disk`), a data file (parquet, arrow, csv,
    json lines), or a folder that `datasets.load_dataset` reads (an `imagefolder` with `metadata.jsonl`/`.csv`, whose
    columns may hold lists such as several captions an image; split sub-folders; parquet/csv/json files)."""
    import datasets

    path = Path(data)
    try:
        if is_saved_dataset(path):
            return datasets.load_from_disk(str(path))
        builder = _FILE_BUILDERS.get(path.suffix.lower()) if path.is_file() else None
        return datasets.load_dataset(builder, data_files=str(path)) if builder else datasets.load_dataset(str(path))
    except (FileNotFoundError, ValueError, OSError) as error:
        raise EvalError(f"{data}: not a dataset layout `datasets` loads (an imagefolder with metadata.jsonl, data "
                        f"files, a save_to_disk folder): {_first_line(error)}") from None


def load_hf(data: Any, split: str, options: EvalOptions, any_single_split: bool = False) -> Any:
    """A `datasets` dataset: `data` itself when it is one, a local dataset (`load_local`), or a Hub id
    (`load_dataset(id, split=split, streaming=options.streaming)`), filtered by `--where` and cut by `--limit`. With
    `any_single_split`, a dataset of one split (an imagefolder without split folders: `train`) is read whatever its
    name when `--split` was not given."""
    import datasets

    if isinstance(data, datasets.DatasetDict):
        if split not in data and any_single_split and options.split is None and len(data) == 1:
            split = next(iter(data))
        if split not in data:
            raise EvalError(f"dataset has no split {split!r}; available: {', '.join(data)} (pass --split)")
        dataset = data[split]
    elif isinstance(data, (datasets.Dataset, datasets.IterableDataset)):
        dataset = data
    elif is_local(data):
        return load_hf(load_local(data), split, options, any_single_split)
    else:
        try:
            dataset = datasets.load_dataset(str(data), split=split, streaming=options.streaming)
        except (FileNotFoundError, ValueError, ConnectionError, OSError) as error:
            raise EvalError(f"cannot load {data!r} split {split!r} from the Hub: {_first_line(error)}") from None
    for column, value in options.where.items():
        names = dataset.column_names or []
        if column not in names:
            raise EvalError(f"--where {column}={value}: no column {column!r}; columns: {', '.join(names)}")
        dataset = dataset.filter(lambda row, c=column, v=value: str(row[c]) == v)
    if options.limit is not None:
        if isinstance(dataset, datasets.IterableDataset):
            dataset = dataset.take(options.limit)
        else:
            dataset = dataset.select(evenly_spaced(len(dataset), options.limit))
    return dataset


def pick_column(names: Sequence[str], wanted: str | None, candidates: Sequence[str], what: str) -> str:
    """`wanted` (the `--image-column` / `--text-column` / `--label-column` value) or the first of `candidates` among
    the dataset's column `names`; an EvalError listing the columns found otherwise."""
    flag = {"image": "--image-column", "caption": "--text-column"}.get(what, "--label-column")
    if wanted is not None:
        if wanted not in names:
            raise EvalError(f"{flag} {wanted}: no such {what} column; columns found: {', '.join(names)}")
        return wanted
    for name in candidates:
        if name in names:
            return name
    raise EvalError(
        f"no {what} column (looked for {', '.join(candidates)}); columns found: {', '.join(names)} — pass {flag} NAME"
    )


def read_class_folders(root: Path, split: str | None, classes: Sequence[str] | None = None):
    """ImageNet-style layout: `<root>/<split>/<class>/<image>` (or `<root>/<class>/<image>` when there is no
    `<split>` folder). Returns (image paths, labels, class folder names); with `classes` given (e.g. the training
    split's), labels index into it and an unknown class folder is an error."""
    folder = root / split if split and (root / split).is_dir() else root
    if not folder.is_dir():
        raise EvalError(f"{folder}: folder not found")
    found = sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not found:
        raise EvalError(f"{folder}: no class sub-folders (expected <class>/<image> files, ImageNet layout)")
    names = list(classes) if classes is not None else found
    index = {name: i for i, name in enumerate(names)}
    paths, labels = [], []
    for name in found:
        if name not in index:
            raise EvalError(f"{folder / name}: class folder not among the {len(names)} training classes")
        files = sorted(p for p in (folder / name).iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
        if not files:
            raise EvalError(f"{folder / name}: class folder holds no image ({', '.join(IMAGE_EXTENSIONS)})")
        paths += files
        labels += [index[name]] * len(files)
    return paths, labels, names


def labelled_images(
    data: Any,
    split: str,
    options: EvalOptions,
    processor: Any,
    size: int,
    resize: str,
    classes: Sequence[str] | None = None,
    strict_split: bool = False,
) -> tuple[Any, Callable[[Any], dict[str, Any]], list[str], str | None]:
    """A labelled image split (k-NN, zero-shot classification): ImageNet-style class folders `<data>/<split>/<class>/
    <image>` (`--limit` evenly spaced images; without `strict_split`, `<data>/<class>/<image>` when there is no split
    folder), or a `datasets` dataset with an image and a label column (`load_hf`).

    Returns:
        `(records, load, names, label_column)`: `load(record)` gives `{"pixel_values", "label"}` with the image resized
        by [`pixels_for`]; `names` are the class folders (`classes` when given, see [`read_class_folders`]) or the
        label column's `ClassLabel` names (empty when it has none); `label_column` is `None` for class folders. A
        dataset's label must be a class index (an `int` >= 0).
    """
    if is_file_layout(data):
        root = Path(data)
        if strict_split and not (root / split).is_dir():
            raise EvalError(f"{root / split}: split folder not found (expected <data>/{split}/<class>/<image>)")
        paths, labels, names = read_class_folders(root, split, classes)

        def load_file(record: tuple[Path, int]) -> dict[str, Any]:
            path, label = record
            return {"pixel_values": pixels_for(processor, open_image(path, str(path)), size, resize), "label": label}

        return [(paths[i], labels[i]) for i in evenly_spaced(len(paths), options.limit)], load_file, list(names), None
    dataset = load_hf(data, split, options)
    columns = list(dataset.column_names or [])
    image_column = pick_column(columns, options.image_column, IMAGE_COLUMNS, "image")
    label_column = pick_column(columns, options.label_column, LABEL_COLUMNS, "label")
    feature = (dataset.features or {}).get(label_column)

    def load_row(row: dict[str, Any]) -> dict[str, Any]:
        label = row[label_column]
        if not isinstance(label, int) or label < 0:
            raise EvalError(f"column {label_column!r}: label {label!r} is not a class index")
        image = open_image(row[image_column], image_column)
        return {"pixel_values": pixels_for(processor, image, size, resize), "label": label}

    return dataset, load_row, list(getattr(feature, "names", None) or []), label_column


class _Rows(torch.utils.data.Dataset):
    """Map-style wrapper: `load(record)` runs in the DataLoader workers (image decoding and resizing)."""

    def __init__(self, records: Sequence[Any], load: Callable[[Any], dict[str, Any]]):
        self.records, self.load = records, load

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.load(self.records[index])


def _collate(rows: list[dict[str, Any]]) -> dict[str, Any]:
    batch: dict[str, Any] = {}
    for key in rows[0]:
        values = [row[key] for row in rows]
        same_shape = all(isinstance(v, torch.Tensor) for v in values) and len({tuple(v.shape) for v in values}) == 1
        batch[key] = torch.stack(values) if same_shape else values
    return batch


def batches(
    records: Iterable[Any],
    load: Callable[[Any], dict[str, Any]],
    options: EvalOptions,
    desc: str,
    total: int | None = None,
    batch_size: int | None = None,
) -> Iterator[dict[str, Any]]:
    """Batches of `load(record)` with a tqdm bar; map-style sources use a DataLoader (`--num-workers`), iterables
    (streamed datasets) are read in this process."""
    from tqdm.auto import tqdm

    size = batch_size or options.batch_size
    if isinstance(records, Sequence) or hasattr(records, "__getitem__") and hasattr(records, "__len__"):
        total = len(records)
        loader: Iterable[dict[str, Any]] = torch.utils.data.DataLoader(
            _Rows(records, load), batch_size=size, num_workers=options.num_workers, collate_fn=_collate
        )
    else:
        loader = _chunks(records, load, size)
    with tqdm(total=total, desc=desc, unit="img", disable=not options.progress) as bar:
        for batch in loader:
            first = next(iter(batch.values()))
            bar.update(len(first))
            yield batch


def _chunks(records: Iterable[Any], load: Callable[[Any], dict[str, Any]], size: int) -> Iterator[dict[str, Any]]:
    rows = []
    for record in records:
        rows.append(load(record))
        if len(rows) == size:
            yield _collate(rows)
            rows = []
    if rows:
        yield _collate(rows)


def model_input(model: Any, pixel_values: torch.Tensor) -> torch.Tensor:
    parameter = next(model.parameters())
    return pixel_values.to(parameter.device, parameter.dtype)


@torch.no_grad()
def image_embeddings(model: Any, pixel_values: torch.Tensor) -> dict[str, torch.Tensor]:
    """Both CLS embeddings (float32, not normalised) of a batch: `alt_text` (CLS-1) and `synthetic` (CLS-2)."""
    features = model.get_image_features(pixel_values=model_input(model, pixel_values))
    return {"alt_text": features.alt_text_embeds.float(), "synthetic": features.synthetic_embeds.float()}


# ----------------------------------------------------------------------------------------------------------------------
# Results


def _clean(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, (np.floating, np.integer)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None  # JSON has no NaN
    return value


def markdown_table(result: dict[str, Any]) -> str:
    """The result's `table` (`{"columns": [...], "rows": [[...], ...]}`) as a Markdown table, with a title line."""
    table = result["table"]
    lines = [
        f"**{result['task']}** — model `{result['model']}`, data `{result['data']}`, split `{result.get('split')}`, "
        f"{result['num_examples']} examples",
        "",
        "| " + " | ".join(table["columns"]) + " |",
        "|" + "---|" * len(table["columns"]),
    ]
    for row in table["rows"]:
        lines.append("| " + " | ".join(_cell(value) for value in row) + " |")
    expected = result.get("expected")
    if expected:
        parts = []
        for metric, value in expected["values"].items():
            scale = 1.0 if metric == "rmse" else 100.0
            ours = [f"{k.split('/')[0]} {_cell(v * scale)}" for k, v in result["metrics"].items()
                    if (k == metric or k.endswith("/" + metric)) and isinstance(v, float)]  # fmt: skip
            parts.append(f"{metric}: Google {_cell(value * scale)}, ours {', '.join(ours)}")
        lines += ["", f"Google's README for `{expected['preset']}` (on the README's dataset): " + "; ".join(parts)]
    return "\n".join(lines) + "\n"


def _cell(value: Any) -> str:
    if isinstance(value, float):
        if not math.isfinite(value):
            return "n/a"
        return f"{value:.4g}" if 0 < abs(value) < 1 else f"{value:.2f}"
    return str(value)


def write_results(result: dict[str, Any], output: str | os.PathLike) -> tuple[Path, Path]:
    """`output` (JSON) and the same name with `.md` (Markdown table); each written to a temporary file in the same
    folder and renamed, so a crash never leaves half a file."""
    json_path = Path(output)
    md_path = json_path.with_suffix(".md") if json_path.suffix.lower() != ".md" else json_path.with_suffix(".md.md")
    try:
        json_path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise EvalError(f"cannot create output folder {json_path.parent}: {error}") from None
    for path, text in ((json_path, json.dumps(_clean(result), indent=2) + "\n"), (md_path, markdown_table(result))):
        handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(handle, "w", encoding="utf-8") as stream:
                stream.write(text)
            os.replace(temporary, path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
    return json_path, md_path


def percent(value: float) -> float:
    """Fractions are stored in JSON; tables show percentages like the official README."""
    return 100.0 * value if value is not None and math.isfinite(value) else float("nan")


def segmentation_result(
    task: str,
    scores: dict[str, Any],
    split: str | None,
    count: int,
    start: float,
    protocol: dict[str, Any],
    class_names: Sequence[str] | None = None,
) -> dict[str, Any]:
    """The result dict of a segmentation task from [`tips_hf.metrics.iou_from_confusion`] scores (`per_category_iou`
    keyed by `class_names` when given); `start` is the task's `time.perf_counter()` at its beginning."""
    per_category = scores["per_category_iou"]
    return {
        "task": task,
        "split": split,
        "num_examples": count,
        "metrics": {
            "mean_iou": scores["mean_iou"],
            "pixel_accuracy": scores["pixel_accuracy"],
            "mean_accuracy": scores["mean_accuracy"],
            "per_category_iou": dict(zip(class_names, per_category)) if class_names is not None else per_category,
        },
        "protocol": protocol,
        "table": {
            "columns": ["metric", "value"],
            "rows": [
                ["mIoU (%)", percent(scores["mean_iou"])],
                ["pixel accuracy (%)", percent(scores["pixel_accuracy"])],
            ],
        },
        "runtime_s": time.perf_counter() - start,
    }


__all__ = [
    "EvalError",
    "EvalOptions",
    "batches",
    "evenly_spaced",
    "image_embeddings",
    "is_file_layout",
    "is_local",
    "is_saved_dataset",
    "labelled_images",
    "load_hf",
    "load_local",
    "load_model",
    "markdown_table",
    "model_image_size",
    "open_image",
    "pixels_center_crop",
    "pixels_for",
    "pixels_short_side",
    "pixels_square",
    "read_class_folders",
    "read_label_map",
    "segmentation_result",
    "write_results",
]
