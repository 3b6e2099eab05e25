"""Malformed official checkpoints are refused with a message naming the file, the key and the expected shape."""

import numpy as np
import pytest
from conftest import official_files

from tips_hf.conversion.cli import main as cli_main

NAME = "v1-mlp-224"


def _arrays(path):
    with np.load(path) as data:
        return {k: data[k] for k in data.files}


def _convert(tmp_path, vision, text, *extra):
    return cli_main(
        [
            "official",
            "--vision",
            str(vision),
            "--text",
            str(text),
            "--vision-heads",
            "4",
            "--text-heads",
            "4",
            "--output",
            str(tmp_path / "out"),
            "--no-progress",
            *extra,
        ]
    )


def _edited_vision(tmp_path, edit):
    arrays = _arrays(official_files(NAME)[0])
    edit(arrays)
    path = tmp_path / "vision.npz"
    np.savez(path, **arrays)
    return path


def _fails(tmp_path, capsys, vision, text=None, *extra):
    code = _convert(tmp_path, vision, text or official_files(NAME)[1], *extra)
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert not (tmp_path / "out").exists(), "a failed conversion must not leave an output folder"
    return err


def test_missing_key(tmp_path, capsys):
    vision = _edited_vision(tmp_path, lambda a: a.pop("blocks.1.norm1.weight"))
    err = _fails(tmp_path, capsys, vision)
    assert "missing key(s)" in err and "blocks.1.norm1.weight" in err and "vision.npz" in err


def test_extra_key(tmp_path, capsys):
    vision = _edited_vision(tmp_path, lambda a: a.update({"blocks.0.attn.extra": np.zeros(3, np.float32)}))
    err = _fails(tmp_path, capsys, vision)
    assert "unexpected key(s)" in err and "blocks.0.attn.extra" in err


def test_wrong_shape(tmp_path, capsys):
    vision = _edited_vision(tmp_path, lambda a: a.update({"blocks.1.attn.qkv.weight": np.zeros((191, 64), "f4")}))
    err = _fails(tmp_path, capsys, vision)
    assert "'blocks.1.attn.qkv.weight' has shape (191, 64), expected (192, 64)" in err


def test_missing_block(tmp_path, capsys):
    def drop_block(arrays):
        for key in [k for k in arrays if k.startswith("blocks.0.")]:
            arrays.pop(key)

    err = _fails(tmp_path, capsys, _edited_vision(tmp_path, drop_block))
    assert "blocks [0] are missing" in err


def test_pickled_arrays_refused(tmp_path, capsys):
    vision = _edited_vision(tmp_path, lambda a: a.update({"cls_token": np.array([{"evil": 1}], dtype=object)}))
    err = _fails(tmp_path, capsys, vision)
    assert "'cls_token' holds pickled Python objects" in err


def test_truncated_file(tmp_path, capsys):
    data = official_files(NAME)[0].read_bytes()
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(data[: len(data) // 2])
    err = _fails(tmp_path, capsys, truncated)
    assert "truncated.npz" in err and ("not a readable .npz" in err or "truncated" in err)


def test_not_an_npz(tmp_path, capsys):
    bogus = tmp_path / "bogus.npz"
    bogus.write_text("hello")
    err = _fails(tmp_path, capsys, bogus)
    assert "bogus.npz: not a readable .npz archive" in err


def test_missing_file(tmp_path, capsys):
    err = _fails(tmp_path, capsys, tmp_path / "nope.npz")
    assert "nope.npz: no such file" in err


def test_mismatched_widths(tmp_path, capsys):
    err = _fails(tmp_path, capsys, official_files(NAME)[0], official_files("v1-swiglu-448")[1])
    assert "vision width 64" in err and "text width 96" in err


def test_heads_needed_for_unreleased_width(tmp_path, capsys):
    code = cli_main(
        [
            "official",
            "--vision",
            str(official_files(NAME)[0]),
            "--text",
            str(official_files(NAME)[1]),
            "--output",
            str(tmp_path / "out"),
        ]
    )
    assert code == 2 and "pass --vision-heads N" in capsys.readouterr().err


def test_preset_mismatch(tmp_path, capsys):
    err = _fails(tmp_path, capsys, official_files(NAME)[0], None, "--preset", "tips-v2-b14")
    assert "does not match preset 'tips-v2-b14'" in err and "hidden_size is 64" in err


def test_tokenizer_vocab_mismatch(tmp_path, capsys):
    bogus = tmp_path / "tokenizer.model"
    bogus.write_bytes(b"not a sentencepiece model")
    err = _fails(tmp_path, capsys, official_files(NAME)[0], None, "--tokenizer", str(bogus))
    assert "tokenizer.model: not a SentencePiece model" in err


def test_existing_output_not_clobbered(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    code = _convert(tmp_path, *official_files(NAME)[:2])
    assert code == 2 and "exists and is not empty" in capsys.readouterr().err
    assert (out / "keep.txt").read_text() == "x"


@pytest.mark.parametrize("max_shard", ["100KB"])
def test_sharded_output_loads(tmp_path, max_shard):
    from tips_hf import TipsModel

    assert _convert(tmp_path, *official_files(NAME)[:2], "--max-shard-size", max_shard) == 0
    out = tmp_path / "out"
    assert (out / "model.safetensors.index.json").is_file()
    assert len(list(out.glob("model-*.safetensors"))) > 3
    from tips_hf.conversion import verify_model

    parity = verify_model(TipsModel.from_pretrained(out), official_files(NAME)[2])
    assert max(parity.values()) < 1e-5


def test_heads_flag_must_agree_with_preset():
    # `--preset` and `--vision-heads/--text-heads` are alternatives; given both, they must agree
    from tips_hf.conversion.layouts import LayoutError, resolve_heads

    assert resolve_heads(384, 6, "vision", 6) == 6 and resolve_heads(384, None, "vision", 6) == 6
    with pytest.raises(LayoutError, match=r"--vision-heads 4 disagrees with the preset \(6 vision heads\)"):
        resolve_heads(384, 4, "vision", 6)


def test_to_transformers_bad_sources(converted_official, tmp_path, capsys):
    """A missing folder and a truncated weights file are named, exit status 2, no traceback, nothing written."""
    import shutil

    def run(model):
        code = cli_main(["to-transformers", "--model", str(model), "--output", str(tmp_path / "out"),
                         "--no-progress"])
        err = capsys.readouterr().err
        assert code == 2 and "Traceback" not in err and not (tmp_path / "out").exists()
        return err

    assert f"model folder {tmp_path / 'nowhere'} does not exist" in run(tmp_path / "nowhere")
    folder = tmp_path / "truncated"
    shutil.copytree(converted_official[NAME], folder)
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:4000])
    err = run(folder)
    assert "model.safetensors" in err and "truncated" in err
    weights.write_bytes(b"\x00")
    assert "model.safetensors: not a readable safetensors file" in run(folder)
