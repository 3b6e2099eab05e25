"""`tips-publish`: the folder it would upload (dry run), its model card, the recorded Hub calls, and its errors.

Nothing here touches the network: uploads go to a recording fake of `HfApi`.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import TOKENIZER_MODEL, official_files, run_without_tips_hf
from huggingface_hub import ModelCard

from tips_hf import TipsConfig, TipsModel, TipsProcessor
from tips_hf.configuration_tips import PRESETS
from tips_hf.hub import (
    CARD_TAGS,
    GOOGLE_HUB_IDS,
    PublishError,
    build_model_card,
    format_param_count,
    main,
    publish,
)

NAME = "v1-swiglu-448"
REPO = "my-org/tips-tiny"
SHARD = "500KB"  # the tiny model is ~2.8 MB: several shards


@pytest.fixture(scope="module")
def verified_model(tmp_path_factory) -> Path:
    """A fixture checkpoint converted with --verify, so that the folder holds parity.json."""
    from tips_hf.conversion import convert_official

    vision, text, expected = official_files(NAME)
    out = tmp_path_factory.mktemp("verified") / NAME
    convert_official(
        vision, text, out, tokenizer_path=TOKENIZER_MODEL, vision_heads=4, text_heads=4, verify=expected, progress=False
    )
    return out


@pytest.fixture(scope="module")
def dry_run(verified_model, tmp_path_factory) -> tuple[Path, str]:
    """`tips-publish --dry-run --output OUT` with a tiny shard size; returns OUT and what the command printed."""
    out = tmp_path_factory.mktemp("dry") / "published"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = main(
            ["--model", str(verified_model), "--repo-id", REPO, "--dry-run", "--output", str(out)]
            + ["--max-shard-size", SHARD]
        )
    assert code == 0
    return out, printed.getvalue()


def listing(folder: Path) -> list[tuple[str, int]]:
    return sorted((p.relative_to(folder).as_posix(), p.stat().st_size) for p in folder.rglob("*") if p.is_file())


def table_rows(markdown: str, header: str) -> list[list[str]]:
    """Cells of the rows of the markdown table that starts with `header`."""
    lines = markdown[markdown.index(header) :].splitlines()
    rows = []
    for line in lines[2:]:
        if not line.startswith("|"):
            break
        rows.append([c.strip() for c in line.strip("|").split("|")])
    return rows


def architecture(markdown: str) -> dict[str, list[str]]:
    return {name: cells for name, *cells in table_rows(markdown, "| | Vision | Text |")}


def parity_rows(markdown: str) -> set[tuple[str, str, str]]:
    """(output key, input, max|Δ|) of the card's parity table, e.g. ("cls1", "448x448", "7.451e-09")."""
    rows = set()
    for label, size, value in table_rows(markdown, "| Output | Input |"):
        key = re.search(r"\(`(\w+)`\)$", label).group(1) if "`" in label else label
        rows.add((key, size.replace("×", "x"), value))
    return rows


class RecordingApi:
    """Stands in for `HfApi`: records every call, and the folder's listing at upload time (it is deleted after)."""

    def __init__(self, token: str | None = None):
        self.token = token
        self.calls: list[tuple[str, tuple, dict]] = []
        self.uploaded: list[tuple[str, int]] = []

    def create_repo(self, *args, **kwargs):
        self.calls.append(("create_repo", args, kwargs))
        return SimpleNamespace(repo_id=args[0] if args else kwargs["repo_id"])

    def create_branch(self, *args, **kwargs):
        self.calls.append(("create_branch", args, kwargs))

    def upload_folder(self, *args, **kwargs):
        self.calls.append(("upload_folder", args, kwargs))
        self.uploaded = listing(Path(kwargs["folder_path"]))
        return SimpleNamespace(commit_url=f"https://huggingface.co/{kwargs['repo_id']}/commit/0123abc")


# ---------------------------------------------------------------------------------------------------------------------
# Dry run: the exact folder


