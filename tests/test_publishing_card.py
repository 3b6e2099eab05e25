"""`tips-publish`: the model card (metadata, architecture and parity tables, presets and base_model)."""

from __future__ import annotations

import json
import re
import shutil

import numpy as np
import pytest
from conftest import official_files
from huggingface_hub import ModelCard
from publishing_helpers import NAME, REPO, architecture, parity_rows

from tips_hf import TipsConfig, TipsModel
from tips_hf.hub import (
    CARD_TAGS,
    GOOGLE_HUB_IDS,
    PublishError,
    build_model_card,
    format_param_count,
    main,
    publish,
)
from tips_hf.modeling.configuration_tips import PRESETS


def test_card_metadata_architecture_and_parity(dry_run, verified_model):
    out, _ = dry_run
    card = ModelCard.load(out / "README.md")
    assert card.data.library_name == "transformers"
    assert card.data.pipeline_tag == "zero-shot-image-classification"
    assert card.data.license == "apache-2.0"
    assert card.data.tags == CARD_TAGS
    assert "custom_code" in card.data.tags and "tips" in card.data.tags
    assert card.data.base_model is None  # no preset in the fixture's config
    assert "base_model" not in card.content.split("---")[1]

    model = TipsModel.from_pretrained(verified_model)
    rows = architecture(card.text)
    assert rows["Layers"] == ["2", "2"]
    assert rows["Width"] == ["96", "96"]
    assert rows["Attention heads"] == ["4", "4"]
    assert rows["FFN type"] == ["SwiGLU", "MLP (relu)"]
    assert rows["FFN width"] == ["256", "384"]  # SwiGLU: 2/3 of 4 × 96 rounded up to 8; text: the npz's mlp_dim
    assert rows["Position grid"][0].startswith("32×32 learned (448 px / patch 14)")
    assert rows["Position grid"][1] == "64 tokens, sinusoidal"
    vision = sum(p.numel() for p in model.vision_model.parameters())
    text = sum(p.numel() for p in model.text_model.parameters())
    assert rows["Parameters"] == [format_param_count(vision), format_param_count(text)]
    temperature = float(np.load(official_files(NAME)[1])["temperature"])
    assert f"Softmax temperatures: {temperature:.6g} (alt-text head)" in card.text

    parity = json.loads((verified_model / "parity.json").read_text())
    values = parity["max_abs_diff"].items()
    assert len(values) == 7  # cls1, cls2, patch_tokens at 2 sizes + text
    assert "**official PyTorch reference**" in card.text and f"`{NAME}_expected.npz`" in card.text
    want = {(*name.split("@"), f"{v:.3e}") if "@" in name else (name, "text", f"{v:.3e}") for name, v in values}
    want.add(("**overall**", "", f"**{parity['max_abs_diff_overall']:.3e}**"))
    assert parity_rows(card.text) == want


def test_card_without_parity_file_says_so(converted_official, tmp_path):
    source = converted_official["v1-mlp-224"]
    assert not (source / "parity.json").exists()  # converted without --verify
    result = publish(source, "my-org/no-parity", dry_run=True, output_dir=tmp_path / "out")
    assert "parity.json" not in {name for name, _ in result.files}
    card = ModelCard.load(tmp_path / "out" / "README.md")
    assert "No parity report (`parity.json`) was found" in card.text
    assert "**not** been compared" in card.text and "| Output |" not in card.text
    assert architecture(card.text)["FFN type"] == ["MLP (gelu)", "MLP (relu)"]
    assert result.output_dir == tmp_path / "out" and result.warnings == []


