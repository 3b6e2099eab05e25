"""Tests of the embedded spatial-scenes dataset (tips_hf.data.scenes)."""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tips_hf.data import (
    CLASS_NAMES,
    COLOR_RGB,
    COLORS,
    POSITION_PHRASES,
    SHAPES,
    SIZE_WORDS,
    SceneConfig,
    SpatialScenes,
    load_scenes_dataset,
    save_preview,
    scene_prompts,
)

SCENES_FILE = Path(__file__).resolve().parent.parent / "tips_hf" / "data" / "scenes.py"
SHAPE_WORD = re.compile(r"\b(" + "|".join(SHAPES) + r")\b", re.IGNORECASE)


@pytest.fixture(scope="module")
def train():
    scenes = SpatialScenes("train", num_examples=200)
    return scenes, [scenes[i] for i in range(len(scenes))]


def digest(example: dict) -> str:
    """Hash of everything an example carries (image, masks, texts, objects)."""
    h = hashlib.sha256(np.asarray(example["image"]).tobytes())
    h.update(example["class_mask"].tobytes())
    h.update(example["depth"].tobytes())
    texts = [example["alt_text"], example["synthetic_caption"], *example["synthetic_captions"], example["label"]]
    h.update(json.dumps([texts, example["objects"]], sort_keys=True).encode())
    return h.hexdigest()


def cell_of(x: float, y: float) -> tuple[int, int]:
    # Independent of the module's grid_cell on purpose.
    return min(int(np.floor(y * 3)), 2), min(int(np.floor(x * 3)), 2)


# ----------------------------------------------------------------------------------------------------- determinism


def test_same_item_twice_and_recreated_object():
    scenes = SpatialScenes("train", num_examples=50, seed=3)
    first = digest(scenes[5])
    assert digest(scenes[5]) == first
    assert digest(SpatialScenes("train", num_examples=50, seed=3)[5]) == first
    # The example depends on the index only, not on the length of the dataset or on what was generated before.
    assert digest(SpatialScenes("train", num_examples=1000, config=SceneConfig(seed=3))[5]) == first
    assert digest(scenes[-45]) == first
    # ...and it really depends on the seed and the index.
    assert digest(SpatialScenes("train", num_examples=50, seed=4)[5]) != first
    assert digest(scenes[6]) != first


