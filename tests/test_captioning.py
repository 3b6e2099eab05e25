"""tips-caption with tiny randomly initialised captioners (tips_hf.captioning.tiny: 2-layer BLIP, PaliGemma, LLaVA,
Florence-2 with ~25-word WordLevel tokenizers and their real processors): every readable row gets the captions the
model itself generates, unreadable images are left out and counted, a SIGKILLed run resumes to the same output,
2 processes write the same rows as 1, parquet / webdataset / streamed inputs work, and the output trains TIPS."""

import io
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT
from PIL import Image

NUM_IMAGES, CORRUPT = 12, 5  # row 5 is not an image
# short + detailed in one pass, 3 images per generate() call, 4 input rows per shard: 3 shards, the second with the
# corrupt image; 5 new tokens keep the random model (it never emits [SEP]) fast
ARGS = ["--preset", "short,detailed", "--max-new-tokens", "5", "--batch-size", "3", "--shard-size", "4",
        "--no-progress"]
COLUMNS = ["synthetic_caption_short", "synthetic_caption_detailed"]


@pytest.fixture(scope="module")
def blip_dir(tmp_path_factory):
    """A random 2-layer BLIP + BlipProcessor (a WordLevel tokenizer in PreTrainedTokenizerFast) on disk."""
    from tips_hf.captioning.tiny import tiny_blip

    return Path(tiny_blip(tmp_path_factory.mktemp("blip")))


def _images():
    return [Image.fromarray(np.random.default_rng(i).integers(0, 255, (40, 48, 3), dtype=np.uint8))
            for i in range(NUM_IMAGES)]


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
    """Images + alt-text as a user has them: an imagefolder with metadata.jsonl; one file is not an image."""
    folder = tmp_path_factory.mktemp("images")
    lines = []
    for i, image in enumerate(_images()):
        name = f"{i:03d}.png"
        if i == CORRUPT:
            (folder / name).write_bytes(b"not a png")
        else:
            image.save(folder / name)
        lines.append(json.dumps({"file_name": name, "alt_text": f"web alt text {i}"}))
    (folder / "metadata.jsonl").write_text("\n".join(lines) + "\n")
    return folder


def _env(tmp_path, **extra):
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1", HF_DATASETS_CACHE=str(tmp_path / "hf-cache"))
    env.pop("TIPS_HF_FAULT", None)
    env.update(extra)
    return env


def _caption(model, data, output, *args, env, launcher=None):
    command = (launcher or [sys.executable]) + ["-m", "tips_hf.captioning.cli", "--model", str(model), "--data",
                                                str(data), "--output", str(output), *args]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=600, cwd=ROOT)


def _rows(output):
    """All rows of a tips-caption output, loaded the way a user loads it (images as PNG bytes for comparison)."""
    import datasets

    split = datasets.load_dataset(str(output), split="train", cache_dir=str(output) + "-hf-cache")
    rows = []
    for row in split:
        for key, value in row.items():
            if isinstance(value, Image.Image):
                buffer = io.BytesIO()
                value.save(buffer, format="PNG")
                row[key] = buffer.getvalue()
        rows.append(row)
    return rows


def _call(model, data, output, **overrides):
    """`caption_dataset` in this process with the arguments of ARGS (the library call behind the CLI)."""
    from tips_hf.captioning import caption_dataset

    kwargs = dict(presets=["short", "detailed"], max_new_tokens=5, batch_size=3, shard_size=4, progress=False)
    return caption_dataset(str(model), str(data), output, **{**kwargs, **overrides})


@pytest.fixture(scope="module")
def reference(blip_dir, image_folder, tmp_path_factory):
    output = tmp_path_factory.mktemp("runs") / "reference"
    result = _call(blip_dir, image_folder, output)
    assert (result.captioned, result.skipped_images, result.shards, result.columns) == (
        NUM_IMAGES - 1, 1, 3, COLUMNS)
    return output


