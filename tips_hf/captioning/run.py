"""Caption a dataset in shards, resumably, on one or many processes.

The input is cut into *units*: blocks of `shard_size` rows of a map-style dataset, or, with `streaming=True`, the
source's own shards (files; parquet row groups). Process r of W (`accelerate launch`) takes units r, r+W, r+2W, ...;
a unit is read in chunks of `shard_size` rows and every chunk becomes one parquet file
`OUT/data/<split>-<unit>-of-<units>-<chunk>.parquet` (the Hub's shard naming, which `datasets` resolves to splits by
itself; its cache then follows the files, so a resumed or re-made folder never loads stale rows). A chunk file is
written under `OUT/.tips-caption/` and renamed into `data/` when complete, so a half-written shard is never visible,
and a restarted run skips every chunk whose file exists (and every unit marked done). Chunks and batches never
depend on the number of processes, so 1 and N processes, and a resumed run, write the same rows. Rows whose image
cannot be decoded are left out and counted.

When every unit is done the main process writes `OUT/README.md` (a short dataset card) and `OUT/caption_stats.json`;
`datasets.load_dataset(OUT)` loads every captioned split.
"""

from __future__ import annotations

import glob
import itertools
import json
import logging
import os
import shutil
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from ..pretraining.checkpointing import maybe_fault
from ..pretraining.data import UNREADABLE_IMAGE_ERRORS, decode_image
from .captioner import Captioner, CaptionTask, custom_task, preset_task

logger = logging.getLogger(__name__)

META = ".tips-caption"  # resume state: run settings, finished units, per-shard counts, temporary files
FORMATS = ("auto", "imagefolder", "parquet", "arrow", "webdataset", "hub")
_EXTENSIONS = {".parquet": "parquet", ".arrow": "arrow", ".tar": "webdataset"}


@dataclass
class CaptionResult:
    """What a (finished) captioning run wrote."""

    output_dir: Path
    split: str
    columns: list[str]
    rows_read: int  # input rows, all processes
    captioned: int  # rows written with their captions
    skipped_images: int  # unreadable images, left out
    shards: int  # parquet files of the split
    wall_time_s: float  # this call
    images_per_s: float  # captioned in this call ÷ wall time, all processes
    empty_captions: int = 0  # captions written empty (the captioner emitted only special tokens), all columns


def build_tasks(family: str, presets: Sequence[str] = (), prompt: str | None = None,
                column: str = "synthetic_caption", max_new_tokens: int | None = None,
                min_new_tokens: int | None = None) -> list[CaptionTask]:
    """The caption columns to write: one per preset (`<column>_<preset>` when several), or one custom prompt;
    `min_new_tokens` holds every caption to at least that many new tokens."""
    if prompt is not None and presets:
        raise ValueError("give either --prompt or --preset, not both.")
    if prompt is not None:
        return [custom_task(column, prompt, max_new_tokens or 40, min_new_tokens)]
    presets = list(presets) or ["short"]
    if len(set(presets)) != len(presets):
        raise ValueError(f"--preset lists a preset twice: {presets}.")
    if len(presets) == 1:
        return [preset_task(family, presets[0], column, max_new_tokens, min_new_tokens)]
    return [preset_task(family, name, f"{column}_{name}", max_new_tokens, min_new_tokens) for name in presets]


def open_dataset(data: str, split: str, streaming: bool = False, data_format: str = "auto"):
    """The `split` of a local folder / file glob or a Hub dataset, as pretraining's `data.source` reads them:
    `imagefolder` (images + metadata.jsonl/csv), `parquet` / `arrow` / `webdataset` files, or `hub`
    (`datasets.load_dataset(data)`, also any local dataset folder). `auto` picks by file extension, else `hub`."""
    import datasets

    if data_format not in FORMATS:
        raise ValueError(f"--format must be one of {FORMATS}, got {data_format!r}.")
    if data_format == "auto":
        files = sorted(glob.glob(data)) if glob.has_magic(data) else [data] if Path(data).is_file() else []
        data_format = _EXTENSIONS.get(Path(files[0]).suffix, "hub") if files else "hub"
        if files and data_format == "hub":
            raise ValueError(f"--data {data}: cannot tell the format of {files[0]}; pass --format.")
    try:
        if data_format == "imagefolder":
            return datasets.load_dataset("imagefolder", data_dir=data, split=split, streaming=streaming)
        if data_format in ("parquet", "arrow", "webdataset"):
            return datasets.load_dataset(data_format, data_files=data, split=split, streaming=streaming)
        return datasets.load_dataset(data, split=split, streaming=streaming)
    except (FileNotFoundError, datasets.exceptions.DatasetNotFoundError) as error:
        raise ValueError(f"--data {data}: {error}") from None
    except ValueError as error:  # e.g. an unknown split
        raise ValueError(f"--data {data} (split {split!r}): {error}") from None


