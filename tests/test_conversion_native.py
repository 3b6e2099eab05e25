"""Issue 3: transformers-native `Tipsv2` folders: loading native and module-key folders, the to-transformers export,
the bit-exact round trip, the streamed native export, and shape errors."""

import json

import pytest
import torch
import transformers
from conftest import INTEROP_TOL
from safetensors.torch import load_file, save_file

from tips_hf import TipsModel, TipsTextModel, TipsVisionModel
from tips_hf.conversion.cli import main as cli_main
from tips_hf.conversion.layouts import LayoutError


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


def test_native_folder_with_wrong_shape(tmp_path):
    native = _native_model(False)
    native.save_pretrained(tmp_path)
    tensors = load_file(tmp_path / "model.safetensors")
    tensors["vision_encoder.blocks.1.attn.proj.weight"] = torch.zeros(64, 63)
    save_file(tensors, str(tmp_path / "model.safetensors"))
    with pytest.raises(LayoutError, match=r"'vision_encoder.blocks.1.attn.proj.weight' has shape \(64, 63\), "
                                          r"expected \(64, 64\)"):
        TipsModel.from_pretrained(tmp_path)


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