def test_preset_sets_base_model_and_flags_mismatch(verified_model, tmp_path, capsys):
    source = tmp_path / "with-preset"
    shutil.copytree(verified_model, source)
    config = json.loads((source / "config.json").read_text())
    config["preset"] = "tips-v2-l14"
    (source / "config.json").write_text(json.dumps(config))
    (source / "training_log.txt").write_text("step 1\n")

    code = main(["--model", str(source), "--repo-id", REPO, "--dry-run", "--output", str(tmp_path / "out")])
    printed = capsys.readouterr()
    assert code == 0, printed.err
    card = ModelCard.load(tmp_path / "out" / "README.md")
    assert card.data.base_model == "google/tipsv2-l14"
    assert "**TIPSv2 L/14**" in card.text
    assert "Based on the Google release [`google/tipsv2-l14`](https://huggingface.co/google/tipsv2-l14)" in card.text
    # The fixture is not an L/14: the preset's claim (and so base_model) is flagged while the folder is built.
    assert (
        "tips-publish: warning: config.preset is 'tips-v2-l14' but vision_config.hidden_size is 96 (the preset "
        "has 1024)" in printed.err
    )
    # Files of the source folder that are not published are named.
    assert f"not included from {source}: training_log.txt" in printed.out
    assert not (tmp_path / "out" / "training_log.txt").exists()

    override = publish(source, REPO, dry_run=True, base_model="my-org/tips-l14-finetuned")
    assert override.card.data.base_model == "my-org/tips-l14-finetuned" and override.output_dir is None
    assert "Based on [`my-org/tips-l14-finetuned`](https://huggingface.co/my-org/tips-l14-finetuned)" in str(
        override.card
    )
    assert override.not_included == ["training_log.txt"]
    assert any("vision_config.num_hidden_layers is 2 (the preset has 24)" in w for w in override.warnings)
    assert publish(source, REPO, dry_run=True, base_model="").card.data.base_model is None


def test_every_preset_maps_to_a_google_release():
    assert set(GOOGLE_HUB_IDS) == set(PRESETS)
    assert GOOGLE_HUB_IDS["tips-v2-b14"] == "google/tipsv2-b14"
    assert GOOGLE_HUB_IDS["tips-v2-so400m14"] == "google/tipsv2-so400m14"
    assert GOOGLE_HUB_IDS["tips-v1-g14-lr"] == "google/tipsv1-g14-lowres"
    assert all(
        re.fullmatch(r"google/tipsv[12]-(s14|b14|l14|so400m14|g14)(-lowres)?", v) for v in GOOGLE_HUB_IDS.values()
    )


# Parameter counts published on Google's model cards (millions): vision, text.
GOOGLE_COUNTS = {"tips-v2-b14": (86, 110), "tips-v2-l14": (303, 184), "tips-v2-so400m14": (412, 448)}

@pytest.mark.parametrize("preset", sorted(GOOGLE_COUNTS))
def test_build_model_card_from_config_for_push_to_hub(preset):
    """The card for `push_to_hub` users, from a config alone (parameters counted on the meta device)."""
    card = build_model_card(TipsConfig.from_preset(preset), repo_id="my-org/mine")
    assert card.data.base_model == GOOGLE_HUB_IDS[preset]
    assert card.data.tags == CARD_TAGS and card.data.pipeline_tag == "zero-shot-image-classification"
    params = architecture(card.text)["Parameters"]
    counts = [int(cell.split(" ")[0].replace(",", "")) for cell in params]
    for got, published in zip(counts, GOOGLE_COUNTS[preset]):
        assert abs(got / 1e6 - published) / published < 0.01, (preset, counts)
    assert 'repo_id = "my-org/mine"' in card.text and "No parity report" in card.text
    assert ModelCard(str(card)).data.base_model == GOOGLE_HUB_IDS[preset]  # round-trips through README text


def test_build_model_card_from_model_with_bare_parity():
    from conftest import tiny_config

    model = TipsModel(tiny_config("swiglu"))
    card = build_model_card(model, parity={"cls1@56x56": 1.5e-7, "text_embeds": 2.5e-8})
    assert parity_rows(card.text) == {
        ("cls1", "56x56", "1.500e-07"),
        ("text_embeds", "text", "2.500e-08"),
        ("**overall**", "", "**1.500e-07**"),
    }
    assert "| alt-text CLS embedding (`cls1`) | 56×56 | 1.500e-07 |" in card.text
    assert "an unnamed reference" in card.text and 'repo_id = "ORG/NAME"' in card.text
    assert card.data.base_model is None
    with pytest.raises(PublishError, match="'max_abs_diff' must map output names to numbers"):
        build_model_card(model, parity={"cls1": "small"})
