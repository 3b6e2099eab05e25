# Copyright 2026 The tips-hf authors. Licensed under the Apache License, Version 2.0.
"""Foreign folders for `TipsModel.from_pretrained`: a transformers-native `Tipsv2Model` folder and the
`google/tipsv2-*` / `google/tipsv1-*` Hub layout, read through the tables of `layouts.py` at load time.

`import tips_hf` installs `load_foreign_checkpoint` as `TipsPreTrainedModel`'s foreign-folder reader; published
remote code runs without it (it loads TipsModel folders), so no conversion table travels with a model.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping

import torch

from ..modeling.configuration_tips import PRESETS, TipsConfig
from .layouts import (
    HUB,
    Layout,
    LayoutError,
    V,
    arch_from_config,
    canonical_key,
    config_from_native,
    context_from_config,
    grid_side,
    import_tensors,
    infer_official_config,
    native_layout_for,
    temperature_overrides,
    with_matched_preset,
)

HUB_PREFIXES = tuple(HUB.prefixes.values())  # ("vision_encoder.", "text_encoder.")


class SafetensorsReader:
    """`TensorReader` over the safetensors files of a folder (sharded or not). `view(prefix)` shows only the keys
    under a prefix, without it (the Hub layout keeps each tower under `vision_encoder.` / `text_encoder.`)."""

    def __init__(self, files: list[str], name: str = "checkpoint"):
        from safetensors import SafetensorError, safe_open

        self.path = name
        self._where = {}
        for file in files:
            try:
                handle = safe_open(file, framework="pt")
            except (SafetensorError, OSError) as error:
                raise LayoutError(f"{file}: not a readable safetensors file ({error}); is it truncated?") from None
            self._where.update(dict.fromkeys(handle.keys(), handle))
        self._names: dict[str, str] = {}  # visible name -> name in the file, where they differ

    def with_aliases(self, aliases: Iterable[tuple[str, str]]) -> SafetensorsReader:
        """The same tensors under canonical names (each regex applied to every key)."""
        aliases = tuple(aliases)
        view = object.__new__(SafetensorsReader)
        view.path, view._where, view._names = self.path, {}, {}
        for key, handle in self._where.items():
            canonical = canonical_key(key, aliases)
            view._where[canonical] = handle
            view._names[canonical] = self._names.get(key, key)
        return view

    def view(self, prefix: str) -> SafetensorsReader:
        view = object.__new__(SafetensorsReader)
        view.path = f"{self.path} ({prefix}*)"
        view._where = {k[len(prefix) :]: h for k, h in self._where.items() if k.startswith(prefix)}
        view._names = {k[len(prefix) :]: self._names.get(k, k) for k in self._where if k.startswith(prefix)}
        return view

    def keys(self) -> list[str]:
        return list(self._where)

    def __contains__(self, key: str) -> bool:
        return key in self._where

    def shape(self, key: str) -> tuple[int, ...]:
        return tuple(self._where[key].get_slice(self._names.get(key, key)).get_shape())

    def read(self, key: str) -> torch.Tensor:
        from safetensors import SafetensorError

        try:
            return self._where[key].get_tensor(self._names.get(key, key))
        except KeyError:
            raise LayoutError(f"{self.path}: no tensor {key!r}") from None
        except (SafetensorError, OSError, RuntimeError) as error:  # data shorter than the header says
            raise LayoutError(f"{self.path}: could not read {key!r} ({error}); is the file truncated?") from None


# Our other folders (vision/text towers, DPT models, backbones) are always written in our own keys.
_OUR_OTHER_MODEL_TYPES = ("tips_vision_model", "tips_text_model", "tips_dpt", "tips_backbone")


def _is_our_config(config: Mapping) -> bool:
    vision = config.get("vision_config") or {}
    if config.get("model_type") in _OUR_OTHER_MODEL_TYPES:
        return True
    return config.get("model_type") == "tips" and "ffn_type" in vision


def detect_layout(config: Mapping, keys: Iterable[str], source: str) -> Layout | None:
    """The foreign layout of a folder, or None when it is a TipsModel folder. Raises LayoutError otherwise."""
    keys = list(keys)
    if any(k.startswith(HUB_PREFIXES) for k in keys):
        return HUB
    if any(k.startswith("vision_model.encoder.layer.") or ".self_attn.q_proj." in k for k in keys):
        return native_layout_for(keys)
    if any(k.startswith("vision_model.encoder.layers.") and ".attention.qkv." in k for k in keys):
        return None
    sample = ", ".join(sorted(keys)[:3]) or "no tensors"
    raise LayoutError(
        f"{source}: not a TIPS checkpoint: config.json has model_type {config.get('model_type')!r} and the weights "
        f"hold keys like {sample}. TipsModel.from_pretrained reads TipsModel folders (model_type 'tips'), "
        "transformers-native Tipsv2 folders (model_type 'tipsv2') and the google/tipsv2-* Hub layout (keys prefixed "
        "vision_encoder. / text_encoder.); convert other formats with `tips-convert`."
    )


def _hub_heads(config: Mapping) -> tuple[int | None, int | None]:
    """Heads from the flat remote-code config of google/tipsv2-* (`vision_fn`, `text_num_heads`) or a nested one."""
    if "vision_config" in config or "text_config" in config:
        return (
            (config.get("vision_config") or {}).get("num_attention_heads"),
            (config.get("text_config") or {}).get("num_attention_heads"),
        )
    heads = {preset.vision_fn: preset.vision_heads for preset in PRESETS.values()}
    return heads.get(config.get("vision_fn")), config.get("text_num_heads")


def config_for_foreign(layout: Layout, config: Mapping, reader: SafetensorsReader) -> TipsConfig:
    """A TipsConfig for a foreign folder: shapes from the weights, heads/eps/activations from its config.json."""
    if layout is HUB:
        vision_heads, text_heads = _hub_heads(config)
        text = reader.view("text_encoder.")
        max_len = config.get("max_len") or (config.get("text_config") or {}).get("max_position_embeddings") or 64
        tips = infer_official_config(
            reader.view("vision_encoder."),
            text,
            vision_heads=vision_heads,
            text_heads=text_heads,
            image_resolution=config.get("img_size"),
            max_text_length=max_len,
        )
        if "temperature" in reader:
            tips = TipsConfig(**{**tips.to_dict(), **temperature_overrides(float(reader.read("temperature")))})
        elif config.get("temperature") is not None and "temperature" not in text:
            tips = TipsConfig(**{**tips.to_dict(), **temperature_overrides(float(config["temperature"]))})
        return tips
    kwargs = config_from_native(config)
    positions = reader.shape(f"{V}.embeddings.position_embeddings")[1] - 1
    kwargs["vision_config"]["image_size"] = (
        grid_side(positions, f"{reader.path}: position_embeddings") * kwargs["vision_config"]["patch_size"]
    )
    if "temperature" in reader:
        kwargs.update(temperature_overrides(float(reader.read("temperature").reshape(()))))
    return with_matched_preset(TipsConfig(**kwargs))


def safetensors_files(path_or_repo: str, resolve: Callable[[str], str | None]) -> list[str]:
    """The weight files of a folder or repo (sharded through `model.safetensors.index.json`, or one file); `resolve`
    maps a file name to a local path or None."""
    index = resolve("model.safetensors.index.json")
    if index is None:
        single = resolve("model.safetensors")
        if single is None:
            raise LayoutError(
                f"{path_or_repo}: no model.safetensors or model.safetensors.index.json; tips-hf loads weights from "
                "safetensors only."
            )
        return [single]
    try:
        with open(index) as handle:
            shards = sorted(set(json.load(handle)["weight_map"].values()))
    except (ValueError, KeyError, TypeError) as error:
        raise LayoutError(f"{index}: not a safetensors index ({error!r}).") from None
    files = [resolve(name) for name in shards]
    missing = [name for name, file in zip(shards, files) if file is None]
    if missing:
        raise LayoutError(f"{index} names shard(s) {missing} that are not in {path_or_repo}.")
    return files


def load_foreign_checkpoint(
    path_or_repo: str, shapes_for: Callable[[TipsConfig], Mapping[str, tuple[int, ...]]], **hub_kwargs
) -> tuple[TipsConfig, dict[str, torch.Tensor]] | None:
    """(config, state dict in our keys) for a transformers-native Tipsv2 folder or a google/tipsv2-* Hub-layout
    folder/repo; None for a TipsModel folder (or one without config.json: the caller's usual error applies).
    `shapes_for(config)` gives our model's {key: shape} (passed in, so this module never imports the model)."""
    from transformers.utils import cached_file

    def resolve(name: str) -> str | None:
        return cached_file(path_or_repo, name, _raise_exceptions_for_missing_entries=False, **hub_kwargs)

    config_file = resolve("config.json")
    if config_file is None:
        return None
    with open(config_file) as handle:
        config = json.load(handle)
    if _is_our_config(config):
        return None
    source = str(path_or_repo)
    if config.get("model_type") == "tipsv2_dpt":  # its weights hold no text tower: say what it is, not what is missing
        architecture = (config.get("architectures") or ["Tipsv2DptFor<Task>"])[0]
        raise LayoutError(
            f"{source}: a transformers-native DPT folder (model_type 'tipsv2_dpt'); load it with "
            f"transformers.{architecture}.from_pretrained. tips-hf's TipsFor* classes read tips-hf DPT folders "
            "(model_type 'tips_dpt'), which `tips-convert dpt` writes from the official checkpoints."
        )
    reader = SafetensorsReader(safetensors_files(path_or_repo, resolve), name=source)
    layout = detect_layout(config, reader.keys(), source)
    if layout is None:
        return None
    reader = reader.with_aliases(layout.aliases)
    tips = config_for_foreign(layout, config, reader)
    shapes = shapes_for(tips)
    state = dict(
        import_tensors(
            layout, arch_from_config(tips), context_from_config(tips), reader.keys(), reader.read, shapes, source
        )
    )
    return tips, state
