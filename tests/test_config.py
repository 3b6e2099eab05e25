"""The training configuration system: one loader (YAML file, `--section.key VALUE` flags, `section.key=value`
overrides) for the pretraining and the dense fine-tuning schemas; validation from the type hints; errors naming the
file, section and key; the LoRA section checked against peft's own `LoraConfig` fields."""

import argparse
import re
import typing
from pathlib import Path

import pytest
import yaml
from conftest import ROOT

from tips_hf.finetuning import FinetuneConfig, finetune_schema, load_finetune_config
from tips_hf.lora import target_regex
from tips_hf.pretraining import PretrainConfig, load_config, save_config
from tips_hf.pretraining.config import add_config_arguments, config_documents, config_overrides, parse_overrides

COMMITTED = sorted((ROOT / "training" / "configs").rglob("*.yaml")) + [ROOT / "docs" / "ablation" / "base-config.yaml"]


def test_file_then_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("objective: {recipe: v1, mask_ratio: 0.5}\ntraining: {max_steps: 7}\noptim: {lr: 3e-3}\n")
    config = load_config(path, ["training.max_steps=9", "data.global_scale=[0.4, 1.0]"])
    assert (config.objective.recipe, config.objective.mask_ratio, config.training.max_steps) == ("v1", 0.5, 9)
    assert config.data.global_scale == (0.4, 1.0)
    assert config.optim.lr == 0.003  # YAML 1.1 reads "3e-3" (no dot) as a string: converted to the float type


@pytest.mark.parametrize(
    "override, message",
    [
        ("objective.recipe=v3", r"command line: objective.recipe must be one of 'v1', 'v2', got 'v3'\.\n"
                                r"  objective.recipe: v1 \(EMA teacher"),
        ("objective.nope=1", "unknown key objective.nope"),
        ("training.max_step=10", r"unknown key training.max_step \(did you mean 'max_steps'\?\)"),
        ("nosection.key=1", "unknown section 'nosection'"),
        ("objectiv.recipe=v1", r"unknown section 'objectiv' \(did you mean 'objective'\?\)"),
        ("training.max_steps=ten", "training.max_steps must be an integer, got 'ten'"),
        ("training.seed=true", "training.seed must be an integer, got True"),
        ("eval.image_size=big", "eval.image_size must be an integer or null"),
        ("data.global_scale=[0.4]", r"data.global_scale must be a list of 2 items \(a number, a number\)"),
        ("data.synthetic_columns=[1]", r"data.synthetic_columns must be a list \(items: a string\)"),
        ("lora.preset=vision-attn", "lora.preset must be one of 'vision-attention', 'vision-mlp'"),
        ("model.preset=tips-v2-b16", r"model.preset must be one of 'tips-v1-s14-hr', .* 'tips-v2-g14' or null, "
                                     r"got 'tips-v2-b16' \(did you mean 'tips-v2-b14'\?\)"),
        ("objective.mask_ratio=1.5", "objective.mask_ratio must be in"),
        ("data.global_size=100", "data.global_size must be a multiple of the patch size"),
        ("training_max_steps", "must look like section.key=value"),
        ("data.source=parquet", "data.path is required with data.source='parquet'"),
    ],
)
def test_errors_name_the_key(override, message):
    with pytest.raises(ValueError, match=message):
        load_config(None, [override])


