"""Issue 3: Scenic import, native/Hub-layout folders in from_pretrained, to-transformers export, round trips."""

import json

import numpy as np
import pytest
import torch
import transformers
from conftest import INTEROP_TOL, SCENIC_DIR, SCENIC_INDEX, TOKENIZER_MODEL, official_files, tiny_config
from safetensors.torch import load_file, save_file

from tips_hf import TipsConfig, TipsModel, TipsTextModel, TipsVisionModel
from tips_hf.conversion import verify_model
from tips_hf.conversion.cli import main as cli_main
from tips_hf.layouts_tips import HUB, LayoutError, arch_from_config, context_from_config, export_tensors


def scenic_files(name):
    return tuple(SCENIC_DIR / f"{name}_{part}.npz" for part in ("vision", "text", "expected"))


@pytest.mark.parametrize("name", sorted(SCENIC_INDEX))
def test_scenic_fixture_reproduced(name, tmp_path, capsys):
    vision, text, expected = scenic_files(name)
    out = tmp_path / "model"
    code = cli_main(["scenic", "--vision", str(vision), "--text", str(text), "--tokenizer", str(TOKENIZER_MODEL),
                     "--output", str(out), "--verify", str(expected), "--no-progress"])
    assert code == 0, capsys.readouterr().err
    parity = json.loads((out / "parity.json").read_text())["max_abs_diff"]
    sizes = {f"{h}x{w}" for h, w in SCENIC_INDEX[name]["image_sizes"]}
    assert {k.split("@")[1] for k in parity if "@" in k} == sizes
    assert all(f"cls_tokens@{s}" in parity and f"patch_tokens@{s}" in parity for s in sizes)
    assert max(parity.values()) < 1e-4, parity
    config = TipsModel.config_class.from_pretrained(out)
    # the Scenic text tower is always 12 layers, whatever index.json says; the converter reads the arrays
    assert config.text_config.num_hidden_layers == 12
    assert config.vision_config.hidden_act == "gelu_pytorch_tanh" and config.text_config.layer_norm_eps == 1e-6


def test_scenic_centre_padding_through_processor(tmp_path):
    from tips_hf import TipsImageProcessor

    vision, text, expected = scenic_files("scenic-mlp-v1")
    cli_main(["scenic", "--vision", str(vision), "--text", str(text), "--output", str(tmp_path / "m"), "--no-progress"])
    model = TipsModel.from_pretrained(tmp_path / "m").eval()
    with np.load(expected) as data:
        images, want = data["pixel_values_u8_nhwc_230x300"], data["patch_tokens_230x300"]
    pixels = TipsImageProcessor(do_resize=False)(list(images), return_tensors="pt")["pixel_values"]
    assert pixels.shape[-2:] == (238, 308)
    with torch.no_grad():
        got = model.get_image_features(pixels).patch_embeds
    np.testing.assert_allclose(got.numpy(), want, atol=1e-4)


def test_scenic_head_flags_must_agree(tmp_path, capsys):
    vision, text, _ = scenic_files("scenic-mlp-v1")
    code = cli_main(["scenic", "--vision", str(vision), "--text", str(text), "--vision-heads", "8",
                     "--output", str(tmp_path / "m"), "--no-progress"])
    assert code == 2 and "--vision-heads 8 disagrees" in capsys.readouterr().err
    assert not (tmp_path / "m").exists(), "the check runs before anything is written"


def test_scenic_mismatched_widths(tmp_path, capsys):
    vision, _, _ = scenic_files("scenic-mlp-v1")
    _, text, _ = scenic_files("scenic-swiglu-v2")
    code = cli_main(["scenic", "--vision", str(vision), "--text", str(text), "--output", str(tmp_path / "m"),
                     "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and "vision width 64" in err and "differs from text width 96" in err
    assert not (tmp_path / "m").exists()


def _native_model(swiglu: bool, seed: int = 0):
    torch.manual_seed(seed)
    config = transformers.Tipsv2Config(
        vision_config=dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, mlp_ratio=4, image_size=224,
                           use_swiglu_ffn=swiglu),
        text_config=dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
                         vocab_size=100),
    )
    model = transformers.Tipsv2Model(config).eval()
    with torch.no_grad():  # non-trivial LayerScale and temperature so that mapping mistakes show
        for name, param in model.named_parameters():
            if "lambda1" in name:
                param.uniform_(0.5, 1.5)
        model.temperature.fill_(0.02)
    return model


