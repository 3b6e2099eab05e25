"""Export to transformers' native `Tipsv2Model` (model_type "tipsv2", transformers >= 5.14, no remote code)."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import torch

from ..layouts_tips import (
    NATIVE,
    NATIVE_CANNOT_CARRY,
    arch_from_config,
    config_to_native,
    context_from_config,
    export_tensors,
)
from .writer import _replace_dir

CANNOT_CARRY = NATIVE_CANNOT_CARRY + (
    "bit-exact tokenization: transformers' Tipsv2Tokenizer (a `tokenizers` conversion of tokenizer.model) drops "
    "characters outside the vocabulary instead of emitting <unk>; token ids differ on such text",
)


def export_to_transformers(
    model_dir: str | os.PathLike,
    output_dir: str | os.PathLike,
    max_shard_size: int | str = "2GB",
    overwrite: bool = False,
) -> Path:
    """Write a folder that plain transformers loads with `Tipsv2Model.from_pretrained` (no tips-hf, no remote code).

    The weights are handed to a `Tipsv2Model` built on the meta device (no copy) and saved by transformers itself, so
    the folder is in the exact layout transformers writes and reads. What cannot be carried is listed in
    `CANNOT_CARRY` and in `tips_hf_export.json` inside the folder.
    """
    import transformers

    from ..modeling_tips import TipsModel

    output_dir = Path(output_dir)
    if output_dir.exists() and any(output_dir.iterdir()) and not overwrite:
        raise FileExistsError(f"{output_dir} exists and is not empty; pass overwrite=True (--overwrite) to replace it.")
    model = TipsModel.from_pretrained(model_dir)
    config = model.config
    native_config = transformers.Tipsv2Config(**config_to_native(config))
    with torch.device("meta"):
        native = transformers.Tipsv2Model(native_config)
    state = model.state_dict()
    weights = dict(export_tensors(NATIVE, arch_from_config(config), context_from_config(config), state.__getitem__))
    native.load_state_dict(weights, strict=True, assign=True)
    native.eval()

    output_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{output_dir.name}.tmp-", dir=output_dir.parent))
    try:
        native.save_pretrained(staging, max_shard_size=max_shard_size)
        _export_processor(Path(model_dir), staging, config)
        lost = [item for item in CANNOT_CARRY if _applies(item, config)]
        (staging / "tips_hf_export.json").write_text(
            json.dumps({"source": str(model_dir), "not_carried": lost}, indent=2) + "\n"
        )
        _replace_dir(staging, output_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return output_dir


def _applies(item: str, config) -> bool:
    if item.startswith("the synthetic-caption head"):
        return True
    if item.startswith("interpolate_antialias"):
        return not config.vision_config.interpolate_antialias
    return True


def _export_processor(model_dir: Path, out: Path, config) -> None:
    """Tipsv2Processor = Tipsv2ImageProcessor at our resolution + Tipsv2Tokenizer from tokenizer.model (if any)."""
    import transformers

    size = config.image_resolution
    image_processor = transformers.Tipsv2ImageProcessor(size={"height": size, "width": size})
    spm = model_dir / "tokenizer.model"
    if not spm.is_file():
        image_processor.save_pretrained(out)
        return
    with tempfile.TemporaryDirectory() as tmp:
        shutil.copy(spm, Path(tmp) / "tokenizer.model")
        tokenizer = transformers.Tipsv2Tokenizer.from_pretrained(tmp)
    transformers.Tipsv2Processor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(out)
