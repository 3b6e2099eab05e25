"""TipsImageProcessor: RGB conversion of every common input, resize, [0, 1], centre padding, clear errors."""

import numpy as np
import pytest
import torch
from PIL import Image

from tips_hf import TipsImageProcessor
from tips_hf.processing.image_processing_tips import center_pad_to_multiple

RNG = np.random.RandomState(0)
RGB = (RNG.rand(40, 60, 3) * 255).astype(np.uint8)


@pytest.fixture(scope="module")
def processor():
    return TipsImageProcessor(size={"height": 28, "width": 42})


def _pixels(processor, image, **kw):
    return processor(image, return_tensors="pt", **kw)["pixel_values"]


def test_formats_agree(processor):
    reference = _pixels(processor, Image.fromarray(RGB))
    assert reference.shape == (1, 3, 28, 42) and reference.dtype == torch.float32
    assert 0.0 <= reference.min() and reference.max() <= 1.0
    for image in (RGB, torch.from_numpy(RGB).permute(2, 0, 1).contiguous()):
        torch.testing.assert_close(_pixels(processor, image), reference, atol=2 / 255, rtol=0)


# A downscale by ~3x of noise: where antialiasing matters most (a resize without it differs by up to 0.47 here).
NOISE = (np.random.RandomState(1).rand(90, 120, 3) * 255).astype(np.uint8)


def test_resize_matches_independent_antialiased_references():
    """Against PIL's bilinear resize (an independent implementation, always antialiased): within one 8-bit level
    (uint8 rounding; measured max 1/255, mean 3e-6), and against torchvision's antialiased bilinear resize of the
    same uint8 tensor: equal up to float32 rounding of the /255 (measured 3e-8). A resize without antialiasing
    (max 0.47, mean 0.13 away) or another filter (bicubic: 0.06) fails both."""
    from torchvision.transforms.v2 import functional as tvf

    out = _pixels(TipsImageProcessor(size={"height": 28, "width": 42}), NOISE)[0]
    pil = np.asarray(Image.fromarray(NOISE).resize((42, 28), Image.BILINEAR), dtype=np.float32) / 255
    diff = (out - torch.from_numpy(pil).permute(2, 0, 1)).abs()
    assert diff.max() <= 1 / 255 + 1e-6 and diff.mean() < 1e-3, (diff.max(), diff.mean())
    reference = tvf.resize(torch.from_numpy(NOISE).permute(2, 0, 1), [28, 42],
                           interpolation=tvf.InterpolationMode.BILINEAR, antialias=True).float() / 255
    torch.testing.assert_close(out, reference, atol=1e-6, rtol=0)
    aliased = tvf.resize(torch.from_numpy(NOISE).permute(2, 0, 1), [28, 42],
                         interpolation=tvf.InterpolationMode.BILINEAR, antialias=False).float() / 255
    assert (out - aliased).abs().mean() > 0.05  # the references tell the two apart
    # float input (0-255 scale) is resized in float, antialiased, then rescaled
    floats = _pixels(TipsImageProcessor(size={"height": 28, "width": 42}), NOISE.astype(np.float32))[0]
    want = tvf.resize(torch.from_numpy(NOISE).permute(2, 0, 1).float(), [28, 42], antialias=True) / 255
    torch.testing.assert_close(floats, want, atol=1e-6, rtol=0)


def test_no_normalisation_identity_resize():
    processor = TipsImageProcessor(size={"height": 42, "width": 56})
    image = (RNG.rand(42, 56, 3) * 255).astype(np.uint8)
    out = _pixels(processor, image)
    np.testing.assert_allclose(out[0].permute(1, 2, 0).numpy(), image / 255.0, atol=1e-6)


@pytest.mark.parametrize("mode", ["L", "RGBA", "CMYK", "P", "LA", "I;16"])
def test_pil_modes_become_rgb(processor, mode):
    if mode == "I;16":
        image = Image.fromarray((RNG.rand(40, 60) * 65535).astype(np.uint16))
    else:
        image = Image.fromarray(RGB).convert(mode)
    out = _pixels(processor, image)
    assert out.shape == (1, 3, 28, 42)
    assert 0.0 <= out.min() and out.max() <= 1.0 and out.std() > 0.05


def test_sixteen_bit_scaled_not_clipped(processor):
    gray = np.full((40, 60), 32768, dtype=np.uint16)  # mid-grey in 16 bits
    for image in (Image.fromarray(gray), gray, np.repeat(gray[..., None], 3, -1)):
        out = _pixels(processor, image)
        torch.testing.assert_close(out, torch.full_like(out, 32768 / 65535), atol=2 / 255, rtol=0)


def test_rgba_composited_on_white(processor):
    transparent = np.zeros((40, 60, 4), dtype=np.uint8)
    out = _pixels(processor, Image.fromarray(transparent, mode="RGBA"))
    torch.testing.assert_close(out, torch.ones_like(out), atol=1 / 255, rtol=0)


def test_center_pad_like_scenic():
    processor = TipsImageProcessor(do_resize=False)
    out = _pixels(processor, np.full((230, 300, 3), 255, np.uint8))
    assert out.shape == (1, 3, 238, 308)  # 17x22 patches
    assert out[0, :, :4].abs().sum() == 0 and out[0, :, -4:].abs().sum() == 0  # 4 rows top and bottom
    assert out[0, :, :, :4].abs().sum() == 0 and out[0, :, :, -4:].abs().sum() == 0
    assert (out[0, :, 4:-4, 4:-4] == 1).all()
    odd = center_pad_to_multiple(torch.ones(1, 1, 15, 14), 14)
    assert odd.shape == (1, 1, 28, 14) and odd[0, 0, :6].sum() == 0 and odd[0, 0, 6:21].sum() == 15 * 14


def test_size_must_be_multiple_of_patch():
    with pytest.raises(ValueError, match="multiple of patch_size 14"):
        TipsImageProcessor(size={"height": 450, "width": 450})


def test_mixed_sizes_without_resize_error():
    processor = TipsImageProcessor(do_resize=False)
    with pytest.raises(ValueError, match="different sizes"):
        processor([np.zeros((28, 28, 3), np.uint8), np.zeros((42, 28, 3), np.uint8)], return_tensors="pt")


def test_save_load(tmp_path, processor):
    processor.save_pretrained(tmp_path)
    loaded = TipsImageProcessor.from_pretrained(tmp_path)
    torch.testing.assert_close(_pixels(loaded, RGB), _pixels(processor, RGB))
