"""Issue 3: google/tipsv2-* Hub layout folders, the export table's round trip, layout errors, and naming the released
architecture of a converted folder."""

import json

import numpy as np
import pytest
import torch
from conftest import official_files, tiny_config
from safetensors.torch import save_file

from tips_hf import TipsConfig, TipsModel
from tips_hf.conversion import verify_model
from tips_hf.conversion.layouts import HUB, LayoutError, arch_from_config, context_from_config, export_tensors


def _hub_folder_from_official(tmp_path, name):
    tensors = {}
    vision, text, _ = official_files(name)
    for prefix, path in (("vision_encoder.", vision), ("text_encoder.", text)):
        with np.load(path) as data:
            tensors.update({prefix + k: torch.from_numpy(data[k].copy()) for k in data.files if k != "temperature"})
    save_file(tensors, str(tmp_path / "model.safetensors"))


def test_hub_layout_from_official_fixture(tmp_path):
    """A google/tipsv2-style folder (prefixed official keys) built from an official fixture loads and matches the
    official expected outputs; the v1 fixture's 16x16 position grid is read from the weights."""
    name = "v1-mlp-224"
    _hub_folder_from_official(tmp_path, name)
    nested = {"model_type": "tipsv2", "temperature_init_value": 0.01,
              "vision_config": {"hidden_size": 64, "num_attention_heads": 4, "image_size": 448},
              "text_config": {"hidden_size": 64, "num_attention_heads": 4}}
    (tmp_path / "config.json").write_text(json.dumps(nested))
    model = TipsModel.from_pretrained(tmp_path)
    assert model.config.vision_config.position_grid_size == 16
    parity = verify_model(model, official_files(name)[2])
    assert max(parity.values()) < 1e-5, parity


def test_hub_layout_flat_config(tmp_path):
    """The flat remote-code config of google/tipsv2-* names the vision tower by function; its head count must fit
    the weights, and the config's temperature is carried."""
    _hub_folder_from_official(tmp_path, "v1-mlp-224")
    flat = {"vision_fn": "vit_base", "img_size": 224, "patch_size": 14, "ffn_layer": "mlp", "init_values": 1.0,
            "num_register_tokens": 1, "text_hidden_size": 64, "text_mlp_dim": 256, "text_num_heads": 4,
            "text_num_layers": 2, "vocab_size": 1000, "max_len": 64, "temperature": 0.01}
    (tmp_path / "config.json").write_text(json.dumps(flat))
    with pytest.raises(LayoutError, match="vision width 64 is not divisible by 12 heads"):
        TipsModel.from_pretrained(tmp_path)
    flat["vision_fn"] = "vit_small"  # 6 heads do not fit either; a fitting head count is given explicitly below
    (tmp_path / "config.json").write_text(json.dumps(flat))
    with pytest.raises(LayoutError, match="not divisible by 6 heads"):
        TipsModel.from_pretrained(tmp_path)
    flat["vision_fn"] = "unknown_fn"
    (tmp_path / "config.json").write_text(json.dumps(flat))
    with pytest.raises(LayoutError, match="not a released TIPS width"):
        TipsModel.from_pretrained(tmp_path)


def test_hub_layout_flat_config_loads(tmp_path):
    """The passing case of a flat google/tipsv2-* config: `vision_fn` gives the vision heads (vit_small: 6 at width
    384), `text_num_heads` the text heads, `temperature` the temperature; the weights load bit-exact."""
    config = TipsConfig(
        vision_config={"hidden_size": 384, "num_hidden_layers": 1, "num_attention_heads": 6,
                       "intermediate_size": 1536, "image_size": 56},
        text_config={"hidden_size": 384, "num_hidden_layers": 1, "num_attention_heads": 6, "intermediate_size": 1536,
                     "vocab_size": 100},
    )
    torch.manual_seed(0)
    source = TipsModel(config).eval()
    tensors = dict(export_tensors(HUB, arch_from_config(config), context_from_config(config),
                                  source.state_dict().__getitem__))
    tensors.pop("temperature")  # the released folders keep it in config.json
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp_path / "model.safetensors"))
    flat = {"vision_fn": "vit_small", "img_size": 56, "patch_size": 14, "ffn_layer": "mlp", "text_num_heads": 6,
            "max_len": 64, "temperature": 0.02}
    (tmp_path / "config.json").write_text(json.dumps(flat))
    model = TipsModel.from_pretrained(tmp_path).eval()
    assert model.config.vision_config.num_attention_heads == 6 and model.config.text_config.num_attention_heads == 6
    torch.testing.assert_close(model.temperature, torch.tensor([0.02, 0.02]))
    loaded, original = model.state_dict(), source.state_dict()
    for key in original:
        if key != "log_temperature":
            assert torch.equal(loaded[key], original[key]), key


def test_hub_layout_export_table_round_trip():
    model = TipsModel(tiny_config("swiglu"))
    config, state = model.config, model.state_dict()
    hub = dict(export_tensors(HUB, arch_from_config(config), context_from_config(config), state.__getitem__))
    assert "vision_encoder.blocks.0.mlp.w12.weight" in hub and "temperature" in hub
    assert hub["vision_encoder.blocks.1.attn.qkv.weight"].data_ptr() == \
        state["vision_model.encoder.layers.1.attention.qkv.weight"].data_ptr()  # renames share storage


def test_unknown_layout_is_named(tmp_path):
    save_file({"text_model.embeddings.position_embedding.weight": torch.zeros(2, 2)}, str(tmp_path / "model.safetensors"))
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "clip"}))
    with pytest.raises(LayoutError, match="model_type 'clip'.*text_model.embeddings.position_embedding.weight"):
        TipsModel.from_pretrained(tmp_path)


def test_foreign_folder_without_safetensors(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "tipsv2"}))
    (tmp_path / "pytorch_model.bin").write_bytes(b"")
    with pytest.raises(LayoutError, match="safetensors only"):
        TipsModel.from_pretrained(tmp_path)


def test_released_architecture_is_named():
    """A converted folder without --preset still names its release (for the card's base_model): by architecture,
    and by image resolution where two releases share one (g/14 high-res vs low-res); tiny models match nothing."""
    from tips_hf.conversion.layouts import with_matched_preset

    def bare(name):
        config = TipsConfig.from_preset(name)
        config.preset = None
        return config

    assert with_matched_preset(bare("tips-v2-b14")).preset == "tips-v2-b14"
    assert with_matched_preset(bare("tips-v1-so400m14-hr")).preset == "tips-v1-so400m14-hr"
    assert with_matched_preset(bare("tips-v1-g14-hr")).preset is None  # hr and lr: same weights' shapes
    matched = with_matched_preset(bare("tips-v1-g14-hr"), image_resolution=224)
    assert matched.preset == "tips-v1-g14-lr" and matched.image_resolution == 224
    assert with_matched_preset(bare("tips-v2-b14"), image_resolution=224).preset is None
    assert with_matched_preset(tiny_config("mlp")).preset is None
