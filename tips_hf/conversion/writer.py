"""Write a TipsModel folder from a stream of tensors: sharded safetensors, config, remote code, processor files.

Memory stays near one shard: tensors are buffered only until their shard is complete, then written and dropped.
The folder is assembled in a temporary sibling directory and renamed into place, so a crash never leaves a
half-written model where one is expected.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path

import torch
from huggingface_hub import split_torch_state_dict_into_shards
from safetensors.torch import save_file
from tqdm.auto import tqdm
from transformers.dynamic_module_utils import custom_object_save

from ..configuration_tips import TipsConfig
from ..layouts_tips import LayoutError
from ..modeling_tips import TipsModel

DEFAULT_MAX_SHARD_SIZE = "2GB"


def meta_model(config: TipsConfig) -> TipsModel:
    """A TipsModel without storage: shapes and key names at no memory cost."""
    with torch.device("meta"):
        return TipsModel(config)


def expected_shapes(config: TipsConfig) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in meta_model(config).state_dict().items()}


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
) -> Path:
    """Write `tensors` (our keys) as a `TipsModel.from_pretrained`-loadable folder, atomically.

    `defaults` supplies tensors the stream may lack (e.g. the mask token of a Scenic checkpoint). `extra_files`
    maps file names to text written beside the weights (e.g. a parity report).
    """
    output_dir = Path(output_dir)
    if output_dir.exists() and any(output_dir.iterdir()) and not overwrite:
        raise FileExistsError(f"{output_dir} exists and is not empty; pass overwrite=True (--overwrite) to replace it.")
    model = meta_model(config)
    shapes = {k: v for k, v in model.state_dict().items()}
    plan = split_torch_state_dict_into_shards(shapes, max_shard_size=max_shard_size)
    shard_of = {key: name for name, keys in plan.filename_to_tensors.items() for key in keys}
    remaining = {name: set(keys) for name, keys in plan.filename_to_tensors.items()}

    output_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{output_dir.name}.tmp-", dir=output_dir.parent))
    try:
        buffers: dict[str, dict[str, torch.Tensor]] = {name: {} for name in remaining}
        seen: set[str] = set()

        def add(key: str, tensor: torch.Tensor) -> None:
            if key not in shard_of:
                raise LayoutError(f"internal: produced unknown key {key!r}")
            if key in seen:
                raise LayoutError(f"internal: key {key!r} produced twice")
            seen.add(key)
            name = shard_of[key]
            buffers[name][key] = tensor.detach().to("cpu").contiguous()
            remaining[name].discard(key)
            if not remaining[name]:
                save_file(buffers.pop(name), str(staging / name), metadata={"format": "pt"})

        bar = tqdm(total=len(shapes), desc=description, unit="tensor", disable=not progress)
        for key, tensor in tensors:
            add(key, tensor)
            bar.update(1)
        for key, tensor in (defaults or {}).items():
            if key not in seen:
                add(key, tensor)
                bar.update(1)
        bar.close()
        missing = sorted(k for keys in remaining.values() for k in keys)
        if missing:
            raise LayoutError(f"no value for {len(missing)} model tensor(s), e.g. {missing[:5]}")
        if plan.is_sharded:
            index = {"metadata": plan.metadata, "weight_map": plan.tensor_to_filename}
            (staging / "model.safetensors.index.json").write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")

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
        _replace_dir(staging, output_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return output_dir


def _replace_dir(staging: Path, target: Path) -> None:
    """Move a finished folder into place; an existing target is swapped out first and removed after."""
    if target.exists():
        old = target.with_name(f".{target.name}.old-{os.getpid()}")
        os.replace(target, old)
        os.replace(staging, target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(staging, target)