def test_same_item_in_fresh_process():
    # Load scenes.py on its own in a new process, skipping the slow tips_hf / transformers / torch imports: torch is
    # only the Dataset base class there and a stub stands in for it (rendering must not depend on torch anyway).
    code = (
        "import hashlib, importlib.util, json, sys, types\n"
        "import numpy as np\n"
        "torch = types.ModuleType('torch')\n"
        "torch.utils = types.SimpleNamespace(data=types.SimpleNamespace(Dataset=object))\n"
        "sys.modules['torch'] = torch\n"
        f"spec = importlib.util.spec_from_file_location('fresh_scenes', {str(SCENES_FILE)!r})\n"
        "module = importlib.util.module_from_spec(spec); sys.modules['fresh_scenes'] = module\n"
        "spec.loader.exec_module(module)\n"
        "scenes = module.SpatialScenes('validation', num_examples=40, seed=7)\n"
        "out = []\n"
        "for i in (5, 31):\n"
        "    e = scenes[i]\n"
        "    out.append([hashlib.sha256(np.asarray(e['image']).tobytes() + e['class_mask'].tobytes()"
        " + e['depth'].tobytes()).hexdigest(), e['alt_text'], e['synthetic_captions']])\n"
        "print(json.dumps(out))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    fresh = json.loads(result.stdout.strip().splitlines()[-1])
    scenes = SpatialScenes("validation", num_examples=40, seed=7)
    for (image_hash, alt_text, captions), i in zip(fresh, (5, 31)):
        e = scenes[i]
        here = hashlib.sha256(np.asarray(e["image"]).tobytes() + e["class_mask"].tobytes() + e["depth"].tobytes())
        assert image_hash == here.hexdigest()
        assert alt_text == e["alt_text"]
        assert captions == e["synthetic_captions"]


def test_train_and_validation_are_disjoint(train):
    _, train_examples = train
    validation = SpatialScenes("validation", num_examples=200)
    train_hashes = {hashlib.sha256(np.asarray(e["image"]).tobytes()).hexdigest() for e in train_examples}
    val_hashes = {hashlib.sha256(np.asarray(validation[i]["image"]).tobytes()).hexdigest() for i in range(200)}
    assert len(train_hashes) == 200 and len(val_hashes) == 200  # no repeats within a split either
    assert not train_hashes & val_hashes
    # Index i of the two splits differs (different split ids, not an offset of the same stream).
    assert np.asarray(validation[0]["image"]).tobytes() != np.asarray(train_examples[0]["image"]).tobytes()


# -------------------------------------------------------------------------------------------------------- structure


@pytest.mark.parametrize("image_size", [56, 112])
def test_keys_types_and_shapes(image_size):
    scenes = SpatialScenes("test", num_examples=10, image_size=image_size, max_objects=5)
    assert len(scenes) == 10
    for i in range(10):
        e = scenes[i]
        assert set(e) == {
            "image",
            "alt_text",
            "synthetic_caption",
            "synthetic_captions",
            "label",
            "class_mask",
            "depth",
            "objects",
        }
        assert isinstance(e["image"], Image.Image) and e["image"].mode == "RGB"
        assert e["image"].size == (image_size, image_size)
        assert isinstance(e["alt_text"], str) and isinstance(e["synthetic_caption"], str)
        assert isinstance(e["synthetic_captions"], list) and len(e["synthetic_captions"]) == 2
        assert all(isinstance(c, str) and c for c in e["synthetic_captions"])
        assert e["synthetic_captions"][1] == e["synthetic_caption"]
        assert len(e["synthetic_captions"][0]) < len(e["synthetic_caption"])
        assert type(e["label"]) is int and 1 <= e["label"] <= len(SHAPES)
        for key in ("class_mask", "depth"):
            assert isinstance(e[key], np.ndarray) and e[key].dtype == np.uint8
            assert e[key].shape == (image_size, image_size)
        assert e["class_mask"].max() <= len(SHAPES)
        assert 1 <= len(e["objects"]) <= 5
        assert e["depth"].max() == len(e["objects"])
        for d, obj in enumerate(e["objects"], start=1):
            assert obj["shape"] in SHAPES and obj["color"] in COLORS and obj["size"] in SIZE_WORDS
            assert obj["depth"] == d
            x, y = obj["center"]
            assert 0.0 <= x <= 1.0 and 0.0 <= y <= 1.0
            x0, y0, x1, y1 = obj["bbox"]
            assert 0 <= x0 < x1 <= image_size and 0 <= y0 < y1 <= image_size
            assert x0 / image_size <= x <= x1 / image_size and y0 / image_size <= y <= y1 / image_size
            assert 0 < obj["visible_pixels"] <= obj["area"] <= (x1 - x0) * (y1 - y0)


def test_object_count_range():
    counts = [len(SpatialScenes("train", 30, min_objects=3, max_objects=3)[i]["objects"]) for i in range(30)]
    assert counts == [3] * 30
    counts = {len(SpatialScenes("train", 60, min_objects=1, max_objects=4)[i]["objects"]) for i in range(60)}
    assert counts == {1, 2, 3, 4}


def test_out_of_range_index():
    scenes = SpatialScenes("train", num_examples=3)
    with pytest.raises(IndexError):
        scenes[3]
    with pytest.raises(IndexError):
        scenes[-4]
    assert len(list(iter(scenes[i] for i in range(len(scenes))))) == 3


# ---------------------------------------------------------------------------------------------------- dense labels


def test_masks_consistent_with_objects(train):
    scenes, examples = train
    overlapping_pixels = 0
    for i, e in enumerate(examples[:60]):
        objects, class_mask, depth = e["objects"], e["class_mask"], e["depth"]
        silhouettes = scenes.object_masks(i)
        assert silhouettes.shape == (len(objects), *depth.shape) and silhouettes.dtype == bool
        # Visible pixel counts are the depth-mask counts; the class mask is the class of the object at that depth.
        for obj in objects:
            assert np.count_nonzero(depth == obj["depth"]) == obj["visible_pixels"]
            assert np.all(class_mask[depth == obj["depth"]] == SHAPES.index(obj["shape"]) + 1)
            assert np.count_nonzero(silhouettes[obj["depth"] - 1]) == obj["area"]
            ys, xs = np.nonzero(silhouettes[obj["depth"] - 1])
            assert obj["bbox"] == (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
        for c in range(len(CLASS_NAMES)):
            expected = sum(o["visible_pixels"] for o in objects if SHAPES.index(o["shape"]) + 1 == c)
            if c == 0:
                expected = depth.size - sum(o["visible_pixels"] for o in objects)
            assert np.count_nonzero(class_mask == c) == expected
        np.testing.assert_array_equal(depth == 0, class_mask == 0)
        # Where silhouettes overlap, the pixel belongs to the nearest (highest depth) of them.
        order = np.arange(1, len(objects) + 1, dtype=np.uint8)[:, None, None]
        np.testing.assert_array_equal(depth, (silhouettes * order).max(axis=0))
        overlapping_pixels += int(np.count_nonzero(silhouettes.sum(axis=0) >= 2))
        # No object is mostly hidden.
        assert all(o["visible_pixels"] >= 0.5 * o["area"] for o in objects)
    assert overlapping_pixels > 500  # occlusion does happen


def test_label_is_largest_visible_object(train):
    _, examples = train
    for e in examples:
        largest = max(e["objects"], key=lambda o: o["visible_pixels"])
        assert e["label"] == CLASS_NAMES.index(largest["shape"])
        assert np.count_nonzero(e["class_mask"] == e["label"]) >= largest["visible_pixels"]
    assert len({e["label"] for e in examples}) == len(SHAPES)


def test_backgrounds_are_textured(train):
    _, examples = train
    spreads, textures = [], set()
    for e in examples[:80]:
        pixels = np.asarray(e["image"], dtype=np.float32)[e["class_mask"] == 0]
        spreads.append(pixels.std(axis=0).mean())
        textures.add(e["synthetic_caption"].rsplit("the background is ", 1)[1])
    assert np.median(spreads) > 12.0  # far from flat colour
    assert textures == {"a smooth gradient.", "striped.", "checkered.", "mottled."}


# ----------------------------------------------------------------------------------------------------------- texts


def clauses_of(caption: str) -> list[str]:
    body, background = caption.rsplit(". the background is ", 1)
    assert background.endswith(".")
    return body.split("; ")


def test_detailed_caption_is_truthful(train):
    scenes, examples = train
    relations = 0
    for i, e in enumerate(examples[:100]):
        objects = e["objects"]
        clauses = clauses_of(e["synthetic_caption"])
        assert len(clauses) == len(objects)
        for obj in objects:
            position = POSITION_PHRASES[cell_of(*obj["center"])]
            assert obj["position"] == position
            head = f"a {obj['size']} {obj['color']} {obj['shape']} {position}"
            assert any(c == head or c.startswith(head + ",") for c in clauses), (head, clauses)
        # Relations: "partly hidden behind X" names a nearer object, "in front of X" a farther one, and only
        # objects whose silhouettes overlap are related.
        silhouettes = scenes.object_masks(i)
        for clause in clauses:
            subjects = [
                o for o in objects if clause.startswith(f"a {o['size']} {o['color']} {o['shape']} {o['position']}")
            ]
            assert subjects
            for relation, nearer in (("partly hidden behind ", True), ("in front of ", False)):
                if relation not in clause:
                    continue
                relations += 1
                named = clause.split(relation, 1)[1].split(", in front of ")[0]
                for item in re.split(r", | and ", named):
                    matches = [
                        o
                        for o in objects
                        if item in (f"the {o['color']} {o['shape']}", f"the {o['size']} {o['color']} {o['shape']}")
                    ]
                    assert matches, (item, clause)
                    if len(matches) > 1 or len(subjects) > 1:
                        continue  # identical twins: cannot tell which is meant
                    (obj,), (subject,) = matches, subjects
                    assert (obj["depth"] > subject["depth"]) == nearer
                    assert np.any(silhouettes[obj["depth"] - 1] & silhouettes[subject["depth"] - 1])
        # The short caption names every object, without positions.
        short = e["synthetic_captions"][0]
        for obj in objects:
            assert f"{obj['color']} {obj['shape']}" in short
        assert not any(phrase in short for phrase in POSITION_PHRASES.values())
    assert relations >= 10


def test_alt_text_is_noisy(train):
    _, examples = train
    alts = [e["alt_text"] for e in examples]
    no_shape = sum(not SHAPE_WORD.search(a) for a in alts)
    assert no_shape >= 0.2 * len(alts)
    assert sum(bool(SHAPE_WORD.search(a)) for a in alts) >= 0.2 * len(alts)  # but often informative
    assert any(a == "" for a in alts)
    assert any(re.search(r"\.(jpe?g|png)$", a, re.IGNORECASE) for a in alts)
    assert len(set(alts)) > 50
    # Alt-text never carries the layout, and is much shorter than the dense caption.
    assert not any(p in a.lower() for a in alts for p in POSITION_PHRASES.values())
    assert np.mean([len(a) for a in alts]) < 0.3 * np.mean([len(e["synthetic_caption"]) for e in examples])


def test_scene_prompts():
    prompts = scene_prompts()
    assert tuple(prompts) == CLASS_NAMES
    assert prompts["background"] == "a textured background" and prompts["circle"] == "a circle"
    photo = scene_prompts("a photo of a {}.")
    assert photo["star"] == "a photo of a star." and photo["background"] == "a textured background"
    with pytest.raises(ValueError, match="template"):
        scene_prompts("a photo")


def test_constants():
    assert 6 <= len(SHAPES) <= 8 and len(set(SHAPES)) == len(SHAPES)
    assert CLASS_NAMES == ("background", *SHAPES)
    assert set(COLORS) == set(COLOR_RGB) and all(len(rgb) == 3 for rgb in COLOR_RGB.values())


# ---------------------------------------------------------------------------------------------------- datasets view


def test_hf_dataset_matches_torch_dataset(tmp_path):
    import datasets

    ds = load_scenes_dataset("validation", num_examples=6, image_size=56, seed=2)
    scenes = SpatialScenes("validation", num_examples=6, image_size=56, seed=2)
    assert isinstance(ds, datasets.Dataset) and len(ds) == 6
    assert ds.features["label"].names == list(CLASS_NAMES)
    assert isinstance(ds.features["image"], datasets.Image) and ds.features["class_mask"].mode == "L"
    assert ds.cache_files == []  # built in memory: nothing written to any cache
    for i in (0, 3, 5):
        row, e = ds[i], scenes[i]
        np.testing.assert_array_equal(np.asarray(row["image"].convert("RGB")), np.asarray(e["image"]))
        np.testing.assert_array_equal(np.asarray(row["class_mask"]), e["class_mask"])
        np.testing.assert_array_equal(np.asarray(row["depth"]), e["depth"])
        assert row["label"] == e["label"]
        assert row["alt_text"] == e["alt_text"] and row["synthetic_captions"] == e["synthetic_captions"]
        assert row["synthetic_caption"] == e["synthetic_caption"]

    # With a cache folder, different configurations never share files, and the same one is reused.
    cached = load_scenes_dataset("validation", num_examples=6, cache_dir=tmp_path, image_size=56, seed=2)
    other = load_scenes_dataset("validation", num_examples=6, cache_dir=tmp_path, image_size=56, seed=3)
    again = load_scenes_dataset("validation", num_examples=6, cache_dir=tmp_path, image_size=56, seed=2)
    assert cached.cache_files and cached.cache_files == again.cache_files != other.cache_files
    assert str(tmp_path) in cached.cache_files[0]["filename"]
    assert np.array_equal(np.asarray(cached[4]["image"]), np.asarray(scenes[4]["image"]))
    assert not np.array_equal(np.asarray(other[4]["image"]), np.asarray(scenes[4]["image"]))


# -------------------------------------------------------------------------------------------------------- arguments


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"split": "dev"}, "split"),
        ({"num_examples": 0}, "num_examples"),
        ({"image_size": 100}, "image_size"),
        ({"image_size": 0}, "image_size"),
        ({"image_size": -14}, "image_size"),
        ({"min_objects": 0}, "min_objects"),
        ({"min_objects": 3, "max_objects": 2}, "max_objects"),
        ({"max_objects": 9}, "max_objects"),
        ({"seed": -1}, "seed"),
        ({"supersample": 0}, "supersample"),
        ({"min_visible_fraction": 1.5}, "min_visible_fraction"),
        ({"max_noise_std": -1.0}, "max_noise_std"),
        ({"object_scale": 3.0}, "object_scale"),
        ({"background_contrast": 1.5}, "background_contrast"),
        ({"colour": "red"}, "colour"),
    ],
)
def test_bad_arguments_raise_value_error_naming_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        SpatialScenes(**kwargs)
    with pytest.raises(ValueError, match=field):
        load_scenes_dataset(**{"split": "train", "num_examples": 2, **kwargs})