def test_every_readable_row_gets_the_models_captions(blip_dir, reference):
    """Each caption equals the model's own greedy generate() on that image alone (BLIP's documented usage); batching
    changes float32 rounding only, far below the random model's logit gaps, so the greedy tokens agree."""
    from transformers import AutoProcessor, BlipForConditionalGeneration

    rows = _rows(reference)
    kept = [i for i in range(NUM_IMAGES) if i != CORRUPT]
    assert [r["alt_text"] for r in rows] == [f"web alt text {i}" for i in kept]  # input order, corrupt row left out
    assert list(rows[0]) == ["image", "alt_text", *COLUMNS]
    model = BlipForConditionalGeneration.from_pretrained(blip_dir).eval()
    processor = AutoProcessor.from_pretrained(blip_dir)
    images = _images()
    for row, i in zip(rows, kept):
        assert np.array_equal(np.asarray(Image.open(io.BytesIO(row["image"]))), np.asarray(images[i]))
        inputs = processor(images=images[i], return_tensors="pt")
        short = model.generate(**inputs, max_new_tokens=5, do_sample=False)
        # the detailed preset of a prompt-free model: min_new_tokens (clamped to 5) and no repeated trigram
        detailed = model.generate(**inputs, max_new_tokens=5, min_new_tokens=5, no_repeat_ngram_size=3,
                                  do_sample=False)
        assert row["synthetic_caption_short"] == processor.decode(short[0], skip_special_tokens=True).strip()
        assert row["synthetic_caption_detailed"] == processor.decode(detailed[0], skip_special_tokens=True).strip()
    assert all(row["synthetic_caption_detailed"] for row in rows)  # 5 forced tokens: never empty
    assert len({row["synthetic_caption_short"] for row in rows}) > 1  # the captions depend on the image
    stats = json.loads((reference / "caption_stats.json").read_text())["train"]
    assert (stats["rows_read"], stats["captioned"], stats["skipped_images"]) == (NUM_IMAGES, NUM_IMAGES - 1, 1)
    assert sorted(p.name for p in (reference / "data").iterdir()) == [
        "train-00000-of-00003-00000.parquet", "train-00001-of-00003-00000.parquet",
        "train-00002-of-00003-00000.parquet"]


@pytest.mark.parametrize(
    "fault", ["caption-shard:train-00001-of-00003-00000", pytest.param("caption-batch:3", marks=pytest.mark.slow)]
)
def test_sigkill_then_resume_gives_the_same_output(fault, blip_dir, image_folder, reference, tmp_path):
    """Killed while renaming shard 1 into place (its parquet complete in the staging folder) or in the middle of it
    (batch 3 = its first batch): shard 0 is visible, shard 1 is not, and re-running finishes the same dataset."""
    output = tmp_path / "out"
    crashed = _caption(blip_dir, image_folder, output, *ARGS, env=_env(tmp_path, TIPS_HF_FAULT=fault))
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr[-2000:]
    assert sorted(p.name for p in (output / "data").iterdir()) == ["train-00000-of-00003-00000.parquet"]
    assert not (output / "README.md").exists()
    if fault.startswith("caption-shard"):
        assert (output / ".tips-caption" / "tmp" / "train-00001-of-00003-00000.0.parquet").is_file()
    first = (output / "data" / "train-00000-of-00003-00000.parquet").stat()
    resumed = _caption(blip_dir, image_folder, output, *ARGS, env=_env(tmp_path))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "11 rows captioned" in resumed.stdout and "(1 unreadable images left out), 3 shards" in resumed.stdout
    assert (output / "data" / "train-00000-of-00003-00000.parquet").stat().st_ino == first.st_ino  # not rewritten
    assert not (output / ".tips-caption" / "tmp").exists()
    assert _rows(output) == _rows(reference)
    stats = json.loads((output / "caption_stats.json").read_text())
    assert stats["train"]["model"] == str(blip_dir)
    want = json.loads((reference / "caption_stats.json").read_text())["train"]
    assert {k: v for k, v in stats["train"].items() if k != "data"} == {k: v for k, v in want.items() if k != "data"}


def test_resume_with_other_settings_is_refused(blip_dir, image_folder, reference, tmp_path):
    import shutil

    output = tmp_path / "out"
    shutil.copytree(reference, output)
    with pytest.raises(ValueError, match=r"other settings \(num_beams differ"):
        _call(blip_dir, image_folder, output, num_beams=2)


def test_two_processes_write_the_same_rows_as_one(blip_dir, image_folder, reference, tmp_path):
    output = tmp_path / "two"
    launcher = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
                str(ROOT / "training" / "accelerate_configs" / "cpu-2proc.yaml"), "--main_process_port", "29527"]
    run = _caption(blip_dir, image_folder, output, *ARGS, env=_env(tmp_path), launcher=launcher)
    assert run.returncode == 0, run.stderr[-3000:]
    assert _rows(output) == _rows(reference)
    # shards 0 and 2 were written by process 0, shard 1 by process 1
    assert (output / ".tips-caption" / "train" / "units" / "00001.json").is_file()


