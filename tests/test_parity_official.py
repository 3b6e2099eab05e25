"""`tips-convert official` reproduces the official PyTorch reference outputs within 1e-5 (float32, CPU)."""

import json

import pytest
import torch
from conftest import OFFICIAL_INDEX, TOKENIZER_MODEL, official_files

from tips_hf import TipsModel
from tips_hf.conversion import verify_model
from tips_hf.conversion.cli import main as cli_main

TOL = 1e-5


@pytest.mark.parametrize("name", sorted(OFFICIAL_INDEX))
def test_cli_converts_and_verifies(name, tmp_path, capsys):
    vision, text, expected = official_files(name)
    info = OFFICIAL_INDEX[name]
    out = tmp_path / "model"
    code = cli_main(
        [
            "official",
            "--vision",
            str(vision),
            "--text",
            str(text),
            "--tokenizer",
            str(TOKENIZER_MODEL),
            "--vision-heads",
            str(info["vision"]["num_heads"]),
            "--text-heads",
            str(info["text"]["num_heads"]),
            "--output",
            str(out),
            "--verify",
            str(expected),
            "--no-progress",
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "overall" in printed and f"{info['vision']['depth']} layers" in printed
    parity = json.loads((out / "parity.json").read_text())["max_abs_diff"]
    sizes = {f"{h}x{w}" for h, w in info["image_sizes"]}
    assert {k.split("@")[1] for k in parity if "@" in k} == sizes
    for kind in ("cls1", "cls2", "patch_tokens"):
        assert all(f"{kind}@{s}" in parity for s in sizes)
    assert "text_embeds" in parity
    assert max(parity.values()) < TOL, parity


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_parity_with_each_attention(converted_official, attn):
    for name, folder in converted_official.items():
        model = TipsModel.from_pretrained(folder, attn_implementation=attn)
        assert model.config._attn_implementation == attn
        parity = verify_model(model, official_files(name)[2])
        assert max(parity.values()) < TOL, (name, attn, parity)


def test_architecture_inferred(converted_official):
    for name, folder in converted_official.items():
        info = OFFICIAL_INDEX[name]["vision"]
        config = TipsModel.config_class.from_pretrained(folder)
        v = config.vision_config
        assert (v.hidden_size, v.num_hidden_layers, v.ffn_type) == (info["embed_dim"], info["depth"], info["ffn_layer"])
        assert v.image_size == info["img_size"]
        mlp = int(info["embed_dim"] * info["mlp_ratio"])
        assert v.intermediate_size == (mlp if info["ffn_layer"] == "mlp" else (int(mlp * 2 / 3) + 7) // 8 * 8)


def test_temperature_carried(converted_official):
    import numpy as np

    for name, folder in converted_official.items():
        want = float(np.load(official_files(name)[1])["temperature"])
        model = TipsModel.from_pretrained(folder)
        torch.testing.assert_close(model.temperature, torch.tensor([want, want]), rtol=1e-6, atol=0)
