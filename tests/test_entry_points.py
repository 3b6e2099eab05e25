"""training/*.py entry points: `--section.key VALUE` flags and `section.key=value` overrides (before or after the
options) reach the config loader; `--help` lists every setting."""

import importlib.util

import pytest
from conftest import ROOT


def _main(script: str):
    spec = importlib.util.spec_from_file_location(script, ROOT / "training" / f"{script}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


@pytest.mark.parametrize(
    "script,config", [("pretrain", "tiny-cpu.yaml"), ("finetune", "finetune_segmentation_tiny.yaml")]
)
def test_override_after_an_option_reaches_the_config_loader(script, config, capsys):
    config_file = str(ROOT / "training" / "configs" / config)
    argv = ["--config", config_file, "nosuchsection.key=1", "--max_steps", "3", "training.seed=1"]
    assert _main(script)(argv) == 2  # refused by the config loader, naming the section, before any training
    err = capsys.readouterr().err
    assert "nosuchsection" in err and "unrecognized arguments" not in err


@pytest.mark.parametrize(
    "script,config,flag,message",
    [
        ("pretrain", "tiny-cpu.yaml", ["--objective.recipe", "v3"], "objective.recipe must be one of 'v1', 'v2'"),
        ("finetune", "finetune_contrastive_tiny.yaml", ["--data.max_text_length", "x"],
         "data.max_text_length must be an integer"),
        ("finetune", "finetune_depth_tiny.yaml", ["--model.head", "conv"], "model.head must be one of 'linear'"),
        ("finetune", "finetune_depth_tiny.yaml", ["--max_steps", "0.5"], "training.max_steps must be an integer"),
    ],
)
def test_flags_reach_the_schema_of_the_config(script, config, flag, message, capsys):
    """`--section.key VALUE` flags exist for every setting of the script's schema and are checked by the loader."""
    assert _main(script)(["--config", str(ROOT / "training" / "configs" / config), *flag]) == 2
    err = capsys.readouterr().err
    assert f"{script}.py: error: command line: {message}" in err


@pytest.mark.parametrize(
    "script,expected",
    [
        ("pretrain", ["--objective.recipe {v1,v2}", "v1 (EMA teacher, iBOT on masked patches)",
                      "--training.max_steps INT, --max_steps INT", "any peft.LoraConfig field"]),
        ("finetune", ["--model.head {linear,mlp,dpt}", "the official DPT decoder", "--training.task {segmentation,depth,contrastive}"]),
    ],
)
def test_help_lists_every_setting_with_its_help(script, expected, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")  # one line per flag: the asserted phrases are not wrapped
    with pytest.raises(SystemExit) as stop:
        _main(script)(["--help"])
    assert stop.value.code == 0
    out = capsys.readouterr().out
    for phrase in expected:
        assert phrase in out, phrase


def test_missing_config_is_a_clean_error(tmp_path, capsys):
    assert _main("finetune")(["--config", str(tmp_path / "missing.yaml")]) == 2
    err = capsys.readouterr().err
    assert "cannot read config" in err and "missing.yaml" in err and "Traceback" not in err


def test_finetune_refuses_a_pretraining_config(capsys):
    """A config without `training.task` belongs to pretraining: finetune.py says where to run it, before any work."""
    assert _main("finetune")(["--config", str(ROOT / "training" / "configs" / "tiny-cpu.yaml")]) == 2
    err = capsys.readouterr().err
    assert "tiny-cpu.yaml is a pretraining config" in err and "training/pretrain.py" in err and "Traceback" not in err
