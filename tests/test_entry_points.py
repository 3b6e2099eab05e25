"""training/*.py entry points: `section.key=value` overrides may stand before or after the options."""

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
