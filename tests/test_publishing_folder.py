"""`tips-publish`: the folder it would upload (dry run: listing, sharding, remote code) and its CLI errors.

Nothing here touches the network; `verified_model` and `dry_run` come from conftest.py.
"""

from __future__ import annotations

import json
import re
import shutil

import numpy as np
import pytest
import torch
from conftest import TOKENIZER_MODEL, assert_same_as_remote, run_without_tips_hf
from publishing_helpers import REPO, RecordingApi, cli_error, listing

from tips_hf import TipsModel, TipsProcessor
from tips_hf.hub import PublishError, main, publish

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
    assert_same_as_remote(remote, want)


# ---------------------------------------------------------------------------------------------------------------------
# Errors: exit code 2, a message naming the problem, no traceback


@pytest.fixture
def no_token(monkeypatch, tmp_path):
    import huggingface_hub.constants

    for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_OIDC_RESOURCE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_TOKEN_PATH", str(tmp_path / "no-token"))


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
