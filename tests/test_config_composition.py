"""Composable configs: `base:` files (a file or a list, relative to the config) merged in order, then the file, then
the command line; errors that name the file that set each bad value; `--print-config`; and the shipped GPU configs,
rewritten as bases plus their differences, resolving to exactly what their flat versions resolved to."""

import importlib.util
import re

import pytest
import yaml
from conftest import ROOT

from tips_hf.finetuning import FinetuneConfig, finetune_schema
from tips_hf.pretraining import load_config
from tips_hf.pretraining.config import config_documents, format_config

CONFIGS = ROOT / "training" / "configs"
# The GPU configs as committed before they were split into bases (verbatim copies of those files).
BEFORE = ROOT / "tests" / "fixtures" / "configs_before_base"


def _main(script: str):
    spec = importlib.util.spec_from_file_location(script, ROOT / "training" / f"{script}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


def _write(folder, name: str, text: str):
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@pytest.mark.parametrize("name", sorted(path.name for path in BEFORE.glob("*.yaml")))
def test_shipped_configs_resolve_as_before(name):
    """Every setting (defaults included) of a rewritten config equals that of its flat version, through the same
    loader and schema, and the rewritten file is shorter."""
    assert len(list(BEFORE.glob("*.yaml"))) == 6
    old, new = BEFORE / name, CONFIGS / name
    assert finetune_schema(old) is finetune_schema(new)
    assert finetune_schema(new).load(new).to_dict() == finetune_schema(old).load(old).to_dict()
    assert "base" in yaml.safe_load(new.read_text())
    assert len(new.read_text().splitlines()) < len(old.read_text().splitlines())


def test_bases_apply_in_order_then_the_file_then_the_command_line(tmp_path):
    _write(tmp_path, "common/shared.yaml", "training: {max_steps: 1, seed: 1, logging_steps: 1}\noptim: {lr: 1.0e-1}\n")
    _write(tmp_path, "common/a.yaml", "base: shared.yaml\ntraining: {max_steps: 2, seed: 2}\n")
    _write(tmp_path, "b.yaml", "base: common/shared.yaml\ntraining: {max_steps: 3}\n")  # shared.yaml again: once
    path = _write(tmp_path, "run/config.yaml", "base: [../common/a.yaml, ../b.yaml]\ntraining: {output_dir: out}\n")
    files = [file for file, _ in config_documents(path)]
    assert files == [str(tmp_path / "common/shared.yaml"), str(tmp_path / "common/a.yaml"), str(tmp_path / "b.yaml"),
                     str(path)]
    config = load_config(path, ["training.seed=5"])
    training = config.training
    assert (training.max_steps, training.seed, training.logging_steps, training.output_dir) == (3, 5, 1, "out")
    assert config.optim.lr == 0.1
    assert config.sources == {"training.max_steps": str(tmp_path / "b.yaml"),
                              "training.seed": "command line",
                              "training.logging_steps": str(tmp_path / "common/shared.yaml"),
                              "optim.lr": str(tmp_path / "common/shared.yaml"),
                              "training.output_dir": str(path)}
    # a setting that a mapping holds is replaced as a whole, like any other value
    _write(tmp_path, "m.yaml", "model: {vision: {hidden_size: 64, num_hidden_layers: 2}}\n")
    replaced = load_config(_write(tmp_path, "n.yaml", "base: m.yaml\nmodel: {vision: {hidden_size: 32}}\n"))
    assert replaced.model.vision == {"hidden_size": 32}


def test_errors_name_the_file_that_set_the_value(tmp_path):
    base = _write(tmp_path, "base/recipe.yaml", "training: {max_steps: ten}\n")
    path = _write(tmp_path, "config.yaml", "base: base/recipe.yaml\n")
    with pytest.raises(ValueError, match=f"^{re.escape(str(base))}: training.max_steps must be an integer, got 'ten'"):
        load_config(path)
    # a check across settings (validate) names the file behind each setting it mentions
    _write(tmp_path, "base/recipe.yaml", "data: {global_size: 100}\n")
    with pytest.raises(ValueError, match=r"data.global_size must be a multiple of the patch size 14, got 100\.\n"
                                         rf"  \(data.global_size from {re.escape(str(base))}\)"):
        load_config(path)
    with pytest.raises(ValueError, match=r"\(data.global_size from command line\)"):
        load_config(path, ["data.global_size=99"])
    _write(tmp_path, "base/recipe.yaml", "data: {source: parquet}\n")
    with pytest.raises(ValueError, match=rf"data.path is required .*\n  \(data.source from {re.escape(str(base))}\)"):
        load_config(path)
    for text, message in [
        ("base: missing.yaml\n", rf"^{re.escape(str(path))}: base 'missing.yaml' does not exist \("),
        ("base: {file: a.yaml}\n", rf"^{re.escape(str(path))}: base must be a file or a list of files"),
        ("base: []\n", "base must be a file or a list of files"),
        ("base: config.yaml\n", rf"^{re.escape(str(path))}: base files form a cycle: {re.escape(str(path))} -> "),
    ]:
        path.write_text(text)
        with pytest.raises(ValueError, match=message):
            load_config(path)


def test_the_task_of_a_base_picks_the_dense_schema(tmp_path):
    _write(tmp_path, "dense.yaml", "training: {task: depth}\nmodel: {head: mlp}\n")
    path = _write(tmp_path, "config.yaml", "base: dense.yaml\ntraining: {max_steps: 3}\n")
    assert finetune_schema(path) is FinetuneConfig
    config = FinetuneConfig.load(path)
    assert (config.training.task, config.model.head, config.training.max_steps) == ("depth", "mlp", 3)


def test_print_config_shows_the_merged_result_and_where_each_value_came_from(capsys):
    hr = CONFIGS / "b14-v2-hr.yaml"
    assert _main("pretrain")(["--config", str(hr), "--print-config", "--max_steps", "5", "optim.lr=3e-4"]) == 0
    printed = capsys.readouterr().out
    lines = printed.splitlines()
    for line in [
        f"  global_size: 448  # {hr}",                                     # the file
        f"  preset: tips-v2-b14  # {CONFIGS / 'b14-v2.yaml'}",              # its base
        f"  momentum: 0.994  # {CONFIGS / 'base' / 'tipsv2-224px.yaml'}",   # the base's base
        f"  synthetic_columns: [paligemma.txt, gemini.txt]  # {CONFIGS / 'base' / 'webli.yaml'}",
        "  max_steps: 5  # command line",
        "  lr: 0.0003  # command line",
        "  split: train",                                                   # a default: no comment
    ]:
        assert line in lines, line
    # what it prints is a config that loads back to the same settings
    expected = load_config(hr, ["training.max_steps=5", "optim.lr=3e-4"])
    assert yaml.safe_load(printed) == yaml.safe_load(format_config(expected))
    assert _main("finetune")(["--config", str(CONFIGS / "finetune_depth_tiny.yaml"), "--print-config"]) == 0
    assert "  task: depth  # " in capsys.readouterr().out


def test_printed_config_loads_back(tmp_path):
    config = load_config(CONFIGS / "tiny-cpu.yaml", ["lora.enabled=true", "lora.r=4", "eval.retrieval_ks=[1, 10]"])
    path = _write(tmp_path, "printed.yaml", format_config(config))
    assert load_config(path) == config
