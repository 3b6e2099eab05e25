"""Pixel normalisation of models pretrained from scratch (`data.pixel_mean` / `data.pixel_std`): the processor, the
training pipeline and the exported folder must all feed the model the same numbers."""

import numpy as np
import pytest
import torch
from conftest import ROOT
from PIL import Image

from tips_hf import TipsImageProcessor, TipsModel, TipsProcessor
from tips_hf.pretraining.config import load_config
from tips_hf.pretraining.data import pixels_to_model

CONFIG = str(ROOT / "training/configs/tiny-cpu.yaml")
MEAN, STD = (0.5, 0.4, 0.3), (0.25, 0.2, 0.5)
SET = [f"data.pixel_mean={list(MEAN)}", f"data.pixel_std={list(STD)}"]


def test_processor_normalises_after_rescale_and_keeps_the_default_off():
    image = torch.zeros(3, 28, 28, dtype=torch.uint8)
    image[0], image[1], image[2] = 255, 102, 0  # 1.0, 0.4, 0.0 in [0, 1]
    plain = TipsImageProcessor(size={"height": 28, "width": 28})(image, return_tensors="pt")["pixel_values"]
    assert not TipsImageProcessor().do_normalize
    torch.testing.assert_close(plain[0, :, 5, 5], torch.tensor([1.0, 0.4, 0.0]), atol=1e-6, rtol=0)
    normalised = TipsImageProcessor(size={"height": 28, "width": 28}, do_normalize=True, image_mean=list(MEAN),
                                    image_std=list(STD))(image, return_tensors="pt")["pixel_values"]
    # (1 - 0.5) / 0.25 = 2, (0.4 - 0.4) / 0.2 = 0, (0 - 0.3) / 0.5 = -0.6
    torch.testing.assert_close(normalised[0, :, 5, 5], torch.tensor([2.0, 0.0, -0.6]), atol=1e-6, rtol=0)


def test_padding_stays_black_under_normalisation():
    processor = TipsImageProcessor(do_resize=False, do_normalize=True, image_mean=list(MEAN), image_std=list(STD))
    out = processor(torch.full((3, 20, 20), 255, dtype=torch.uint8), return_tensors="pt")["pixel_values"][0]
    assert out.shape == (3, 28, 28)  # centre-padded to a multiple of 14
    black = (torch.zeros(3) - torch.tensor(MEAN)) / torch.tensor(STD)
    torch.testing.assert_close(out[:, 0, 0], black, atol=1e-6, rtol=0)


def test_config_needs_both_and_positive_std():
    config = load_config(CONFIG, SET)
    assert config.data.pixel_mean == MEAN and config.data.pixel_std == STD
    with pytest.raises(ValueError, match="pixel_mean and data.pixel_std go together"):
        load_config(CONFIG, [SET[0], "data.pixel_std=null"])
    with pytest.raises(ValueError, match="pixel_std must be positive"):
        load_config(CONFIG, [SET[0], "data.pixel_std=[0.2,0.0,0.2]"])


def test_exported_processor_reproduces_the_training_inputs(tmp_path):
    """What `export_final` saves must give, for an image, exactly what training fed the model."""
    from conftest import tiny_config

    from tips_hf.pretraining.trainer import build_tokenizer, export_final

    config = load_config(CONFIG, [*SET, "data.global_size=28"])
    tokenizer = build_tokenizer(config)
    export_final(TipsModel(tiny_config()), tokenizer, config, tmp_path / "final", {})
    processor = TipsProcessor.from_pretrained(tmp_path / "final")
    assert processor.image_processor.do_normalize
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (28, 28, 3), dtype=np.uint8)
    got = processor(images=Image.fromarray(image), return_tensors="pt")["pixel_values"][0]
    want = pixels_to_model(torch.from_numpy(image).permute(2, 0, 1), config.data.pixel_mean, config.data.pixel_std)
    torch.testing.assert_close(got, want, atol=1e-6, rtol=0)  # float32 rescale-then-normalise vs the same maths


def test_unnormalised_config_is_the_official_input():
    config = load_config(CONFIG, ["data.pixel_mean=null", "data.pixel_std=null"])
    pixels = torch.tensor([[[0, 51, 255]]], dtype=torch.uint8).expand(3, 1, 3)
    torch.testing.assert_close(pixels_to_model(pixels, config.data.pixel_mean, config.data.pixel_std)[0, 0],
                               torch.tensor([0.0, 0.2, 1.0]))


def test_init_from_a_normalised_model_keeps_its_pixels(tmp_path):
    """Continuing from a folder pretrained on normalised pixels (e.g. the contrastive LoRA config on the main job's
    model) feeds it the same pixels; conflicting explicit values are refused."""
    from tips_hf.pretraining.trainer import inherit_pixel_normalisation

    folder = tmp_path / "model"
    TipsImageProcessor(do_normalize=True, image_mean=list(MEAN), image_std=list(STD)).save_pretrained(folder)
    config = load_config(CONFIG, [f"model.init_from={folder}", "data.pixel_mean=null", "data.pixel_std=null"])
    inherit_pixel_normalisation(config)
    assert (config.data.pixel_mean, config.data.pixel_std) == (MEAN, STD)
    same = load_config(CONFIG, [f"model.init_from={folder}", *SET])
    inherit_pixel_normalisation(same)
    assert same.data.pixel_mean == MEAN
    other = load_config(CONFIG, [f"model.init_from={folder}"])  # tiny-cpu's own 0.5 / 0.25
    with pytest.raises(ValueError, match="differ from the processor of model.init_from"):
        inherit_pixel_normalisation(other)
    bare = tmp_path / "bare"
    bare.mkdir()  # no preprocessor_config.json: the released models' [0, 1] input
    plain = load_config(CONFIG, [f"model.init_from={bare}", "data.pixel_mean=null", "data.pixel_std=null"])
    inherit_pixel_normalisation(plain)
    assert plain.data.pixel_mean is None and plain.data.pixel_std is None


def test_inherited_normalisation_with_a_distillation_teacher_is_refused(tmp_path):
    """The teacher check also covers normalisation that `model.init_from` lends after the config was validated."""
    from tips_hf.pretraining.trainer import inherit_pixel_normalisation

    folder = tmp_path / "model"
    TipsImageProcessor(do_normalize=True, image_mean=list(MEAN), image_std=list(STD)).save_pretrained(folder)
    overrides = [f"model.init_from={folder}", "data.pixel_mean=null", "data.pixel_std=null"]
    config = load_config(CONFIG, [*overrides, f"objective.distillation_teacher={tmp_path / 'teacher'}"])
    with pytest.raises(ValueError, match=r"inherited from model.init_from .*distillation_teacher"):
        inherit_pixel_normalisation(config)
    # Explicit values with the same teacher are refused when the config is loaded, and not called inherited.
    with pytest.raises(ValueError, match=r"^data.pixel_mean/pixel_std cannot be combined"):
        load_config(CONFIG, [f"model.init_from={folder}", f"objective.distillation_teacher={tmp_path / 'teacher'}"])
