"""Pretraining building blocks (the configuration: test_config.py): schedules, masks, views, sampler, data sources, recipes."""

import io
import itertools
import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from tips_hf.pretraining import load_config
from tips_hf.pretraining.augment import MultiCropTransform, random_resized_crop_box
from tips_hf.pretraining.data import Collator, GlobalBatchSampler, PretrainingDataset, load_source
from tips_hf.pretraining.masking import MaskGenerator
from tips_hf.pretraining.meta_arch import TipsPretrainingModel
from tips_hf.pretraining.schedules import cosine, linear_warmup, step_values
from tips_hf.pretraining.trainer import build_student, build_tokenizer

MICRO = [
    "model.vision={hidden_size: 32, num_hidden_layers: 2, num_attention_heads: 2, intermediate_size: 64, image_size: 56}",
    "model.text={hidden_size: 32, num_hidden_layers: 2, num_attention_heads: 2, intermediate_size: 64}",
    "data.scene_image_size=56", "data.global_size=56", "data.local_size=28", "data.num_examples=64",
    "data.num_local_crops=2", "objective.head_prototypes=32", "objective.patch_prototypes=32", "objective.head_hidden_dim=32",
    "objective.head_bottleneck_dim=16",
]


# ------------------------------------------------------------------------------------------------------- schedules
def test_schedules_are_plain_functions_of_the_step():
    assert cosine(0, 100, 1.0, 0.0, warmup_steps=10) == 0.0
    assert cosine(5, 100, 1.0, 0.0, warmup_steps=10) == 0.5
    assert cosine(10, 100, 1.0, 0.0, warmup_steps=10) == 1.0
    assert math.isclose(cosine(55, 100, 1.0, 0.0, warmup_steps=10), 0.5)
    assert cosine(100, 100, 1.0, 0.0) == 0.0 and cosine(500, 100, 1.0, 0.0) == 0.0
    assert linear_warmup(0, 10, 0.04, 0.07) == 0.04 and linear_warmup(10, 10, 0.04, 0.07) == 0.07
    config = load_config(None, ["training.max_steps=100", "teacher.momentum=0.99"])
    values = step_values(config, 100)
    assert values["teacher_momentum"] == 1.0 and values["lr"] == config.optim.min_lr
    assert math.isclose(step_values(config, 0)["weight_decay"], config.optim.weight_decay)


def test_step_values_follow_each_schedule():
    """Every scheduled value of `step_values` at the steps that pin it: LR warm-up from 0 then cosine to min_lr,
    weight decay cosine 0.04 -> 0.2, teacher momentum cosine 0.994 -> 1, teacher temperature warm-up 0.04 -> 0.07
    over its own steps (distinct values and step counts, so a swapped start/end or schedule shows)."""
    config = load_config(None, ["training.max_steps=110", "optim.warmup_steps=10", "optim.lr=0.5", "optim.min_lr=0.1",
                                "optim.weight_decay=0.04", "optim.weight_decay_final=0.2", "teacher.momentum=0.994",
                                "teacher.momentum_final=1.0", "objective.teacher_temperature_warmup=0.04",
                                "objective.teacher_temperature=0.07", "objective.teacher_temperature_warmup_steps=20"])
    want = {
        0: {"lr": 0.0, "weight_decay": 0.04, "teacher_momentum": 0.994, "teacher_temperature": 0.04},
        5: {"lr": 0.25, "teacher_temperature": 0.0475},
        10: {"lr": 0.5, "teacher_temperature": 0.055},
        20: {"teacher_temperature": 0.07},
        60: {"lr": 0.3},  # halfway through the cosine after warm-up: (0.5 + 0.1) / 2
        55: {"weight_decay": 0.12, "teacher_momentum": 0.997},  # halfway through the run
        110: {"lr": 0.1, "weight_decay": 0.2, "teacher_momentum": 1.0, "teacher_temperature": 0.07},
        200: {"lr": 0.1, "weight_decay": 0.2, "teacher_momentum": 1.0},
    }
    for step, values in want.items():
        got = step_values(config, step)
        for key, value in values.items():
            assert got[key] == pytest.approx(value, abs=1e-12), (step, key, got[key])


# ----------------------------------------------------------------------------------------------------------- masks
@pytest.mark.parametrize("mode", ["random", "block"])
def test_mask_exact_count_and_determinism(mode):
    generator = MaskGenerator((8, 8), ratio=0.75, mode=mode)
    for seed in range(20):
        mask = generator(torch.Generator().manual_seed(seed))
        assert mask.dtype == torch.bool and mask.shape == (64,) and int(mask.sum()) == 48
    a = generator(torch.Generator().manual_seed(3))
    assert torch.equal(a, generator(torch.Generator().manual_seed(3)))