def _image_column(features, requested: str | None) -> str:
    import datasets

    names = list(features)
    if requested is not None:
        if requested not in names:
            raise ValueError(f"--image-column {requested!r} is not a column of the dataset (columns: {names}).")
        return requested
    images = [name for name, feature in features.items() if isinstance(feature, datasets.Image)]
    if not images:
        raise ValueError(f"the dataset has no image column (columns: {names}); pass --image-column.")
    return images[0]


def _encoded_image(value: Any) -> dict:
    """An undecoded image as {bytes, path} with the bytes embedded, so the output does not point at local files."""
    if isinstance(value, dict) and value.get("bytes") is None and value.get("path"):
        return {"bytes": Path(value["path"]).read_bytes(), "path": os.path.basename(value["path"])}
    return value


def _write_json(path: Path, payload: dict) -> None:
    """Write JSON via a temporary file and a rename: readers see the old file or the new one, never half of one."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_text(json.dumps(payload, indent=2))
    os.replace(temporary, path)


def _units(dataset, streaming: bool, shard_size: int) -> tuple[int, Callable[[int], Iterator[dict]]]:
    """(number of units, unit index → row iterator)."""
    if streaming:
        if dataset.num_shards == 1 and hasattr(dataset, "reshard"):  # datasets >= 4.1
            dataset = dataset.reshard()  # parquet: one unit per row group
        count = dataset.num_shards
        return count, lambda unit: iter(dataset.shard(num_shards=count, index=unit, contiguous=True))
    count = (len(dataset) + shard_size - 1) // shard_size
    size = len(dataset)
    return count, lambda unit: iter(dataset.select(range(unit * shard_size, min(size, (unit + 1) * shard_size))))


def _batches(rows: Iterable[tuple[int, dict]], image_column: str, batch_size: int, counts: dict,
             unit: int) -> Iterator[list]:
    """Batches of (row, decoded image) from (row index in the unit, row) pairs; unreadable images are logged, counted
    and left out (as in pretraining)."""
    batch = []
    for index, row in rows:
        counts["rows_read"] += 1
        try:
            image = decode_image(row[image_column])
        except UNREADABLE_IMAGE_ERRORS as error:
            counts["skipped_images"] += 1
            logger.warning("skipping unreadable image (input shard %d, row %d): %s", unit, index, error)
            continue
        batch.append((row, image))
        if len(batch) == batch_size:
            yield batch
            batch = []
    if batch:
        yield batch


def caption_dataset(
    model: str | Captioner,
    data: str,
    output_dir: str | os.PathLike,
    presets: Sequence[str] = (),
    prompt: str | None = None,
    column: str = "synthetic_caption",
    max_new_tokens: int | None = None,
    min_new_tokens: int | None = None,
    batch_size: int = 16,
    split: str = "train",
    shard_size: int = 1000,
    streaming: bool = False,
    data_format: str = "auto",
    image_column: str | None = None,
    num_beams: int = 1,
    dtype: torch.dtype | None = None,
    progress: bool = True,
) -> CaptionResult:
    """Caption `split` of `data` with `model` and write it, with the new caption column(s), to `output_dir`.

    All processes of an `accelerate launch` call this; each takes its own units of the input (see the module
    docstring). Re-running with the same arguments resumes: finished shards are skipped.
    """
    import datasets
    from accelerate import PartialState
    from tqdm.auto import tqdm

    if batch_size < 1 or shard_size < 1 or num_beams < 1:
        raise ValueError("--batch-size, --shard-size and --num-beams must be >= 1.")
    # cpu=True on CPU-only machines: several processes then use gloo (see training/accelerate_configs/cpu-2proc.yaml)
    state = PartialState(cpu=not torch.cuda.is_available())
    start = time.time()
    captioner = model if isinstance(model, Captioner) else Captioner(model, state.device, dtype, num_beams)
    tasks = build_tasks(captioner.family, presets, prompt, column, max_new_tokens, min_new_tokens)
    columns = [task.column for task in tasks]

    with state.main_process_first():  # the main process prepares the datasets cache, the others reuse it
        dataset = open_dataset(data, split, streaming, data_format)
    if dataset.features is None:  # some streamed sources only know their columns after a first row
        dataset = dataset._resolve_features()
    image_column = _image_column(dataset.features, image_column)
    dataset = dataset.cast_column(image_column, datasets.Image(decode=False))
    features = datasets.Features({k: v for k, v in dataset.features.items() if k not in columns})
    features[image_column] = datasets.Image()
    for name in columns:
        features[name] = datasets.Value("string")
    replaced = [name for name in columns if name in dataset.features]
    if replaced and state.is_main_process:
        logger.warning("column(s) %s exist in the input and are replaced by the new captions", replaced)

    root = Path(output_dir)
    meta = root / META / split
    data_dir = root / "data"
    for folder in (meta / "shards", meta / "units", root / META / "tmp", data_dir):
        folder.mkdir(parents=True, exist_ok=True)
    settings = {
        "model": model if isinstance(model, str) else "<Captioner>",
        "data": str(Path(data).resolve()) if Path(data).exists() else data,  # same run from another working folder
        "split": split,
        "format": data_format, "streaming": streaming, "shard_size": shard_size, "image_column": image_column,
        "num_beams": captioner.num_beams, "tasks": [asdict(task) for task in tasks],
    }
    run_file = meta / "run.json"
    if run_file.is_file():
        previous = json.loads(run_file.read_text())
        changed = sorted(k for k in settings if previous.get(k) != settings[k])
        if changed:
            raise ValueError(
                f"{root} holds a {split!r} split captioned with other settings ({', '.join(changed)} differ: "
                f"{ {k: previous.get(k) for k in changed} }); resume with the same arguments or use another --output."
            )
    else:
        _write_json(run_file, settings)

    num_units, unit_rows = _units(dataset, streaming, shard_size)
    if num_units < state.num_processes and state.is_main_process:
        logger.warning("only %d input shard(s) for %d processes: some processes stay idle", num_units,
                       state.num_processes)
    mine = [u for u in range(state.process_index, num_units, state.num_processes)
            if not (meta / "units" / f"{u:05d}.json").is_file()]
    total = None
    if not streaming:
        total = sum(min(len(dataset), (u + 1) * shard_size) - u * shard_size for u in mine)
    # the main process's own share; the rate of N processes together is about N times its images/s
    description = "captioning" if state.num_processes == 1 else f"captioning (process 0 of {state.num_processes})"
    bar = tqdm(total=total, unit="img", desc=description, disable=not (progress and state.is_main_process),
               dynamic_ncols=True)
    batches_done, captioned_now, skipped_now = 0, 0, 0
    for unit in mine:
        chunks = itertools.groupby(enumerate(unit_rows(unit)), key=lambda item: item[0] // shard_size)
        names = []
        for chunk, items in chunks:
            name = f"{split}-{unit:05d}-of-{num_units:05d}-{chunk:05d}"
            names.append(name)
            if (data_dir / f"{name}.parquet").is_file():
                bar.update(sum(1 for _ in items))  # finished before a restart: not decoded again
                continue
            counts = {"rows_read": 0, "skipped_images": 0, "empty_captions": 0}
            rows_out = []
            for batch in _batches(items, image_column, batch_size, counts, unit):
                images = [image for _, image in batch]
                captions = {task.column: captioner.caption(images, task) for task in tasks}
                counts["empty_captions"] += sum(not text for texts in captions.values() for text in texts)
                for i, (row, _) in enumerate(batch):
                    out = {k: v for k, v in row.items() if k in features}
                    out[image_column] = _encoded_image(row[image_column])
                    out.update({name_: captions[name_][i] for name_ in columns})
                    rows_out.append(out)
                batches_done += 1
                bar.update(len(batch))
                maybe_fault(f"caption-batch:{batches_done}")
            skipped_now += counts["skipped_images"]
            bar.update(counts["skipped_images"])
            bar.set_postfix(unreadable=skipped_now, refresh=False)
            _write_shard(rows_out, features, root, name, {**counts, "captioned": len(rows_out)}, meta, state)
            captioned_now += len(rows_out)
        _write_json(meta / "units" / f"{unit:05d}.json", {"shards": names})
    bar.close()

    state.wait_for_everyone()
    elapsed = time.time() - start
    captioned_all = _gather_sum(captioned_now, state)
    result = _summarise(root, split, columns, num_units, elapsed, captioned_all)
    if state.is_main_process:
        _write_card(root)
        shutil.rmtree(root / META / "tmp", ignore_errors=True)  # leftovers of killed runs
        logger.info("captioned %d rows (%d unreadable images left out) in %.0f s, %.2f images/s", result.captioned,
                    result.skipped_images, elapsed, result.images_per_s)
        if result.empty_captions:
            logger.warning(
                "%d of %d captions are empty: the captioner emitted only special tokens (it ended at once); raise "
                "--min-new-tokens, check --prompt / --preset for this model, or try another captioner",
                result.empty_captions, result.captioned * len(columns))
    state.wait_for_everyone()
    return result


def _write_shard(rows: list[dict], features, root: Path, name: str, counts: dict, meta: Path, state) -> None:
    """Write a chunk as parquet to a temporary file, then rename it into data/ (the rename is atomic)."""
    import datasets

    temporary = root / META / "tmp" / f"{name}.{state.process_index}.parquet"
    datasets.Dataset.from_list(rows, features=features).to_parquet(str(temporary))
    with open(temporary, "rb") as handle:
        os.fsync(handle.fileno())
    _write_json(meta / "shards" / f"{name}.json", counts)  # before the rename: a visible shard always has its counts
    maybe_fault(f"caption-shard:{name}")
    os.replace(temporary, root / "data" / f"{name}.parquet")


def _gather_sum(value: int, state) -> int:
    if state.num_processes == 1:
        return value
    from accelerate.utils import gather

    return int(gather(torch.tensor([value], device=state.device)).sum())


def _summarise(root: Path, split: str, columns: list[str], num_units: int, elapsed: float,
               captioned_now: int) -> CaptionResult:
    meta = root / META / split
    missing = [u for u in range(num_units) if not (meta / "units" / f"{u:05d}.json").is_file()]
    if missing:
        raise RuntimeError(f"{root}: input shard(s) {missing[:5]} of split {split!r} were not captioned.")
    shards = sorted((root / "data").glob(_shard_glob(split)))
    totals = {"rows_read": 0, "skipped_images": 0, "captioned": 0, "empty_captions": 0}
    for shard in shards:
        for key, value in json.loads((meta / "shards" / f"{shard.stem}.json").read_text()).items():
            totals[key] += value
    return CaptionResult(root, split, columns, totals["rows_read"], totals["captioned"], totals["skipped_images"],
                         len(shards), elapsed, captioned_now / elapsed if elapsed > 0 else 0.0,
                         empty_captions=totals["empty_captions"])


def _shard_glob(split: str) -> str:
    return f"{split}-[0-9][0-9][0-9][0-9][0-9]-of-[0-9][0-9][0-9][0-9][0-9]-*.parquet"


def _write_card(root: Path) -> None:
    """README.md saying what was captioned, and caption_stats.json with each split's settings and counts."""
    stats = {}
    for run_file in sorted((root / META).glob("*/run.json")):
        split = run_file.parent.name
        units = list((run_file.parent / "units").glob("*.json"))
        if not units:
            continue
        settings = json.loads(run_file.read_text())
        totals = {"rows_read": 0, "skipped_images": 0, "captioned": 0, "empty_captions": 0}
        for shard in (root / "data").glob(_shard_glob(split)):
            for key, value in json.loads((run_file.parent / "shards" / f"{shard.stem}.json").read_text()).items():
                totals[key] += value
        stats[split] = {**totals, **settings}
    lines = [f"- `{s}`: {v['captioned']} rows captioned by `{v['model']}` into "
             f"{', '.join(t['column'] for t in v['tasks'])}; {v['skipped_images']} unreadable images left out"
             + (f"; {v['empty_captions']} captions empty." if v["empty_captions"] else ".")
             for s, v in stats.items()]
    card = (
        "---\ntags:\n- tips-caption\n- synthetic-captions\n---\n\n# Captioned dataset\n\n"
        "Written by `tips-caption` (tips-hf): the input rows with synthetic caption "
        "column(s).\n\n" + "\n".join(lines) + "\n"
    )
    temporary = root / f".README.md.{os.getpid()}.tmp"
    temporary.write_text(card)
    os.replace(temporary, root / "README.md")
    _write_json(root / "caption_stats.json", stats)
