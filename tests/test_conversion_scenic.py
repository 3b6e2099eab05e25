"""Issue 3: Scenic import (`tips-convert scenic`): fixtures reproduced, centre padding, and malformed inputs."""

import json

import numpy as np
import pytest
import torch
from conftest import SCENIC_DIR, SCENIC_INDEX, TOKENIZER_MODEL, official_files

from tips_hf import TipsModel
from tips_hf.conversion.cli import main as cli_main


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