@pytest.mark.parametrize("mode", ["random", "block"])
def test_mask_count_rounds_and_masks_vary(mode):
    """round(0.75 · 25) = 19 masked patches of a 5 × 5 grid (not the floor, 18); different seeds mask different
    patches, and over seeds every patch is masked sometimes (random masks: and visible sometimes; blocks cover the
    centre of so small a grid nearly always)."""
    generator = MaskGenerator((5, 5), ratio=0.75, mode=mode)
    masks = torch.stack([generator(torch.Generator().manual_seed(seed)) for seed in range(40)])
    assert (masks.sum(1) == 19).all()
    assert len({tuple(m.tolist()) for m in masks}) > 30
    assert masks.any(0).all() and (mode == "block" or (~masks).any(0).all())


def test_block_masks_are_clustered():
    random, block = MaskGenerator((16, 16), 0.4, "random"), MaskGenerator((16, 16), 0.4, "block")

    def neighbours(mask):  # masked horizontal neighbour pairs
        grid = mask.reshape(16, 16)
        return int((grid[:, 1:] & grid[:, :-1]).sum())

    gens = [torch.Generator().manual_seed(s) for s in range(10)]
    assert sum(neighbours(block(g)) for g in gens) > 1.3 * sum(
        neighbours(random(torch.Generator().manual_seed(s))) for s in range(10)
    )


# ----------------------------------------------------------------------------------------------------------- views
def test_random_resized_crop_box_bounds():
    g = torch.Generator().manual_seed(0)
    for _ in range(50):
        top, left, h, w = random_resized_crop_box(100, 80, (0.05, 0.3), (3 / 4, 4 / 3), g)
        assert 0 <= top <= 100 - h and 0 <= left <= 80 - w and 0.04 * 8000 <= h * w <= 0.32 * 8000


def test_multicrop_shapes_and_determinism():
    image = Image.fromarray((np.random.RandomState(0).rand(70, 90, 3) * 255).astype(np.uint8))
    transform = MultiCropTransform(56, 28, 3)
    a = transform(image, torch.Generator().manual_seed(1))
    b = transform(image, torch.Generator().manual_seed(1))
    c = transform(image, torch.Generator().manual_seed(2))
    assert a["global_crop"].shape == (3, 56, 56) and a["global_crop"].dtype == torch.uint8
    assert a["local_crops"].shape == (3, 3, 28, 28)
    assert torch.equal(a["global_crop"], b["global_crop"]) and torch.equal(a["local_crops"], b["local_crops"])
    assert not torch.equal(a["global_crop"], c["global_crop"])


# --------------------------------------------------------------------------------------------------------- sampler
def test_global_batches_identical_for_one_or_two_processes():
    one = iter(GlobalBatchSampler(40, 8, seed=3))
    ranks = [iter(GlobalBatchSampler(40, 4, rank=r, world_size=2, seed=3)) for r in (0, 1)]
    for _ in range(12):  # crosses epochs (5 global batches per epoch)
        assert next(one) == next(ranks[0]) + next(ranks[1])
    resumed = iter(GlobalBatchSampler(40, 8, seed=3, start_batch=7))
    fresh = iter(GlobalBatchSampler(40, 8, seed=3))
    for _ in range(7):
        next(fresh)
    assert next(resumed) == next(fresh)
    epoch = iter(GlobalBatchSampler(40, 8, seed=3))
    seen = [i for _ in range(5) for _, i in next(epoch)]
    assert sorted(seen) == list(range(40))  # an epoch visits every sample once
    with pytest.raises(ValueError, match="fewer than one global batch"):
        GlobalBatchSampler(6, 4, world_size=2)


def test_views_depend_on_the_epoch():
    """The same sample in another epoch gets other crops and another mask (its generator is seeded by (seed, epoch,
    index)); the same key always the same views."""
    config = load_config(None, MICRO)
    dataset = PretrainingDataset(load_source(config.data), config.data, config.objective, seed=1)
    first, again, later = dataset[(0, 3)], dataset[(0, 3)], dataset[(1, 3)]
    assert torch.equal(first["global_crop"], again["global_crop"]) and torch.equal(first["mask"], again["mask"])
    assert not torch.equal(first["global_crop"], later["global_crop"])
    assert not torch.equal(first["mask"], later["mask"])
    assert not torch.equal(first["global_crop"], dataset[(0, 4)]["global_crop"])