def _inputs():
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(2, 100, (2, 12), generator=g)
    mask = torch.ones_like(ids)
    mask[0, 7:] = 0
    return torch.rand(2, 3, 224, 280, generator=g), ids * mask, mask


def _compare(ours, native):
    pixels, ids, mask = _inputs()
    with torch.no_grad():
        a = ours(pixel_values=pixels, input_ids=ids, attention_mask=mask)
        b = native(pixel_values=pixels, input_ids=ids, attention_mask=mask)
    torch.testing.assert_close(a.vision_model_output.last_hidden_state, b.vision_model_output.last_hidden_state,
                               **INTEROP_TOL)
    torch.testing.assert_close(a.text_model_output.pooler_output, b.text_model_output.pooler_output, **INTEROP_TOL)
    torch.testing.assert_close(a.logits_per_image, b.logits_per_image, atol=1e-4, rtol=1e-6)


@pytest.mark.parametrize("swiglu", [False, True])
def test_native_folder_loads_with_identical_outputs(swiglu, tmp_path):
    native = _native_model(swiglu)
    native.save_pretrained(tmp_path)  # transformers writes its canonical (Hub) layout
    ours = TipsModel.from_pretrained(tmp_path).eval()
    _compare(ours, native)
    torch.testing.assert_close(ours.temperature, torch.tensor([0.02, 0.02]))
    vision = TipsVisionModel.from_pretrained(tmp_path).eval()
    text = TipsTextModel.from_pretrained(tmp_path).eval()
    pixels, ids, mask = _inputs()
    with torch.no_grad():
        torch.testing.assert_close(vision(pixel_values=pixels).last_hidden_state,
                                   native.vision_model(pixel_values=pixels).last_hidden_state, **INTEROP_TOL)
        torch.testing.assert_close(text(input_ids=ids, attention_mask=mask).pooler_output,
                                   native.text_model(input_ids=ids, attention_mask=mask).pooler_output, **INTEROP_TOL)


@pytest.mark.parametrize("swiglu", [False, True])
def test_native_module_keys_folder_loads(swiglu, tmp_path):
    # a folder in the module-tree keys (save_original_format=False) of the installed transformers: fused SwiGLU
    # `weights_in` and `attention.attention.query` before 5.24, gate/up/down and q/k/v/o projections since
    native = _native_model(swiglu, seed=1)
    native.save_pretrained(tmp_path, save_original_format=False)
    assert any(k.startswith("vision_model.encoder.layer.") for k in load_file(tmp_path / "model.safetensors"))
    _compare(TipsModel.from_pretrained(tmp_path).eval(), native)


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


def test_to_transformers_loads_in_plain_transformers(converted_official, tmp_path, capsys):
    folder = converted_official["v1-swiglu-448"]
    out = tmp_path / "native"
    assert cli_main(["to-transformers", "--model", str(folder), "--output", str(out)]) == 0
    assert "not carried" in capsys.readouterr().out
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "tipsv2" and "auto_map" not in config
    native = transformers.Tipsv2Model.from_pretrained(out).eval()
    ours = TipsModel.from_pretrained(folder).eval()
    pixels = torch.rand(2, 3, 448, 448)
    ids = torch.randint(2, 1000, (2, 12))
    with torch.no_grad():
        a, b = ours(pixel_values=pixels, input_ids=ids), native(pixel_values=pixels, input_ids=ids)
    torch.testing.assert_close(a.vision_model_output.last_hidden_state[:, 0], b.vision_model_output.pooler_output,
                               **INTEROP_TOL)
    torch.testing.assert_close(a.vision_model_output.last_hidden_state, b.vision_model_output.last_hidden_state,
                               **INTEROP_TOL)
    torch.testing.assert_close(a.text_model_output.pooler_output, b.text_model_output.pooler_output, **INTEROP_TOL)
    processor = transformers.AutoProcessor.from_pretrained(out)
    assert type(processor).__name__ == "Tipsv2Processor"
    assert processor(text=["a red circle"], return_tensors="pt")["input_ids"].shape == (1, 64)


