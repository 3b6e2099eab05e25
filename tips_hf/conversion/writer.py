"""Write a TipsModel folder from a stream of tensors: sharded safetensors, config, remote code, processor files.

Memory stays near one shard: tensors are buffered only until their shard is complete, then written and dropped.
The folder is assembled in a temporary sibling directory and renamed into place, so a crash never leaves a
half-written model where one is expected.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path

import torch
from huggingface_hub import split_torch_state_dict_into_shards
from safetensors.torch import save_file
from tqdm.auto import tqdm
from transformers.dynamic_module_utils import custom_object_save

from ..modeling.configuration_dense_tips import TipsDPTConfig
from ..modeling.configuration_tips import TipsConfig
from ..modeling.modeling_tips import meta_model, state_shapes
from .foreign import SafetensorsReader, load_foreign_checkpoint, safetensors_files
from .layouts import LayoutError

# One shard size for every folder we write (conversion, export, publishing): streaming keeps about one shard in memory,
# so 2 GB bounds the peak of a g/14 conversion (docs/conversion.md figures) and stays far below the Hub's per-file limit.
DEFAULT_MAX_SHARD_SIZE = "2GB"


expected_shapes = state_shapes  # our model's {key: shape} for a config (one helper, in the modeling module)


@contextlib.contextmanager
def atomic_folder(output_dir: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    """A temporary sibling of `output_dir` to fill; renamed into place when the block succeeds, removed otherwise."""
    output_dir = Path(output_dir)
    if output_dir.exists() and not output_dir.is_dir():
        raise FileExistsError(f"{output_dir} exists and is a file.")
    if output_dir.exists() and any(output_dir.iterdir()) and not overwrite:
        raise FileExistsError(f"{output_dir} exists and is not empty; pass overwrite=True (--overwrite) to replace it.")
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{output_dir.name}.tmp-", dir=output_dir.parent))
    umask = os.umask(0)
    os.umask(umask)
    staging.chmod(0o777 & ~umask)  # mkdtemp makes it private; the finished folder gets the usual permissions
    try:
        yield staging
        _replace_dir(staging, output_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def write_safetensors(
    folder: Path,
    layout: Mapping[str, torch.Tensor],
    tensors: Iterable[tuple[str, torch.Tensor]],
    max_shard_size: int | str = DEFAULT_MAX_SHARD_SIZE,
    defaults: Mapping[str, torch.Tensor] | None = None,
    progress: bool = True,
    description: str = "converting",
    source: str = "checkpoint",
) -> None:
    """Write a stream of tensors as `model.safetensors` (or shards + index) in `folder`, holding one shard at a time.

    `layout` maps every key to write to a tensor of the expected shape (meta tensors do: only shapes and sizes are
    read). `defaults` supplies tensors the stream may lack. A key outside `layout`, a key twice, a wrong shape or a
    key never produced raises `LayoutError` naming it and `source`.
    """
    plan = split_torch_state_dict_into_shards(dict(layout), max_shard_size=max_shard_size)
    shard_of = {key: name for name, keys in plan.filename_to_tensors.items() for key in keys}
    remaining = {name: set(keys) for name, keys in plan.filename_to_tensors.items()}
    buffers: dict[str, dict[str, torch.Tensor]] = {name: {} for name in remaining}
    seen: set[str] = set()

    def add(key: str, tensor: torch.Tensor) -> None:
        if key not in shard_of:
            raise LayoutError(f"{source}: produced unknown key {key!r}")
        if key in seen:
            raise LayoutError(f"{source}: key {key!r} produced twice")
        if tuple(tensor.shape) != tuple(layout[key].shape):
            raise LayoutError(
                f"{source}: {key!r} has shape {tuple(tensor.shape)}, the config expects {tuple(layout[key].shape)}"
            )
        seen.add(key)
        name = shard_of[key]
        buffers[name][key] = tensor.detach().to("cpu").contiguous()
        remaining[name].discard(key)
        if not remaining[name]:
            save_file(buffers.pop(name), str(folder / name), metadata={"format": "pt"})

    with tqdm(total=len(layout), desc=description, unit="tensor", disable=not progress) as bar:
        for key, tensor in tensors:
            add(key, tensor)
            bar.update(1)
        for key, tensor in (defaults or {}).items():
            if key not in seen:
                add(key, tensor)
                bar.update(1)
    missing = sorted(k for keys in remaining.values() for k in keys)
    if missing:
        raise LayoutError(f"{source}: no value for {len(missing)} model tensor(s), e.g. {missing[:5]}")
    if plan.is_sharded:
        total = sum(t.numel() for t in layout.values())
        index = {"metadata": {"total_parameters": total, **plan.metadata}, "weight_map": plan.tensor_to_filename}
        (folder / "model.safetensors.index.json").write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")


def write_model_folder(
    output_dir: str | os.PathLike,
    config: TipsConfig,
    tensors: Iterable[tuple[str, torch.Tensor]],
    processor=None,
    max_shard_size: int | str = DEFAULT_MAX_SHARD_SIZE,
    defaults: dict[str, torch.Tensor] | None = None,
    extra_files: dict[str, str] | None = None,
    overwrite: bool = False,
    progress: bool = True,
    description: str = "converting",
    source: str = "checkpoint",
) -> Path:
    """Write `tensors` (our keys) as a `TipsModel.from_pretrained`-loadable folder, atomically.

    `defaults` supplies tensors the stream may lack (e.g. the mask token of a Scenic checkpoint). `extra_files`
    maps file names to text written beside the weights (e.g. a parity report).
    """
    model = meta_model(config)
    with atomic_folder(output_dir, overwrite) as staging:
        write_safetensors(staging, model.state_dict(), tensors, max_shard_size, defaults, progress, description, source)
        config.architectures = ["TipsModel"]
        config.auto_map = {
            "AutoConfig": "configuration_tips.TipsConfig",
            "AutoModel": "modeling_tips.TipsModel",
            "AutoModelForZeroShotImageClassification": "modeling_tips.TipsModel",
        }
        config.save_pretrained(staging)
        custom_object_save(model, staging)
        if processor is not None:
            processor.save_pretrained(staging)
        for name, text in (extra_files or {}).items():
            (staging / name).write_text(text)
    return Path(output_dir)


def open_checkpoint(path: str | os.PathLike) -> tuple[TipsConfig, list[str], Callable[[str], torch.Tensor]]:
    """The config of any folder `TipsModel.from_pretrained` reads, its tensor names and a reader, under our keys.

    A TipsModel folder is read tensor by tensor from its safetensors files (memory stays near one tensor); the
    foreign layouts (transformers-native, Hub) are imported in memory first. A DPT folder (model_type "tips_dpt") is
    read the same way, with its `TipsDPTConfig`.
    """
    folder = Path(path)
    if not folder.is_dir():
        raise FileNotFoundError(
            f"model folder {folder} does not exist" + (" (it is a file)" if folder.exists() else "")
        )
    if not (folder / "config.json").is_file():
        raise LayoutError(f"{folder}: no config.json; not a model folder (convert .npz checkpoints with tips-convert).")
    foreign = load_foreign_checkpoint(str(folder), state_shapes)
    if foreign is not None:
        config, state = foreign
        return config, list(state), state.__getitem__

    def resolve(name: str) -> str | None:
        return str(folder / name) if (folder / name).is_file() else None

    model_type = json.loads((folder / "config.json").read_text()).get("model_type")
    config = (TipsDPTConfig if model_type == TipsDPTConfig.model_type else TipsConfig).from_pretrained(folder)
    reader = SafetensorsReader(safetensors_files(str(folder), resolve), name=str(folder))
    return config, reader.keys(), reader.read


def _replace_dir(staging: Path, target: Path) -> None:
    """Move a finished folder into place; an existing target is swapped out first and removed after."""
    if target.exists():
        old = target.with_name(f".{target.name}.old-{os.getpid()}")
        os.replace(target, old)
        os.replace(staging, target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(staging, target)