def test_streamed_parquet_shards_give_the_same_captions(blip_dir, reference, tmp_path):
    """The same images as 2 parquet files (6 + 5 rows), streamed: one unit per file, 4-row chunks inside."""
    import datasets

    rows = _rows(reference)
    features = datasets.Features({"img": datasets.Image(), "alt_text": datasets.Value("string")})
    for part, chunk in enumerate((rows[:6], rows[6:])):
        table = [{"img": {"bytes": r["image"], "path": None}, "alt_text": r["alt_text"]} for r in chunk]
        datasets.Dataset.from_list(table, features=features).to_parquet(str(tmp_path / f"part-{part}.parquet"))
    output = tmp_path / "out"
    result = _call(blip_dir, tmp_path / "part-*.parquet", output, streaming=True)
    assert (result.rows_read, result.captioned, result.skipped_images) == (NUM_IMAGES - 1, NUM_IMAGES - 1, 0)
    assert sorted(p.name for p in (output / "data").iterdir()) == [
        "train-00000-of-00002-00000.parquet", "train-00000-of-00002-00001.parquet",
        "train-00001-of-00002-00000.parquet", "train-00001-of-00002-00001.parquet"]
    got = _rows(output)
    assert [r["alt_text"] for r in got] == [r["alt_text"] for r in rows]
    # 3-image batches fall differently here (chunks of 4 + 2 and 4 + 1 rows): captions agree as in the per-image
    # check above
    for want, have in zip(rows, got):
        assert have["img"] == want["image"]
        for column in COLUMNS:
            assert have[column] == want[column]


def test_webdataset_tars_keep_their_keys(blip_dir, reference, tmp_path):
    """Webdataset shards (jpg/png + txt per key, one broken image): every column kept, broken sample counted."""
    import tarfile

    rows = _rows(reference)[:4]
    with tarfile.open(tmp_path / "shard-0.tar", "w") as tar:
        for i, row in enumerate(rows):
            image = row["image"] if i != 1 else b"broken"
            for extension, payload in (("png", image), ("txt", row["alt_text"].encode())):
                info = tarfile.TarInfo(f"sample{i}.{extension}")
                info.size = len(payload)
                tar.addfile(info, io.BytesIO(payload))
    result = _call(blip_dir, tmp_path / "shard-*.tar", tmp_path / "out")
    assert (result.rows_read, result.captioned, result.skipped_images) == (4, 3, 1)
    got = _rows(tmp_path / "out")
    assert [r["__key__"] for r in got] == ["sample0", "sample2", "sample3"]
    for have, want in zip(got, [rows[0], rows[2], rows[3]]):
        assert (have["png"], have["txt"]) == (want["image"], want["alt_text"])
        for column in COLUMNS:
            assert have[column] == want[column]


def test_prompt_is_not_repeated_in_the_caption(blip_dir):
    """BLIP with a text prompt returns [BOS] + prompt + continuation; the caption is the continuation only."""
    from transformers import AutoProcessor, BlipForConditionalGeneration

    from tips_hf.captioning import Captioner, CaptionTask

    captioner = Captioner(str(blip_dir))
    image = _images()[0]
    [caption] = captioner.caption([image], CaptionTask("c", "a photo of", 4))
    model = BlipForConditionalGeneration.from_pretrained(blip_dir).eval()
    processor = AutoProcessor.from_pretrained(blip_dir)
    full = model.generate(**processor(images=image, text="a photo of", return_tensors="pt"), max_new_tokens=4,
                          do_sample=False)
    # [BOS] a photo of = 4 tokens, then the 4 new ones
    assert full.shape[1] == 8
    assert caption == processor.decode(full[0, 4:], skip_special_tokens=True).strip()
    assert processor.decode(full[0], skip_special_tokens=True).startswith("a photo of")


CHAT = "USER: <image> Describe this image in one short sentence. ASSISTANT:"