def test_bad_config_object():
    with pytest.raises(ValueError, match="image_size"):
        SceneConfig(image_size=113)
    with pytest.raises(ValueError, match="config"):
        SpatialScenes("train", 10, config={"image_size": 112})


def test_save_preview(tmp_path):
    path = tmp_path / "sub" / "preview.png"
    save_preview(path, rows=2, cols=2, scale=1, image_size=56)
    picture = Image.open(path)
    assert picture.mode == "RGB"
    assert picture.size == (2 * (2 * 56 + 4) + 8, 2 * 56 + 4)
    array = np.asarray(picture)
    np.testing.assert_array_equal(array[:56, :56], np.asarray(SpatialScenes("train", 4, image_size=56)[0]["image"]))


def test_object_scale_and_background_contrast():
    """The toy-scale knobs: objects grow with `object_scale` (captions keep their size words), the texture's
    amplitude follows `background_contrast`, and the defaults leave the scenes unchanged."""
    default = SpatialScenes("train", 40, image_size=56, max_objects=2)
    explicit = SpatialScenes("train", 40, image_size=56, max_objects=2, object_scale=1.0, background_contrast=1.0)
    assert np.array_equal(np.asarray(default[3]["image"]), np.asarray(explicit[3]["image"]))
    big = SpatialScenes("train", 40, image_size=56, max_objects=2, object_scale=1.6)
    area = [np.mean([o["area"] for o in scenes[i]["objects"]]) for scenes in (default, big) for i in range(40)]
    # Diameters x1.6 (capped at 0.96 of the side): areas grow ~2.3x on average.
    assert np.mean(area[40:]) > 1.8 * np.mean(area[:40])
    assert all(o["size"] in SIZE_WORDS for i in range(40) for o in big[i]["objects"])
    flat = SpatialScenes("train", 40, image_size=56, max_objects=1, background_contrast=0.0)
    for i in range(5):
        example = flat[i]
        background = np.asarray(example["image"]).astype(float)[example["class_mask"] == 0]
        # Only the lighting gradient (±10 %) and pixel noise remain: a small spread per channel.
        assert background.std(axis=0).max() < 15.0
