"""`tips-eval --task retrieval --data FOLDER` on the layouts `datasets` loads, besides Karpathy JSON: an imagefolder
whose metadata.jsonl lists the captions of each image (with or without split folders), `save_to_disk` folders
(one dataset or a DatasetDict) and data files; the columns named by options; a missing column is an error that lists
the columns found. Each layout holds the same images and captions as a Karpathy file and must score exactly as it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import save_tiny_model
from PIL import Image

from tips_hf.evaluation import main

SIZE = 56
PAIRS = [  # (colour, captions of the image)
    ((220, 30, 30), ["a red square", "red", "a photo of something red"]),
    ((30, 200, 40), ["green grass", "a green image"]),
    ((20, 40, 210), ["blue sky", "the colour blue", "a blue picture", "blue"]),
    ((230, 220, 20), ["yellow"]),
]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return save_tiny_model(tmp_path_factory.mktemp("tiny_tips"), SIZE, text_layers=1)


@pytest.fixture(scope="module")
def karpathy(model_dir, tmp_path_factory):
    """The reference: the pairs as a Karpathy JSON (test split) and its result."""
    root = tmp_path_factory.mktemp("flickr")
    images = []
    for index, (colour, captions) in enumerate(PAIRS):
        Image.new("RGB", (SIZE, SIZE), colour).save(root / f"{index}.png")
        images.append({"filename": f"{index}.png", "split": "test", "sentences": [{"raw": c} for c in captions]})
    (root / "dataset_flickr30k.json").write_text(json.dumps({"images": images}))
    return _run(model_dir, root, root / "result.json")


def _run(model_dir, data, output: Path, *args: str) -> dict:
    argv = ["--model", str(model_dir), "--task", "retrieval", "--data", str(data), "--output", str(output),
            "--no-progress", "--device", "cpu", *args]
    assert main(argv) == 0
    return json.loads(output.read_text())


def _error(capsys, model_dir, data, *args: str) -> str:
    assert main(["--model", str(model_dir), "--task", "retrieval", "--data", str(data), "--no-progress", *args]) == 2
    printed = capsys.readouterr()
    assert "Traceback" not in printed.err
    return printed.err


def _imagefolder(folder: Path, column: str = "captions", extra_rows: int = 0) -> Path:
    """The pairs as images + metadata.jsonl (a list of captions an image) in `folder`; `extra_rows` more images."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = list(PAIRS) + [((0, 0, 0), ["black"])] * extra_rows
    with open(folder / "metadata.jsonl", "w") as handle:
        for index, (colour, captions) in enumerate(rows):
            Image.new("RGB", (SIZE, SIZE), colour).save(folder / f"{index}.png")
            handle.write(json.dumps({"file_name": f"{index}.png", column: captions}) + "\n")
    return folder


def test_imagefolder_with_split_folders(model_dir, karpathy, tmp_path):
    root = tmp_path / "flickr-hf"
    _imagefolder(root / "test")
    _imagefolder(root / "train", extra_rows=2)  # not scored: --split defaults to test
    result = _run(model_dir, root, tmp_path / "a.json")
    assert (result["split"], result["num_examples"], result["num_texts"]) == ("test", 4, 10)
    assert result["metrics"] == pytest.approx(karpathy["metrics"])
    assert _run(model_dir, root, tmp_path / "b.json", "--split", "train")["num_examples"] == 6


def test_imagefolder_of_one_split_and_named_columns(model_dir, karpathy, tmp_path, capsys):
    root = _imagefolder(tmp_path / "flat", column="descriptions")  # no split folders: `datasets` calls it train
    result = _run(model_dir, root, tmp_path / "a.json", "--text-column", "descriptions", "--image-column", "image")
    assert (result["split"], result["num_texts"]) == ("train", 10)
    assert result["metrics"] == pytest.approx(karpathy["metrics"])
    # a column that is not there, given or guessed: the error lists the columns found and the option to pass
    err = _error(capsys, model_dir, root, "--text-column", "caption")
    assert "tips-eval: error: --text-column caption: no such caption column; columns found: image, descriptions" in err
    err = _error(capsys, model_dir, root)
    assert ("no caption column (looked for caption, captions, sentences, text, raw); columns found: image, "
            "descriptions — pass --text-column NAME") in err
    err = _error(capsys, model_dir, root, "--text-column", "descriptions", "--image-column", "picture")
    assert "--image-column picture: no such image column; columns found: image, descriptions" in err
    # an explicit split that the folder does not have is refused, naming the splits there are
    err = _error(capsys, model_dir, root, "--text-column", "descriptions", "--split", "test")
    assert "dataset has no split 'test'; available: train (pass --split)" in err


def test_save_to_disk_folders_and_data_files(model_dir, karpathy, tmp_path):
    import datasets

    rows = {"image": [], "caption": []}
    for index, (colour, captions) in enumerate(PAIRS):
        path = tmp_path / "images" / f"{index}.png"
        path.parent.mkdir(exist_ok=True)
        Image.new("RGB", (SIZE, SIZE), colour).save(path)
        rows["image"].append(str(path))
        rows["caption"].append(captions)
    features = datasets.Features({"image": datasets.Image(), "caption": datasets.List(datasets.Value("string"))})
    test = datasets.Dataset.from_dict(rows, features=features)
    train = test.select([0])
    datasets.DatasetDict({"train": train, "test": test}).save_to_disk(str(tmp_path / "dict"))
    test.to_parquet(str(tmp_path / "test.parquet"))
    for data in (tmp_path / "dict", tmp_path / "test.parquet"):
        result = _run(model_dir, data, tmp_path / f"{data.stem}.json")
        assert result["num_texts"] == 10 and result["metrics"] == pytest.approx(karpathy["metrics"]), data


def test_a_folder_of_neither_layout_names_both(model_dir, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    err = _error(capsys, model_dir, tmp_path / "empty")
    assert "not a dataset layout `datasets` loads" in err and "nor is it a Karpathy caption file" in err