@pytest.mark.parametrize(
    "builder, family, presets",
    [
        # a task-prompted decoder-only VLM: PaliGemma's documented "<image>" + task form
        ("tiny_paligemma", "paligemma", [("short", "caption en", "<image>caption en"),
                                         ("detailed", "describe en", "<image>describe en")]),
        # a chat VLM: the question goes through the processor's chat template
        ("tiny_llava", "chat", [("short", "Describe this image in one short sentence.", CHAT)]),
        # an encoder-decoder task-prompted VLM: the answer comes back without the prompt
        ("tiny_florence2", "florence2", [("short", "<CAPTION>", "<CAPTION>"),
                                         ("detailed", "<MORE_DETAILED_CAPTION>", "<MORE_DETAILED_CAPTION>")]),
    ],
)
def test_prompted_vlm_paths(builder, family, presets, tmp_path):
    """Tiny random PaliGemma / LLaVA / Florence-2 with their real processors: the preset prompts, batched generation,
    and the prompt (image tokens, [BOS], question) cut from each decoder-only answer; each caption equals that model's
    own generate() on the image alone (after the full prompt for decoder-only models)."""
    from tips_hf.captioning import Captioner, preset_task, tiny

    captioner = Captioner(getattr(tiny, builder)(tmp_path / builder))
    assert captioner.family == family
    images = _images()[:3]
    for preset, prompt, text in presets:
        task = preset_task(captioner.family, preset, "c", 6)
        assert task.prompt == prompt
        captions = captioner.caption(images, task)
        for image, caption in zip(images, captions):
            inputs = captioner.processor(images=image, text=text, return_tensors="pt")
            full = captioner.model.generate(**inputs, max_new_tokens=6, do_sample=False)
            answer = full[0] if family == "florence2" else full[0, inputs["input_ids"].shape[1]:]
            assert caption == captioner.processor.decode(answer, skip_special_tokens=True).strip()
            assert prompt not in caption
        assert len(set(captions)) > 1  # batched rows kept apart


def test_task_building_and_bad_input():
    from tips_hf.captioning import build_tasks, model_family, open_dataset

    assert model_family("blip", False) == "prompt-free"
    assert model_family("paligemma", False) == "paligemma"
    assert model_family("smolvlm", True) == "chat"
    tasks = build_tasks("paligemma", ["short", "detailed"])
    assert [(t.column, t.prompt) for t in tasks] == [("synthetic_caption_short", "caption en"),
                                                     ("synthetic_caption_detailed", "describe en")]
    [task] = build_tasks("florence2", ["detailed"], column="dense", max_new_tokens=64)
    assert (task.column, task.prompt, task.max_new_tokens) == ("dense", "<MORE_DETAILED_CAPTION>", 64)
    assert build_tasks("prompt-free", [], None)[0].column == "synthetic_caption"
    with pytest.raises(ValueError, match="unknown caption preset 'long'"):
        build_tasks("chat", ["long"])
    with pytest.raises(ValueError, match="either --prompt or --preset"):
        build_tasks("chat", ["short"], prompt="Describe.")
    with pytest.raises(ValueError, match="cannot tell the format"):
        open_dataset(__file__, "train")


@pytest.mark.slow
def test_captioned_images_train_tips(blip_dir, image_folder, tmp_path):
    """The README chain: images + alt-text → tips-caption → pretrain.py with data.synthetic_columns on the new
    columns (2 steps of a micro model)."""
    output = tmp_path / "captioned"
    run = _caption(blip_dir, image_folder, output, *ARGS, env=_env(tmp_path))
    assert run.returncode == 0, run.stderr[-3000:]
    config = tmp_path / "micro.yaml"
    config.write_text(
        "model:\n"
        "  vision: {hidden_size: 32, num_hidden_layers: 1, num_attention_heads: 2, intermediate_size: 64, "
        "image_size: 56}\n"
        "  text: {hidden_size: 32, num_hidden_layers: 1, num_attention_heads: 2, intermediate_size: 64}\n"
        f"data: {{source: hub, path: '{output}', global_size: 56, local_size: 28, num_local_crops: 2,\n"
        f"       synthetic_columns: [{', '.join(COLUMNS)}]}}\n"
        "objective: {head_prototypes: 16, patch_prototypes: 16, head_hidden_dim: 16, head_bottleneck_dim: 8}\n"
        "optim: {warmup_steps: 1}\n"
        "training: {max_steps: 2, batch_size: 4, logging_steps: 1, save_steps: 100, report_to: none, "
        "progress_bar: false}\n"
        "eval: {num_examples: 0}\n"
    )
    train = subprocess.run(
        [sys.executable, str(ROOT / "training" / "pretrain.py"), "--config", str(config), "--output_dir",
         str(tmp_path / "pretrain")], env=_env(tmp_path), capture_output=True, text=True, timeout=600, cwd=ROOT,
    )
    assert train.returncode == 0, train.stderr[-3000:]
    records = [json.loads(line) for line in (tmp_path / "pretrain" / "metrics.jsonl").read_text().splitlines()]
    losses = [r for r in records if "loss" in r]
    assert [r["step"] for r in losses] == [1, 2]
    assert all(np.isfinite(r["clip/synthetic_loss"]) and r["clip/synthetic_loss"] > 0 for r in losses)
    assert (tmp_path / "pretrain" / "final" / "model.safetensors").is_file()
