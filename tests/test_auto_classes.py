"""Auto classes on local TIPS folders, after `import tips_hf`, without the Hub and without a question on stdin:
`AutoBackbone.from_pretrained(folder)` (transformers 5 asks the Hub whether every name is a repository before loading
anything; `import tips_hf` skips that question for folders and offline) and `AutoModel.from_pretrained(dpt_folder)`
(one config class, three task classes)."""

import builtins
import socket

import huggingface_hub
import pytest
import torch
from conftest import TINY_TOWER
from huggingface_hub import constants
from transformers import AutoBackbone, AutoModel

from tips_hf import (
    TipsBackbone,
    TipsBackboneConfig,
    TipsDPTConfig,
    TipsForDepthEstimation,
    TipsForNormalEstimation,
    TipsForSemanticSegmentation,
)


class HubAsked(AssertionError):
    pass


def _no_network(*args, **kwargs):
    raise HubAsked(f"the Hub or the network was asked: {args[1:]!r}")


@pytest.fixture
def backbone_folder(tmp_path):
    torch.manual_seed(0)
    backbone = TipsBackbone(TipsBackboneConfig(**TINY_TOWER, image_size=28, out_indices=[1, 2])).eval()
    folder = tmp_path / "models" / "tips-backbone"
    backbone.save_pretrained(folder)
    return backbone, folder


@pytest.mark.parametrize("offline", [True, False])
def test_auto_backbone_reads_a_local_folder_without_the_hub(backbone_folder, offline, monkeypatch):
    backbone, folder = backbone_folder
    # Online too (HF_HUB_OFFLINE unset), a folder must not reach the Hub: any repo query or socket fails the test.
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", offline)
    monkeypatch.setattr(huggingface_hub.HfApi, "repo_exists", _no_network)
    monkeypatch.setattr(huggingface_hub.HfApi, "model_info", _no_network)
    monkeypatch.setattr(socket.socket, "connect", _no_network)
    monkeypatch.chdir(folder.parent.parent)
    pixels = torch.rand(2, 3, 28, 42)
    with torch.no_grad():
        expected = backbone(pixel_values=pixels).feature_maps
    # An absolute path (not a valid repo id: HFValidationError before the fix) and a relative one shaped like a repo id
    # ("models/tips-backbone": looked up on the Hub before the fix).
    for name in (str(folder), "models/tips-backbone"):
        loaded = AutoBackbone.from_pretrained(name).eval()
        assert isinstance(loaded, TipsBackbone) and loaded.out_features == ["stage1", "stage2"]
        with torch.no_grad():
            maps = loaded(pixel_values=pixels).feature_maps
        assert len(maps) == 2
        for got, want in zip(maps, expected):
            assert torch.equal(got, want)


def test_auto_backbone_still_asks_the_hub_for_repo_ids_online(monkeypatch):
    """Names that are not folders go through transformers' own method (Hub repo or timm model), unchanged."""
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub.HfApi, "repo_exists", _no_network)
    with pytest.raises(HubAsked, match="some-org/some-backbone"):
        AutoBackbone.from_pretrained("some-org/some-backbone")


@pytest.mark.parametrize("model_class", [TipsForSemanticSegmentation, TipsForDepthEstimation, TipsForNormalEstimation])
def test_auto_model_loads_each_dpt_task_without_a_question(model_class, tmp_path, monkeypatch):
    """AutoModel picks the task class named in the folder's `architectures`; before, it found no local class for
    the config and asked on stdin whether to run the folder's remote code."""
    asked = []
    monkeypatch.setattr(builtins, "input", lambda prompt="": asked.append(prompt) or "n")
    torch.manual_seed(0)
    config = TipsDPTConfig(vision_config={**TINY_TOWER, "image_size": 28, "num_hidden_layers": 4}, dpt_channels=8,
                           num_depth_bins=4, num_labels=3)
    model = model_class(config).eval()
    model.save_pretrained(tmp_path)
    loaded = AutoModel.from_pretrained(tmp_path).eval()
    assert type(loaded) is model_class and asked == []
    for key, tensor in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], tensor), key
