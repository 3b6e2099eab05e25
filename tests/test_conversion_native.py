"""Issue 3: transformers-native `Tipsv2` folders: loading native and module-key folders, the to-transformers export,
the bit-exact round trip, the streamed native export, and shape errors. Issue 25: DPT folders exported to the native
`Tipsv2DptFor*` classes, with output parity, a bit-exact round trip through the one table, and named errors."""

import json
import sys

import pytest
import torch
import transformers
from conftest import INTEROP_TOL, TINY_TOWER
from safetensors.torch import load_file, save_file

import tips_hf
from tips_hf import TipsDPTConfig, TipsModel, TipsTextModel, TipsVisionModel
from tips_hf.conversion.cli import main as cli_main
from tips_hf.conversion.dpt import DPT_MODEL_CLASSES
from tips_hf.conversion.layouts import LayoutError
from tips_hf.conversion.native import NATIVE_DPT_CLASSES, NATIVE_DPT_SINCE, export_to_transformers


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


# ----------------------------------------------------------------------------------------------------------------------
# DPT folders → transformers' native Tipsv2DptFor{SemanticSegmentation,DepthEstimation,NormalEstimation}

NATIVE_DPT_OUTPUT = {"segmentation": ("logits", "logits"), "depth": ("predicted_depth", "predicted_depth"),
                     "normals": ("predicted_normals", "normals")}
needs_native_dpt = pytest.mark.skipif(
    not hasattr(transformers, "Tipsv2DptConfig"),
    reason=f"transformers {transformers.__version__} has no native Tipsv2Dpt* classes (they arrived in transformers "
    f"{NATIVE_DPT_SINCE}); the DPT export needs them",
)


def _dpt_folder(tmp_path, task: str, ffn_type: str = "mlp", seed: int = 0):
    """A random tiny DPT model of `task` saved in tmp_path/task, with O(1) activations: PyTorch's default
    initialisation (fan-in scaled weights, non-zero biases) then every tensor perturbed (LayerScale, LayerNorm, tokens
    and position embeddings included), so that a missing, swapped or transposed mapping shows in the outputs."""
    torch.manual_seed(seed)
    config = TipsDPTConfig(
        vision_config={**TINY_TOWER, "num_hidden_layers": 6, "image_size": 56, "ffn_type": ffn_type},
        task=task, dpt_channels=16, num_depth_bins=8, num_labels=5, backbone_out_indices=[0, 2, 3, 5],
    )
    model = getattr(tips_hf, DPT_MODEL_CLASSES[task][0])(config).eval()
    with torch.no_grad():
        for module in model.modules():
            if hasattr(module, "reset_parameters"):
                module.reset_parameters()
        for param in model.parameters():
            param.add_(0.1 * torch.randn_like(param))
    model.save_pretrained(tmp_path / task)
    return model, tmp_path / task


@needs_native_dpt
@pytest.mark.parametrize(("task", "ffn_type"), [("segmentation", "mlp"), ("depth", "swiglu"), ("normals", "mlp")])
def test_dpt_exports_to_native_with_identical_outputs(task, ffn_type, tmp_path, capsys):
    ours, folder = _dpt_folder(tmp_path, task, ffn_type)
    out = tmp_path / "native"
    assert cli_main(["to-transformers", "--model", str(folder), "--output", str(out), "--no-progress"]) == 0
    assert f"transformers.{NATIVE_DPT_CLASSES[task]}.from_pretrained" in capsys.readouterr().out
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "tipsv2_dpt" and "auto_map" not in config
    native_class = getattr(transformers, NATIVE_DPT_CLASSES[task])
    native, info = native_class.from_pretrained(out, output_loading_info=True)
    assert not any(info.values()), info  # every tensor named as transformers expects, none left over
    assert type(transformers.AutoConfig.from_pretrained(out)).__name__ == "Tipsv2DptConfig"
    with pytest.raises(LayoutError, match=rf"native DPT folder .*transformers\.{NATIVE_DPT_CLASSES[task]}\.from_pretrained"):
        type(ours).from_pretrained(out)  # named as what it is, not as a TipsModel missing its text tower
    processor = transformers.AutoImageProcessor.from_pretrained(out)
    assert type(processor).__name__ == "Tipsv2DptImageProcessor" and processor.size["height"] == 448
    native.eval()
    ours_field, native_field = NATIVE_DPT_OUTPUT[task]
    # The same float32 maths in another order (split vs fused q/k/v and SwiGLU projections, other attention and
    # convolution kernels): each op differs by a few float32 roundoffs (2**-24 relative). Measured on transformers 5.14
    # and 5.25: max |Δ| 2.4e-6 on logits and normals of O(1), 1.4e-5 on depths up to 9.3 m (1.5e-6 relative, ~15
    # ulps). atol 2e-5 + rtol 1e-5 allows 1.1e-4 at 9 m; rolling or scaling by 1.1 any one tensor that reaches the
    # outputs moves them by 1e-3 or more (the mask token and key biases do not reach them: the bit-exact round trip
    # below checks those).
    for size in ((56, 56), (42, 70)):  # the position grid, and a resized one (bilinear, antialiased)
        pixels = torch.rand(2, 3, *size, generator=torch.Generator().manual_seed(1))
        with torch.no_grad():
            a = getattr(ours(pixel_values=pixels), ours_field)
            b = getattr(native(pixel_values=pixels), native_field)
        assert a.shape == b.shape
        torch.testing.assert_close(a, b, atol=2e-5, rtol=1e-5)


