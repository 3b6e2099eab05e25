"""Experiment trackers (`training.report_to`): every name accelerate's `LoggerType` knows, a list, or none, for the
pretraining and the dense fine-tuning schemas; a missing tracker package names the extra to install; the config is
logged as flat typed hyperparameters. Real runs log offline to TensorBoard and, where installed, to an MLflow file
store, and the values are read back from what the trackers wrote."""

import json
import math

import pytest
from conftest import ROOT

from tips_hf._extras import EXTRA_OF
from tips_hf.finetuning import finetune, load_finetune_config
from tips_hf.pretraining import load_config, train
from tips_hf.pretraining.tracking import flat_hyperparameters, log_with, tracker_names

MICRO = [
    "model.vision={hidden_size: 32, num_hidden_layers: 2, num_attention_heads: 2, intermediate_size: 64, "
    "image_size: 56}",
    "model.text={hidden_size: 32, num_hidden_layers: 2, num_attention_heads: 2, intermediate_size: 64}",
    "data.scene_image_size=56", "data.global_size=56", "data.local_size=28", "data.num_examples=16",
    "data.num_local_crops=2", "objective.head_prototypes=32", "objective.patch_prototypes=32",
    "objective.head_hidden_dim=32", "objective.head_bottleneck_dim=16", "optim.lr=1e-3", "optim.warmup_steps=1",
    "training.max_steps=2", "training.batch_size=4", "training.logging_steps=1", "training.save_steps=0",
    "training.progress_bar=false", "eval.num_examples=0",
]


def test_report_to_takes_what_accelerate_knows():
    from accelerate.utils import LoggerType

    for name in [kind.value for kind in LoggerType]:
        assert load_config(None, [f"training.report_to={name}"]).training.report_to == name
        assert load_finetune_config(None, [f"training.report_to={name}"]).training.report_to == name
    both = load_config(None, ["training.report_to=[tensorboard, wandb]"])
    assert both.training.report_to == ["tensorboard", "wandb"] and tracker_names(both.training.report_to) == [
        "tensorboard", "wandb"]
    assert tracker_names("none") == [] and log_with("none") is None
    for load in (load_config, load_finetune_config):
        with pytest.raises(ValueError, match=r"training.report_to: unknown tracker 'wandbb' \(did you mean 'wandb'\?\); "
                                             r"accelerate knows all, aim, tensorboard, wandb, .* \(or none\)"):
            load(None, ["training.report_to=wandbb"])
    with pytest.raises(ValueError, match="none cannot be combined with trackers"):
        load_config(None, ["training.report_to=[none, tensorboard]"])
    with pytest.raises(ValueError, match="training.report_to must be a string or a list"):
        load_config(None, ["training.report_to=3"])


def test_a_missing_tracker_package_names_the_extra(monkeypatch):
    monkeypatch.setattr("tips_hf._extras.is_missing", lambda name: name in ("wandb", "comet_ml"))
    with pytest.raises(ValueError, match=r"^training.report_to: wandb needs the wandb package: "
                                         r"pip install 'tips-hf\[wandb\]'\.$"):
        log_with(["tensorboard", "wandb"])
    with pytest.raises(ValueError, match=r"pip install 'tips-hf\[comet-ml\]'"):
        log_with("comet_ml")
    assert log_with(["tensorboard", "mlflow"]) == ["tensorboard", "mlflow"]


def test_every_tracker_has_its_extra():
    """Each tracker accelerate knows (but `all`) has an extra of the same name (PEP 685 spelling) that installs it."""
    tomllib = pytest.importorskip("tomllib", reason="tomllib is in the standard library from Python 3.11")
    from accelerate.utils import LoggerType

    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    for kind in LoggerType:
        if kind.value in ("all", "tensorboard"):
            continue
        extra = EXTRA_OF[kind.value]
        assert extra == kind.value.replace("_", "-")
        assert "tips-hf[train]" in extras[extra], extra  # a tracker alone does not train
        assert any(requirement.replace("-", "_").startswith(kind.value) for requirement in extras[extra]), extra
    assert any(requirement.startswith("tensorboard") for requirement in extras["train"])


def test_flat_hyperparameters_keep_their_types():
    config = load_config(None, ["optim.lr=1e-3", "data.scene_options={max_objects: 2}"])
    flat = flat_hyperparameters(config.to_dict())
    assert flat["optim.lr"] == 0.001 and type(flat["optim.lr"]) is float
    assert flat["training.max_steps"] == 200 and type(flat["training.max_steps"]) is int
    assert flat["training.compile"] is False and flat["objective.recipe"] == "v2"
    assert flat["optim.betas"] == "[0.9, 0.999]" and flat["data.synthetic_columns"] == '["synthetic_caption"]'
    assert flat["data.scene_options.max_objects"] == 2 and flat["model.vision"] == "{}"
    assert flat["model.preset"] == "null" and flat["lora.enabled"] is False
    assert all(isinstance(value, (bool, int, float, str)) for value in flat.values())
    assert flat_hyperparameters({"a": {"b": {"c": [1, 2]}, "d": (3, 4)}}) == {"a.b.c": "[1, 2]", "a.d": "[3, 4]"}