def test_errors_name_the_file(tmp_path):
    with pytest.raises(ValueError, match="cannot read config .*missing.yaml: the file does not exist"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    for text, message in [
        ("training: [1, 2]\n", "section 'training' must be a mapping"),
        ("objective: {recip: v1}\n", r"unknown key objective.recip \(did you mean 'recipe'\?\)"),
        ("training: {max_steps: ten}\n", "training.max_steps must be an integer, got 'ten'.\n"
                                         "  training.max_steps: optimizer steps"),
        ("[1, 2]\n", "the top level must be a mapping of sections"),
        ("training: {max_steps: [\n", "not valid YAML"),
    ]:
        bad.write_text(text)
        with pytest.raises(ValueError, match=f"^{re.escape(str(bad))}: {message}"):
            load_config(bad)


def test_overrides_are_yaml_values():
    assert parse_overrides(["a.b=[1, 2]", "a.c=null", "a.d=x=y"]) == [("a", "b", [1, 2]), ("a", "c", None),
                                                                      ("a", "d", "x=y")]
    with pytest.raises(ValueError, match="command line: a.b: '\\[1' is not a valid YAML value"):
        parse_overrides(["a.b=[1"])


def test_finetune_schema_errors(tmp_path):
    with pytest.raises(ValueError, match="training.task must be one of 'segmentation', 'depth', 'contrastive', got 'detection'"):
        load_finetune_config(None, ["training.task=detection"])
    with pytest.raises(ValueError, match="model.head must be one of 'linear', 'mlp', 'dpt'"):
        load_finetune_config(None, ["model.head=conv"])
    with pytest.raises(ValueError, match="data.image_size must be a multiple of 14"):
        load_finetune_config(None, ["data.image_size=100"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("training: segmentation\n")
    with pytest.raises(ValueError, match="bad.yaml: section 'training' must be a mapping of settings"):
        load_finetune_config(bad)
    # the same LoRA section as pretraining, with the dense defaults (adapters on, vision tower)
    assert FinetuneConfig().lora.to_dict() == {"enabled": True, "preset": "vision"}
    assert PretrainConfig().lora.to_dict() == {"enabled": False, "preset": "all"}


def test_every_committed_config_loads():
    """Each YAML in training/configs and the ablation base load unchanged with the schema finetune.py picks."""
    assert len(COMMITTED) >= 15
    schemas = {}
    for path in COMMITTED:
        schema = finetune_schema(path)
        config = schema.load(path)
        for file, document in config_documents(path):  # every value of the file and its bases reached the config
            for section, values in document.items():
                for key, value in values.items():
                    if config.sources[f"{section}.{key}"] != file:
                        continue  # a later file sets it again
                    loaded = config.to_dict()[section][key]
                    assert (list(loaded) if isinstance(loaded, tuple) else loaded) == value, (file, section, key)
        schemas[path.name] = schema.__name__
    tasks = {name for name, schema in schemas.items() if schema == "FinetuneConfig"}
    assert tasks == {"finetune_ade20k_dpt.yaml", "finetune_contrastive_tiny.yaml", "finetune_depth_dpt_tiny.yaml",
                     "finetune_depth_tiny.yaml", "finetune_nyu_dpt.yaml", "finetune_segmentation_dpt_tiny.yaml",
                     "finetune_segmentation_tiny.yaml"}
    contrastive = load_finetune_config(ROOT / "training" / "configs" / "finetune_contrastive_tiny.yaml")
    assert contrastive.training.task == "contrastive"
    lora = contrastive.lora.peft_config()
    assert (lora.r, lora.lora_alpha, lora.lora_dropout, lora.bias) == (8, 16, 0.0, "none")
    assert lora.target_modules == target_regex("all") and lora.modules_to_save is None


def test_save_and_load_round_trip(tmp_path):
    config = load_config(None, ["data.global_scale=[0.4, 1.0]", "lora.enabled=true", "lora.use_rslora=true",
                                "lora.lora_alpha=4", "eval.retrieval_ks=[1, 10]"])
    save_config(config, tmp_path / "config.yaml")
    assert [p.name for p in tmp_path.iterdir()] == ["config.yaml"]  # no temporary file left behind
    written = yaml.safe_load((tmp_path / "config.yaml").read_text())
    assert written["lora"] == {"enabled": True, "preset": "all", "use_rslora": True, "alpha": 4}
    reloaded = load_config(tmp_path / "config.yaml")
    assert reloaded == config and reloaded.eval.retrieval_ks == (1, 10)


def test_lora_section_takes_peft_fields():
    """Keys other than enabled/preset are peft.LoraConfig fields (checked against its dataclass fields and types)
    passed through tips_hf.lora.lora_config; the trainer's new heads join `modules_to_save`."""
    config = load_config(None, ["lora.enabled=true", "lora.preset=vision", "lora.r=4", "lora.dropout=0.1",
                                "lora.use_rslora=true", "lora.modules_to_save=[extra]"])
    lora = config.lora.peft_config(["head"])
    assert (lora.r, lora.lora_alpha, lora.lora_dropout, lora.use_rslora) == (4, 16, 0.1, True)
    assert lora.target_modules == target_regex("vision") and list(lora.modules_to_save) == ["head", "extra"]
    explicit = load_config(None, ["lora.target_modules=[qkv]"]).lora.peft_config()
    assert list(explicit.target_modules) == ["qkv"]


@pytest.mark.parametrize(
    "override, message",
    [
        ("lora.rank=4", r"unknown key lora.rank \(not a peft.LoraConfig field\)"),
        ("lora.r=four", "lora.r must be an integer, got 'four'.\n  lora.r: "),
        ("lora.alpha=0.5", "lora.alpha must be an integer, got 0.5"),
        ("lora.bias=some", "lora.bias must be one of 'none', 'all', 'lora_only', got 'some'"),
        ("lora.layers_to_transform=[0]", "lora: peft.LoraConfig refuses these settings: `layers_to_transform`"),
    ],
)
def test_lora_section_errors(override, message):
    with pytest.raises(ValueError, match=message):
        load_config(None, ["lora.enabled=true", override])


def test_flags_become_overrides(tmp_path):
    """`--section.key VALUE` (and the short aliases) apply before the positional overrides, after the file."""
    path = tmp_path / "c.yaml"
    path.write_text("training: {max_steps: 7, seed: 5}\n")
    parser = argparse.ArgumentParser(allow_abbrev=False)
    add_config_arguments(parser, PretrainConfig, {"training.max_steps": "--max_steps"})
    args = parser.parse_intermixed_args(["training.seed=3", "--config", str(path), "--max_steps", "11",
                                         "--objective.recipe", "v1", "--training.seed", "2"])
    assert config_overrides(args) == ["training.max_steps=11", "objective.recipe=v1", "training.seed=2",
                                      "training.seed=3"]
    config = PretrainConfig.load(args.config, config_overrides(args))
    assert (config.training.max_steps, config.training.seed, config.objective.recipe) == (11, 3, "v1")


def test_coerce_follows_the_type_hint():
    from tips_hf.pretraining.config import coerce

    assert coerce({"embed": [1, 2]}, dict[str, list[int]], "k") == {"embed": [1, 2]}
    assert coerce([[0, 4]], list[tuple[int, int]], "k") == [(0, 4)]
    assert coerce(3, float, "k") == 3.0 and type(coerce(3, float, "k")) is float
    assert coerce(True, bool | typing.Literal["gaussian"], "k") is True
    assert coerce("gaussian", bool | typing.Literal["gaussian"], "k") == "gaussian"
    with pytest.raises(ValueError, match=r"^k must be a mapping \(a string → a list \(items: an integer\)\), got"):
        coerce({"embed": ["x"]}, dict[str, list[int]], "k")
    with pytest.raises(ValueError, match="^k must be true or false or one of 'gaussian', got 'pissa'"):
        coerce("pissa", bool | typing.Literal["gaussian"], "k")
    with pytest.raises(ValueError, match="^k must be a Path, got 'x'"):
        coerce("x", Path, "k")