@needs_native_dpt
@pytest.mark.parametrize("task", ["segmentation", "depth", "normals"])
def test_dpt_export_round_trips_bit_exactly_through_one_table(task, tmp_path):
    """The native folder read back through the same table (`hub_dpt_layout`, import direction) gives our tensors, bit
    for bit: the one table serves both directions."""
    from tips_hf.conversion.foreign import SafetensorsReader
    from tips_hf.conversion.layouts import arch_from_config, context_from_config, hub_dpt_layout, import_tensors

    ours, folder = _dpt_folder(tmp_path, task, "swiglu", seed=2)
    export_to_transformers(folder, tmp_path / "native", max_shard_size="50KB", progress=False)  # sharded on purpose
    assert (tmp_path / "native" / "model.safetensors.index.json").is_file()
    layout = hub_dpt_layout(task)
    files = sorted(str(f) for f in (tmp_path / "native").glob("*.safetensors"))
    reader = SafetensorsReader(files, name="native").with_aliases(layout.aliases)
    state = ours.state_dict()
    shapes = {k: tuple(v.shape) for k, v in state.items()}
    back = dict(import_tensors(layout, arch_from_config(ours.config), context_from_config(ours.config), reader.keys(),
                               reader.read, shapes, "native", towers=("vision", "decoder")))
    assert back.keys() == state.keys()
    for key, tensor in state.items():
        assert torch.equal(back[key], tensor), key


def test_dpt_export_needs_the_native_classes(tmp_path, monkeypatch, capsys):
    """Where transformers has no Tipsv2Dpt* classes (before 5.14, simulated here) the export stops with the version."""
    _, folder = _dpt_folder(tmp_path, "depth")
    # (sys.modules' transformers: under pytest it can be another object than the one this module imported)
    monkeypatch.setattr(sys.modules["transformers"], "Tipsv2DptForDepthEstimation", None, raising=False)
    assert cli_main(["to-transformers", "--model", str(folder), "--output", str(tmp_path / "native")]) == 2
    err = capsys.readouterr().err
    assert f"needs transformers >= {NATIVE_DPT_SINCE}" in err and "Tipsv2DptForDepthEstimation" in err
    assert not (tmp_path / "native").exists()


@needs_native_dpt
def test_dpt_export_named_errors(tmp_path, capsys):
    """What the native classes cannot express stops the export, naming the file and the field."""
    ours, folder = _dpt_folder(tmp_path, "segmentation")
    ours.config.backbone_out_indices = [0, 3, 2, 5]  # the decoder may read blocks in any order; the native backbone not
    ours.save_pretrained(folder)
    assert cli_main(["to-transformers", "--model", str(folder), "--output", str(tmp_path / "native")]) == 2
    err = capsys.readouterr().err
    assert f"{folder / 'config.json'}: TipsDPTConfig.backbone_out_indices is [0, 3, 2, 5]" in err
    assert not (tmp_path / "native").exists()