def _tensorboard(folder):
    """(hyperparameters name → python value, scalars tag → [(step, value)]) of every event file below `folder`."""
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
    from tensorboard.plugins.hparams import plugin_data_pb2

    hparams, scalars = {}, {}
    for path in sorted(folder.rglob("events.out.tfevents.*")):
        for event in EventFileLoader(str(path)).Load():
            for value in event.summary.value:
                if value.tag == "_hparams_/session_start_info":
                    data = plugin_data_pb2.HParamsPluginData.FromString(value.metadata.plugin_data.content)
                    for name, proto in data.session_start_info.hparams.items():
                        hparams[name] = getattr(proto, proto.WhichOneof("kind"))
                elif value.HasField("simple_value"):
                    scalars.setdefault(value.tag, []).append((event.step, value.simple_value))
                elif value.HasField("tensor") and value.tensor.float_val:
                    scalars.setdefault(value.tag, []).append((event.step, value.tensor.float_val[0]))
    return hparams, scalars


def test_pretraining_logs_to_tensorboard_and_mlflow(tmp_path, monkeypatch):
    """A 2-step run with report_to [tensorboard, mlflow] (mlflow where installed, to a file store): the hyperparameters
    read back with their types (TensorBoard's hparams keep numbers as numbers) and the losses of metrics.jsonl."""
    trackers = ["tensorboard"]
    try:
        import mlflow
    except ImportError:
        mlflow = None
    else:
        trackers.append("mlflow")
        monkeypatch.setenv("MLFLOW_TRACKING_URI", (tmp_path / "mlruns").as_uri())
        monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    out = tmp_path / "run"
    result = train(load_config(None, [*MICRO, f"training.output_dir={out}", f"training.report_to={trackers}"]))
    config = load_config(out / "config.yaml")
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    losses = [(record["step"], record["loss"]) for record in records if "loss" in record]
    assert [step for step, _ in losses] == [1, 2] and result.state.step == 2

    hparams, scalars = _tensorboard(out)
    assert hparams["optim.lr"] == 0.001 and hparams["training.max_steps"] == 2.0  # numbers, not text
    assert hparams["training.compile"] == 0.0 and hparams["objective.recipe"] == "v2"  # torch's hparams: bool → number
    assert hparams["model.vision.hidden_size"] == 32 and hparams["optim.betas"] == "[0.9, 0.999]"
    assert set(hparams) == set(flat_hyperparameters(config.to_dict()))
    for (step, loss), (tb_step, tb_loss) in zip(losses, scalars["loss"]):
        assert step == tb_step and math.isclose(loss, tb_loss, rel_tol=1e-6)

    if mlflow is not None:
        run = mlflow.search_runs(experiment_names=["tips_pretrain"], output_format="list")[0]
        assert run.data.params["optim.lr"] == "0.001" and run.data.params["model.vision.hidden_size"] == "32"
        assert len(run.data.params) == len(hparams)
        history = mlflow.tracking.MlflowClient().get_metric_history(run.info.run_id, "loss")
        assert [(m.step, m.value) for m in history] == pytest.approx(losses)


def test_dense_finetuning_logs_to_tensorboard(tiny_model_dir, tmp_path):
    out = tmp_path / "out"
    config = load_finetune_config(None, [
        f"model.base={tiny_model_dir}", "lora.r=4", "data.num_examples=8", "data.eval_examples=4",
        "data.scene_image_size=56", "data.image_size=56", "training.max_steps=2", "training.batch_size=4",
        "training.logging_steps=1", "training.progress_bar=false", f"training.output_dir={out}",
        "training.report_to=tensorboard",
    ])
    result = finetune(config)
    hparams, scalars = _tensorboard(out)
    assert hparams["optim.lr"] == 0.001 and hparams["training.task"] == "segmentation"
    assert hparams["lora.r"] == 4 and hparams["model.base"] == str(tiny_model_dir)
    logged = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [(r["step"], pytest.approx(r["loss"])) for r in logged if "loss" in r] == scalars["loss"]
    assert scalars["eval/mean_iou"] == [(2, pytest.approx(result["eval"]["mean_iou"]))]