def test_dry_run_writes_and_lists_the_folder(dry_run, verified_model):
    out, printed = dry_run
    files = listing(out)
    names = {name for name, _ in files}
    expected = {
        "README.md",
        "config.json",
        "parity.json",
        "model.safetensors.index.json",
        "configuration_tips.py",
        "modeling_tips.py",
        "processing_tips.py",
        "image_processing_tips.py",
        "tokenization_tips.py",
        "tokenizer.model",
        "tokenizer_config.json",
        "processor_config.json",
    }
    assert expected <= names, expected - names
    # Every file is listed with its exact size, and nothing else is.
    assert "nothing sent" in printed
    listed = re.findall(r"^  (\S+)\s+([\d,]+) bytes$", printed, flags=re.M)
    assert sorted((name, int(size.replace(",", ""))) for name, size in listed) == files
    assert f"{len(files)} files, {sum(s for _, s in files):,} bytes" in printed
    # Written atomically: no staging directory is left beside OUT.
    assert [p.name for p in out.parent.iterdir()] == ["published"]
    # Sharded above --max-shard-size: the index names every tensor of the model and only existing shards.
    shards = sorted(n for n in names if n.endswith(".safetensors"))
    assert len(shards) >= 3 and all(re.fullmatch(r"model-\d{5}-of-\d{5}\.safetensors", s) for s in shards)
    weight_map = json.loads((out / "model.safetensors.index.json").read_text())["weight_map"]
    assert sorted(set(weight_map.values())) == shards
    assert set(weight_map) == set(TipsModel.from_pretrained(verified_model).state_dict())
    per_shard = {shard: sum(1 for s in weight_map.values() if s == shard) for shard in shards}
    sizes = dict(files)
    # A shard may exceed the limit only to hold one tensor that is larger than the limit on its own.
    assert all(sizes[s] <= 500_000 + 16_384 for s, n in per_shard.items() if n > 1), (per_shard, sizes)
    # Remote code: auto_map for the Auto classes the card's snippet uses; files carried over verbatim.
    config = json.loads((out / "config.json").read_text())
    assert config["auto_map"]["AutoModel"] == "modeling_tips.TipsModel"
    assert config["auto_map"]["AutoModelForZeroShotImageClassification"] == "modeling_tips.TipsModel"
    assert json.loads((out / "processor_config.json").read_text())["auto_map"]["AutoProcessor"].startswith(
        "processing_tips."
    )
    assert (out / "parity.json").read_bytes() == (verified_model / "parity.json").read_bytes()
    assert (out / "tokenizer.model").read_bytes() == TOKENIZER_MODEL.read_bytes()


def test_sharded_folder_loads_with_identical_weights(dry_run, verified_model):
    out, _ = dry_run
    source = TipsModel.from_pretrained(verified_model).state_dict()
    published = TipsModel.from_pretrained(out).state_dict()
    assert source.keys() == published.keys()
    for key, value in source.items():
        assert published[key].dtype == value.dtype and torch.equal(published[key], value), key