def _png(array):
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def test_imagefolder_parquet_and_corrupt_images(tmp_path):
    config = load_config(None, [*MICRO, "data.source=imagefolder", f"data.path={tmp_path / 'folder'}",
                                "data.alt_text_column=alt", "data.synthetic_columns=[dense]"])
    folder = tmp_path / "folder"
    folder.mkdir()
    rows = []
    for i in range(6):
        name = f"{i}.png"
        if i == 2:
            (folder / name).write_bytes(b"not an image")  # corrupt
        else:
            (folder / name).write_bytes(_png(np.full((30, 40, 3), 40 * i, np.uint8)))
        rows.append({"file_name": name, "alt": f"alt {i}", "dense": f"a dense caption {i}"})
    (folder / "metadata.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    source = load_source(config.data)
    assert len(source) == 6
    dataset = PretrainingDataset(source, config.data, config.objective)
    sample = dataset[(0, 2)]  # the corrupt one: replaced by the next readable image, and counted
    assert sample["skipped"] == 1 and sample["alt_text"] == "alt 3"
    assert dataset[(0, 1)]["skipped"] == 0 and dataset[(0, 1)]["synthetic"] == "a dense caption 1"

    import datasets

    datasets.Dataset.from_list(
        [{"img": {"bytes": _png(np.zeros((20, 20, 3), np.uint8)), "path": None}, "t": "x", "s": ["y", "z"], "n": 1}] * 4,
        features=datasets.Features({"img": datasets.Image(), "t": datasets.Value("string"), "n": datasets.Value("int64"),
                                    "s": datasets.Sequence(datasets.Value("string"))}),
    ).to_parquet(tmp_path / "d.parquet")
    config = load_config(None, [*MICRO, "data.source=parquet", f"data.path={tmp_path / 'd.parquet'}",
                                "data.image_column=img", "data.alt_text_column=t", "data.synthetic_columns=[s]"])
    dataset = PretrainingDataset(load_source(config.data), config.data, config.objective)
    assert dataset[(0, 0)]["synthetic"] in ("y", "z") and dataset[(0, 0)]["global_crop"].shape == (3, 56, 56)
    # columns the recipe does not read are dropped (never decoded); fine-tuning asks for its label column
    assert load_source(config.data).column_names == ["img", "t", "s"]
    assert load_source(config.data, extra_columns=["img"]).column_names == ["img", "t", "s"]
    config.data.alt_text_column = "missing"
    with pytest.raises(ValueError, match=r"column\(s\) \['missing'\] not in the dataset"):
        load_source(config.data)


def test_collator_stacks_alt_then_synthetic():
    config = load_config(None, MICRO)
    tokenizer = build_tokenizer(config)
    dataset = PretrainingDataset(load_source(config.data), config.data, config.objective)
    samples = [dataset[(0, i)] for i in range(3)]
    batch = Collator(tokenizer, ["alt_text", "synthetic"], 64)(samples)
    assert batch["global_crop"].shape == (3, 3, 56, 56) and batch["mask"].shape == (3, 16)
    assert batch["input_ids"].shape[0] == 6
    want = tokenizer([s["synthetic"] for s in samples], padding="longest", return_tensors="pt")["input_ids"]
    got = batch["input_ids"][3:, : want.shape[1]]
    assert torch.equal(got, want)


# --------------------------------------------------------------------------------------------------------- recipes
def _batch(config, tokenizer, streams):
    dataset = PretrainingDataset(load_source(config.data), config.data, config.objective)
    batch = Collator(tokenizer, streams, 64)([dataset[(0, i)] for i in range(4)])
    batch.pop("skipped")
    from tips_hf.pretraining.data import to_device

    return to_device(batch, config.data, torch.device("cpu"))


@pytest.mark.parametrize(
    "overrides, logged",
    [
        (["objective.recipe=v2"], {"clip/loss", "distill", "mask"}),
        (["objective.recipe=v1"], {"clip/loss", "distill", "mask"}),
        (["objective.distill_weight=0", "objective.mask_weight=0"], {"clip/loss"}),
        (["objective.use_synthetic=false", "objective.distill_weight=0", "objective.mask_weight=0"],
         {"clip/alt_text_loss"}),
        (["objective.contrastive=sigmoid", "objective.centering=sinkhorn", "objective.mask_mode=block",
          "objective.koleo_weight=0.1", "objective.share_heads=true"], {"clip/loss", "distill", "mask", "koleo"}),
    ],
)
def test_recipes_forward_backward(overrides, logged):
    torch.manual_seed(0)
    config = load_config(None, [*MICRO, *overrides])
    tokenizer = build_tokenizer(config)
    module = TipsPretrainingModel(build_student(config, len(tokenizer)), config)
    module.freeze_unused()
    module.train()
    out = module(_batch(config, tokenizer, module.caption_streams if module.use_clip else []), 0.04)
    assert logged <= set(out.logs) and torch.isfinite(out.loss)
    out.loss.backward()
    trainable = [(n, p) for n, p in module.named_parameters() if p.requires_grad]
    missing = [n for n, p in trainable if p.grad is None]
    assert not missing, missing  # freeze_unused leaves no trainable parameter without a gradient (DDP-safe)
    assert all(not n.startswith("teacher_") for n, _ in trainable)
    parts = {"clip/loss": config.objective.clip_weight, "distill": config.objective.distill_weight,
             "mask": config.objective.mask_weight, "koleo": config.objective.koleo_weight}
    expected = sum(w * out.logs[k] for k, w in parts.items() if k in out.logs and w > 0)
    if "clip/loss" not in out.logs:
        expected += out.logs["clip/alt_text_loss"]
    assert math.isclose(out.logs["loss"], expected, rel_tol=1e-5)


def test_teacher_ema_and_parameter_groups():
    config = load_config(None, [*MICRO, "objective.recipe=v1"])
    tokenizer = build_tokenizer(config)
    module = TipsPretrainingModel(build_student(config, len(tokenizer)), config)
    with torch.no_grad():
        for p in module.student.vision_model.parameters():
            p.add_(1.0)
    before = module.teacher_vision.embeddings.cls_token.clone()
    student = module.student.vision_model.embeddings.cls_token.clone()
    module.update_teacher(0.9)
    torch.testing.assert_close(module.teacher_vision.embeddings.cls_token, 0.9 * before + 0.1 * student)
    assert not any(p.requires_grad for p in module.teacher_vision.parameters())
    groups = module.parameter_groups(0.05)
    no_decay = {id(p) for p in groups[1]["params"]}
    named = dict(module.named_parameters())
    for name in ("student.log_temperature", "student.vision_model.embeddings.cls_token",
                 "student.vision_model.embeddings.position_embeddings", "student.vision_model.layernorm.weight",
                 "student.vision_model.encoder.layers.0.attention.qkv.bias"):
        assert id(named[name]) in no_decay, name
    assert id(named["student.vision_model.encoder.layers.0.attention.qkv.weight"]) not in no_decay
    assert groups[0]["weight_decay"] == 0.05 and groups[1]["weight_decay"] == 0.0


def test_streaming_source_resumes_and_skips_corrupt(tmp_path):
    import datasets

    from tips_hf.pretraining.data import StreamingPretrainingDataset

    rows = []
    for i in range(10):
        image = b"broken" if i == 4 else _png(np.full((20, 20, 3), 20 * i, np.uint8))
        rows.append({"img": {"bytes": image, "path": None}, "t": f"alt {i}", "s": [f"syn {i}"]})
    features = datasets.Features({"img": datasets.Image(), "t": datasets.Value("string"),
                                  "s": datasets.Sequence(datasets.Value("string"))})
    datasets.Dataset.from_list(rows, features=features).to_parquet(tmp_path / "d.parquet")
    config = load_config(None, [*MICRO, "data.source=parquet", f"data.path={tmp_path / 'd.parquet'}",
                                "data.streaming=true", "data.image_column=img", "data.alt_text_column=t",
                                "data.synthetic_columns=[s]"])
    source = load_source(config.data)

    def take(start, n, position=(0, 0, 0)):
        stream = StreamingPretrainingDataset(source, config.data, config.objective, seed=1, shuffle_buffer=4,
                                             start_positions=[position])
        return list(itertools.islice(stream, n))

    full = take(0, 14)  # the stream never ends: 9 readable images per pass, reshuffled every pass
    first, second = full[:9], full[9:]
    assert sum(s["skipped"] for s in first) == 1  # the broken image: skipped and counted
    assert len({s["alt_text"] for s in first}) == 9 and "alt 4" not in {s["alt_text"] for s in first}
    assert [s["stream_position"][1] for s in full] == [0] * 9 + [1] * 5  # (worker, pass, rows, samples)
    assert [s["stream_position"][3] for s in full] == list(range(1, 15))
    assert [s["alt_text"] for s in second] != [s["alt_text"] for s in first[:5]]  # a new order in pass 1
    for start in (3, 6, 10):  # resume before, after the broken row, and in the second pass
        resumed = take(start, 3, full[start - 1]["stream_position"][1:])
        for a, b in zip(resumed, full[start:start + 3], strict=True):
            assert a["alt_text"] == b["alt_text"] and torch.equal(a["global_crop"], b["global_crop"])
            assert torch.equal(a["mask"], b["mask"])
    two = [StreamingPretrainingDataset(source, config.data, config.objective, seed=1, rank=r, world_size=2,
                                       shuffle_buffer=0) for r in (0, 1)]
    seen = [s["alt_text"] for stream in two for s in itertools.takewhile(lambda s: s["stream_position"][1] == 0,
                                                                           stream)]
    assert sorted(seen) == sorted(f"alt {i}" for i in range(10) if i != 4)  # the processes split the stream