@pytest.mark.parametrize("name", ["v1-mlp-224", "v2-so-ratio-448"])
def test_round_trip_is_bit_exact(name, converted_official, tmp_path):
    """official → tips-hf → transformers-native → tips-hf: every tensor bit-equal."""
    folder = converted_official[name]
    assert cli_main(["to-transformers", "--model", str(folder), "--output", str(tmp_path / "native")]) == 0
    first = TipsModel.from_pretrained(folder).state_dict()
    again = TipsModel.from_pretrained(tmp_path / "native").state_dict()
    assert first.keys() == again.keys()
    for key in first:
        assert torch.equal(first[key], again[key]), key


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


def test_native_folder_with_wrong_shape(tmp_path):
    native = _native_model(False)
    native.save_pretrained(tmp_path)
    tensors = load_file(tmp_path / "model.safetensors")
    tensors["vision_encoder.blocks.1.attn.proj.weight"] = torch.zeros(64, 63)
    save_file(tensors, str(tmp_path / "model.safetensors"))
    with pytest.raises(LayoutError, match=r"'vision_encoder.blocks.1.attn.proj.weight' has shape \(64, 63\), "
                                          r"expected \(64, 64\)"):
        TipsModel.from_pretrained(tmp_path)


def test_scenic_malformed_inputs(tmp_path, capsys):
    vision, text, _ = scenic_files("scenic-mlp-v1")
    with np.load(vision) as data:
        arrays = {k: data[k] for k in data.files}
    broken = dict(arrays)
    broken.pop("encoder/transformer/encoderblock_1/MultiHeadDotProductAttention_0/key/kernel")
    np.savez(tmp_path / "missing.npz", **broken)
    wrong = dict(arrays)
    wrong["encoder/transformer/encoderblock_0/MlpBlock_0/Dense_1/kernel"] = np.zeros((256, 63), np.float32)
    np.savez(tmp_path / "wrong.npz", **wrong)
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(vision.read_bytes()[:5000])
    cases = {
        "missing.npz": "missing key(s)",
        "wrong.npz": "encoderblock_0/MlpBlock_0/Dense_1/kernel",
        "truncated.npz": "truncated.npz: not a readable .npz archive",
    }
    for file, message in cases.items():
        code = cli_main(["scenic", "--vision", str(tmp_path / file), "--text", str(text),
                         "--output", str(tmp_path / "out"), "--no-progress"])
        err = capsys.readouterr().err
        assert code == 2 and message in err and "Traceback" not in err, (file, err)
    code = cli_main(["scenic", "--vision", str(vision), "--text", str(official_files("v1-mlp-224")[1]),
                     "--output", str(tmp_path / "out"), "--no-progress"])
    assert code == 2 and "missing key 'token_emb/emb_var'" in capsys.readouterr().err


def test_streamed_native_export_equals_transformers_save(converted_official, tmp_path, monkeypatch):
    """The streamed export writes exactly what `Tipsv2Model.save_pretrained` writes (the fallback path, forced here):
    the same tensor names, bits, shards and config."""
    from tips_hf.conversion import native as native_module

    folder = converted_official["v1-swiglu-448"]
    native_module.export_to_transformers(folder, tmp_path / "streamed", max_shard_size="200KB", progress=False)
    monkeypatch.setattr(native_module, "_saved_layout", lambda model: None)
    native_module.export_to_transformers(folder, tmp_path / "saved", max_shard_size="200KB", progress=False)
    for name in ("streamed", "saved"):
        assert (tmp_path / name / "model.safetensors.index.json").is_file()
    index = {n: json.loads((tmp_path / n / "model.safetensors.index.json").read_text()) for n in ("streamed", "saved")}
    assert index["streamed"]["weight_map"].keys() == index["saved"]["weight_map"].keys()
    assert index["streamed"]["metadata"] == index["saved"]["metadata"]
    tensors = {}
    for name in ("streamed", "saved"):
        tensors[name] = {}
        for shard in sorted(set(index[name]["weight_map"].values())):
            tensors[name].update(load_file(tmp_path / name / shard))
    for key, value in tensors["saved"].items():
        assert torch.equal(tensors["streamed"][key], value), key
    configs = [transformers.Tipsv2Config.from_pretrained(tmp_path / n).to_dict() for n in ("streamed", "saved")]
    assert configs[0] == configs[1]


def test_released_architecture_is_named():
    """A converted folder without --preset still names its release (for the card's base_model): by architecture,
    and by image resolution where two releases share one (g/14 high-res vs low-res); tiny models match nothing."""
    from tips_hf.layouts_tips import with_matched_preset

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