def test_dry_run_folder_runs_with_remote_code_only(dry_run, verified_model, tmp_path):
    """Loads with trust_remote_code=True where tips_hf cannot be imported, gives the source model's outputs exactly,
    and the card's usage snippet runs as written (repo id → the folder)."""
    out, _ = dry_run
    rng = np.random.RandomState(0)
    images = (rng.rand(2, 60, 84, 3) * 255).astype(np.uint8)
    texts = ["a red circle", "a blue square on the left"]
    np.savez(tmp_path / "inputs.npz", images=images)
    from PIL import Image

    Image.fromarray(images[0]).save(tmp_path / "cat.jpg")  # the image the snippet opens
    snippet = re.search(r"```python\n(.*?)```", (out / "README.md").read_text(), flags=re.S).group(1)
    assert f'repo_id = "{REPO}"' in snippet
    run = run_without_tips_hf(
        """
        import numpy as np, torch
        from transformers import AutoModel, AutoProcessor
        model = AutoModel.from_pretrained(FOLDER, trust_remote_code=True).eval()
        processor = AutoProcessor.from_pretrained(FOLDER, trust_remote_code=True)
        assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
        data = np.load("inputs.npz")
        inputs = processor(images=list(data["images"]), text=TEXTS, return_tensors="pt")
        with torch.no_grad():
            out = model(**inputs)
        np.savez("out.npz", logits=out.logits_per_image.numpy(), synthetic=out.synthetic_logits_per_image.numpy(),
                 patches=out.vision_model_output.patch_embeds.numpy(), text=out.text_embeds.numpy())
        print("SNIPPET")
        exec(SNIPPET.replace(REPO, FOLDER))
        """,
        tmp_path,
        FOLDER=str(out),
        TEXTS=texts,
        REPO=REPO,
        SNIPPET=snippet,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    snippet_output = run.stdout.split("SNIPPET", 1)[1]
    assert "torch.Size([1, 32, 32, 96])" in snippet_output  # 448 px / patch 14, width 96
    assert "'label': 'cat'" in snippet_output and "a photo of a dog" in snippet_output
    remote = np.load(tmp_path / "out.npz")

    model = TipsModel.from_pretrained(verified_model).eval()
    processor = TipsProcessor.from_pretrained(verified_model)
    inputs = processor(images=list(images), text=texts, return_tensors="pt")
    with torch.no_grad():
        want = model(**inputs)
    np.testing.assert_array_equal(remote["logits"], want.logits_per_image.numpy())
    np.testing.assert_array_equal(remote["synthetic"], want.synthetic_logits_per_image.numpy())
    np.testing.assert_array_equal(remote["patches"], want.vision_model_output.patch_embeds.numpy())
    np.testing.assert_array_equal(remote["text"], want.text_embeds.numpy())


# ---------------------------------------------------------------------------------------------------------------------
# Model card


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


# ---------------------------------------------------------------------------------------------------------------------
# Upload (recorded)


def test_real_push_records_hub_calls(verified_model, dry_run):
    api = RecordingApi()
    result = publish(
        verified_model,
        REPO,
        private=True,
        token="hf_test",
        commit_message="Add tiny TIPS",
        max_shard_size=SHARD,
        api=api,
    )
    assert [name for name, _, _ in api.calls] == ["create_repo", "upload_folder"]
    _, args, kwargs = api.calls[0]
    assert args == (REPO,)
    assert kwargs == dict(token="hf_test", private=True, exist_ok=True, repo_type="model")
    _, args, kwargs = api.calls[1]
    assert kwargs["repo_id"] == REPO and kwargs["commit_message"] == "Add tiny TIPS"
    assert kwargs["repo_type"] == "model" and kwargs["token"] == "hf_test" and kwargs["revision"] is None
    # The upload is the dry-run folder, file for file, and the staging folder is gone afterwards.
    assert api.uploaded == listing(dry_run[0]) == result.files
    assert not Path(kwargs["folder_path"]).exists()
    assert not result.dry_run and result.commit.commit_url.endswith("/commit/0123abc")
    assert result.url == f"https://huggingface.co/{REPO}"


def test_real_push_to_branch_with_default_message(verified_model):
    api = RecordingApi(token="hf_from_api")
    publish(verified_model, REPO, revision="v1-weights", api=api)
    assert [name for name, _, _ in api.calls] == ["create_repo", "create_branch", "upload_folder"]
    assert api.calls[0][2]["private"] is False and api.calls[0][2]["token"] == "hf_from_api"
    assert api.calls[1][1] == (REPO,) and api.calls[1][2]["branch"] == "v1-weights"
    upload = api.calls[2][2]
    assert upload["revision"] == "v1-weights"
    assert re.fullmatch(
        r"Upload TIPS \(custom: width 96, 2 vision layers, patch 14\) with tips-hf \S+", upload["commit_message"]
    )


def test_cli_real_push(verified_model, monkeypatch, capsys):
    api = RecordingApi()
    monkeypatch.setattr("tips_hf.hub.publishing.HfApi", lambda: api)
    code = main(
        ["--model", str(verified_model), "--repo-id", REPO, "--private", "--token", "hf_cli"]
        + ["--commit-message", "from the CLI"]
    )
    printed = capsys.readouterr()
    assert code == 0, printed.err
    assert f"uploaded to https://huggingface.co/{REPO} (https://huggingface.co/{REPO}/commit/0123abc)" in printed.out
    assert api.calls[0][2]["private"] is True and api.calls[1][2]["commit_message"] == "from the CLI"
    assert f"{len(api.uploaded)} files" in printed.out


def test_cli_upload_failure_is_reported(verified_model, monkeypatch, capsys):
    from huggingface_hub.errors import OfflineModeIsEnabled

    class OfflineApi(RecordingApi):
        def create_repo(self, *args, **kwargs):
            raise OfflineModeIsEnabled("Cannot reach https://huggingface.co: offline mode is enabled.")

    api = OfflineApi()
    monkeypatch.setattr("tips_hf.hub.publishing.HfApi", lambda: api)
    code = main(["--model", str(verified_model), "--repo-id", REPO, "--token", "hf_cli"])
    printed = capsys.readouterr()
    assert code == 1 and "Traceback" not in printed.err
    assert "tips-publish: error: could not reach the Hub: Cannot reach https://huggingface.co" in printed.err
    assert api.calls == [] and printed.out == ""


# ---------------------------------------------------------------------------------------------------------------------
# Errors: exit code 2, a message naming the problem, no traceback


@pytest.fixture
def no_token(monkeypatch, tmp_path):
    import huggingface_hub.constants

    for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_OIDC_RESOURCE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_TOKEN_PATH", str(tmp_path / "no-token"))


def cli_error(capsys, *argv: str) -> str:
    code = main(list(argv))
    printed = capsys.readouterr()
    assert code == 2, printed
    assert "Traceback" not in printed.err and printed.out == ""
    # stderr may also hold transformers' progress bars; the error is one line of our own.
    assert printed.err.count("tips-publish: error: ") == 1, printed.err
    return printed.err.split("tips-publish: error: ")[1]


def test_error_missing_model_dir(capsys, tmp_path):
    err = cli_error(capsys, "--model", str(tmp_path / "nowhere"), "--repo-id", REPO, "--dry-run")
    assert f"model folder {tmp_path / 'nowhere'} does not exist" in err


def test_error_not_a_tips_folder(capsys, tmp_path):
    folder = tmp_path / "raw"
    folder.mkdir()
    (folder / "b14_vision.npz").write_bytes(b"")
    (folder / "notes.txt").write_text("hi")
    err = cli_error(capsys, "--model", str(folder), "--repo-id", REPO, "--dry-run")
    assert "not a TIPS model folder: no config.json (found: b14_vision.npz, notes.txt)" in err
    assert "tips-convert official" in err

    (folder / "config.json").write_text(json.dumps({"model_type": "clip", "architectures": ["CLIPModel"]}))
    err = cli_error(capsys, "--model", str(folder), "--repo-id", REPO, "--dry-run")
    assert "config.json has model_type 'clip' (architectures ['CLIPModel']), expected 'tips'" in err


def test_error_weights_do_not_match_config(capsys, verified_model, tmp_path):
    folder = tmp_path / "deeper"
    shutil.copytree(verified_model, folder)
    config = json.loads((folder / "config.json").read_text())
    config["vision_config"]["num_hidden_layers"] = 3
    (folder / "config.json").write_text(json.dumps(config))
    err = cli_error(capsys, "--model", str(folder), "--repo-id", REPO, "--dry-run")
    assert "do not match its config.json (missing_keys: ['vision_model.encoder.layers.2." in err


@pytest.mark.parametrize("repo_id", ["tips-tiny", "my-org/tips/tiny", "my-org/tips tiny", "/tips", "my-org/a--b"])
def test_error_bad_repo_id(capsys, verified_model, repo_id):
    err = cli_error(capsys, "--model", str(verified_model), "--repo-id", repo_id, "--dry-run")
    assert f"invalid repo id {repo_id!r}" in err


def test_error_missing_token(capsys, verified_model, no_token):
    err = cli_error(capsys, "--model", str(verified_model), "--repo-id", REPO)
    assert "no Hugging Face token" in err and "HF_TOKEN=hf_..." in err and "--token" in err
    api = RecordingApi()
    with pytest.raises(PublishError, match="no Hugging Face token"):
        publish(verified_model, REPO, api=api)
    assert api.calls == []  # nothing created on the Hub


def test_error_output_folder(capsys, verified_model, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "stale.txt").write_text("old")
    err = cli_error(capsys, "--model", str(verified_model), "--repo-id", REPO, "--dry-run", "--output", str(out))
    assert f"{out} exists and is not empty; pass --overwrite" in err
    assert [p.name for p in out.iterdir()] == ["stale.txt"]
    err = cli_error(capsys, "--model", str(verified_model), "--repo-id", REPO, "--output", str(out))
    assert "--output is only used with --dry-run" in err
    err = cli_error(capsys, "--model", str(verified_model), "--repo-id", REPO, "--dry-run", "--max-shard-size", "5XB")
    assert "invalid max shard size '5XB'" in err

    assert (
        main(["--model", str(verified_model), "--repo-id", REPO, "--dry-run", "--output", str(out), "--overwrite"]) == 0
    )
    capsys.readouterr()
    assert not (out / "stale.txt").exists() and (out / "README.md").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
