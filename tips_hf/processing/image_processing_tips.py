# Copyright 2026 The tips-hf authors. Licensed under the Apache License, Version 2.0.
"""Image processor for TIPS: RGB, bilinear resize (448×448 by default), rescale to [0, 1], no mean/std normalisation.

Sizes that are not multiples of the patch size are centre-padded with zeros (the Scenic reference's behaviour) when
the image is not resized. Self-contained so that it travels with the remote-code files.
"""

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from transformers.image_processing_backends import TorchvisionBackend
from transformers.image_processing_base import BatchFeature
from transformers.image_transforms import group_images_by_shape, reorder_images
from transformers.image_utils import PILImageResampling
from transformers.processing_utils import ImagesKwargs

try:  # PIL is optional for tensor/numpy inputs
    from PIL import Image
except ImportError:  # pragma: no cover
    Image = None

_SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")


class TipsImageProcessorKwargs(ImagesKwargs, total=False):
    """
    do_center_pad (`bool`): zero-pad each image symmetrically to the next multiple of `patch_size` (after any
        resize). A no-op for sides that already are multiples.
    patch_size (`int`): the model's patch size (14).
    """

    do_center_pad: bool
    patch_size: int


class TipsImageProcessor(TorchvisionBackend):
    r"""Prepares images for [`TipsModel`].

    Pipeline: convert to RGB (grayscale, RGBA composited on white, CMYK, palette; 16-bit images scaled to 8-bit range)
    → bilinear resize with antialiasing to `size` (default 448×448) → rescale by 1/255 → centre zero-pad to a multiple
    of `patch_size` when needed. No mean/std normalisation by default: the released TIPS models take [0, 1] inputs.
    Models pretrained from scratch with `data.pixel_mean`/`data.pixel_std` save a processor with
    `do_normalize=True`, which then subtracts `image_mean` and divides by `image_std` after the padding (so padding
    stays black).

    Accepts PIL images, numpy arrays and torch tensors (HWC or CHW, uint8, uint16 or float). Float inputs are taken
    to be in [0, 255] like the other transformers processors; pass `do_rescale=False` for floats already in [0, 1].

    Args:
        size (`dict`, defaults to `{"height": 448, "width": 448}`): output size when `do_resize=True`; both sides
            must be multiples of `patch_size`.
        do_resize (`bool`, defaults to `True`): with `False` images keep their size and are centre-padded to a
            multiple of the patch size (as the Scenic reference does).
        do_center_pad (`bool`, defaults to `True`): see above.
    """

    valid_kwargs = TipsImageProcessorKwargs
    model_input_names = ["pixel_values"]
    resample = PILImageResampling.BILINEAR
    size = {"height": 448, "width": 448}
    do_resize = True
    do_rescale = True
    rescale_factor = 1 / 255
    do_normalize = False
    do_convert_rgb = True
    do_center_pad = True
    patch_size = 14

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        self._check_size(self.size, self.do_resize, self.patch_size)

    @staticmethod
    def _check_size(size, do_resize: bool, patch_size: int) -> None:
        if not do_resize or size is None:
            return
        height = size["height"] if isinstance(size, dict) else getattr(size, "height", None)
        width = size["width"] if isinstance(size, dict) else getattr(size, "width", None)
        if height is None or width is None:
            raise ValueError(f"TipsImageProcessor.size must give 'height' and 'width', got {dict(size)}.")
        if height % patch_size or width % patch_size:
            raise ValueError(
                f"TipsImageProcessor.size {height}x{width} must be a multiple of patch_size {patch_size} on both "
                "sides (e.g. 224 or 448)."
            )

    def _prepare_images_structure(self, images: Any, expected_ndims: int = 3) -> Any:
        return super()._prepare_images_structure(_add_channel_axis(images), expected_ndims=expected_ndims)

    def process_image(self, image: Any, *args: Any, **kwargs: Any) -> torch.Tensor:
        image = _to_eight_bit_range(image)
        return super().process_image(image, *args, **kwargs)

    def _preprocess(
        self,
        images: list[torch.Tensor],
        do_resize: bool,
        size,
        resample,
        do_rescale: bool,
        rescale_factor: float,
        return_tensors: str | None = None,
        do_center_pad: bool = True,
        patch_size: int = 14,
        disable_grouping: bool | None = None,
        do_normalize: bool = False,
        image_mean: float | list[float] | None = None,
        image_std: float | list[float] | None = None,
        **kwargs: Any,
    ) -> BatchFeature:
        self._check_size(size, do_resize, patch_size)
        grouped, index = group_images_by_shape(images, disable_grouping=disable_grouping)
        processed = {}
        for shape, stacked in grouped.items():
            if do_resize:
                stacked = self.resize(image=stacked, size=size, resample=resample)
            stacked = self.rescale_and_normalize(stacked, do_rescale, rescale_factor, False, None, None)
            if do_center_pad:
                stacked = center_pad_to_multiple(stacked, patch_size)
            if do_normalize:
                stacked = self.normalize(stacked, image_mean, image_std)
            processed[shape] = stacked
        images = reorder_images(processed, index)
        if return_tensors is not None:
            shapes = {tuple(image.shape) for image in images}
            if len(shapes) > 1:
                raise ValueError(
                    f"Images of different sizes {sorted(shapes)} cannot be stacked into one tensor; resize them "
                    "(do_resize=True) or process them one at a time."
                )
            images = torch.stack(images)
        return BatchFeature(data={"pixel_values": images}, tensor_type=return_tensors)


    def post_process_semantic_segmentation(self, outputs: Any, target_sizes: Any = None) -> list[torch.Tensor]:
        """Label maps from a segmentation output (`outputs.logits` of shape `(B, K, h, w)`).

        Args:
            outputs: a `SemanticSegmenterOutput` (e.g. of [`TipsForSemanticSegmentation`]) or anything with `logits`.
            target_sizes (`list[tuple[int, int]]` or `torch.Tensor` of shape `(B, 2)`, *optional*): `(height, width)`
                per image; the logits are upsampled bilinearly (align_corners=False, as the official decoder) before
                the argmax. `None` keeps the decoder's resolution.

        Returns:
            `list[torch.LongTensor]`: one `(height, width)` map of class ids per image.
        """
        logits = outputs["logits"] if isinstance(outputs, dict) else outputs.logits
        sizes = self._target_sizes(target_sizes, len(logits))
        maps = []
        for index, size in enumerate(sizes):
            item = logits[index : index + 1]
            if size is not None:
                item = F.interpolate(item.float(), size=size, mode="bilinear", align_corners=False)
            maps.append(item[0].argmax(dim=0))
        return maps

    def post_process_depth_estimation(self, outputs: Any, target_sizes: Any = None) -> list[dict[str, torch.Tensor]]:
        """Depth maps from a depth output (`outputs.predicted_depth` of shape `(B, h, w)`, metres).

        Args:
            outputs: a `DepthEstimatorOutput` (e.g. of [`TipsForDepthEstimation`]) or anything with `predicted_depth`.
            target_sizes (`list[tuple[int, int]]` or `torch.Tensor` of shape `(B, 2)`, *optional*): `(height, width)`
                per image; depth is upsampled bilinearly (align_corners=False), as the official decoder does after
                its expectation over bins. `None` keeps the decoder's resolution.

        Returns:
            `list[dict]`: per image `{"predicted_depth": torch.FloatTensor of shape (height, width)}`.
        """
        depth = outputs["predicted_depth"] if isinstance(outputs, dict) else outputs.predicted_depth
        if depth.ndim == 4:  # (B, 1, h, w)
            depth = depth[:, 0]
        results = []
        for index, size in enumerate(self._target_sizes(target_sizes, len(depth))):
            item = depth[index][None, None].float()
            if size is not None:
                item = F.interpolate(item, size=size, mode="bilinear", align_corners=False)
            results.append({"predicted_depth": item[0, 0]})
        return results

    @staticmethod
    def _target_sizes(target_sizes: Any, batch: int) -> list[tuple[int, int] | None]:
        if target_sizes is None:
            return [None] * batch
        if len(target_sizes) != batch:
            raise ValueError(f"Got {len(target_sizes)} target sizes for a batch of {batch}; pass one (height, width) each.")
        return [tuple(int(v) for v in size) for size in target_sizes]


def center_pad_to_multiple(images: torch.Tensor, multiple: int) -> torch.Tensor:
    """Zero-pad (..., H, W) symmetrically to the next multiple of `multiple`; the extra pixel goes bottom/right."""
    height, width = images.shape[-2:]
    pad_h = math.ceil(height / multiple) * multiple - height
    pad_w = math.ceil(width / multiple) * multiple - width
    if pad_h == 0 and pad_w == 0:
        return images
    return F.pad(images, (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2))


def _add_channel_axis(images: Any) -> Any:
    """Give 2-D (H, W) grayscale arrays/tensors a channel axis so they are read as one image, not a batch of rows."""
    if isinstance(images, np.ndarray) and images.ndim == 2:
        return images[..., None]
    if isinstance(images, torch.Tensor) and images.ndim == 2:
        return images[None]
    if isinstance(images, (list, tuple)):
        return type(images)(_add_channel_axis(image) for image in images)
    return images


def _to_eight_bit_range(image: Any) -> Any:
    """16-bit images (PIL 'I;16'/'I', uint16 arrays/tensors) → float32 on the 0–255 scale; images with alpha
    composited on white; CMYK/other PIL modes are left to the RGB conversion. PIL's own RGB conversion clips 16-bit values instead of scaling them."""
    if Image is not None and isinstance(image, Image.Image):
        if image.mode in _SIXTEEN_BIT_MODES:
            array = np.asarray(image).astype(np.float32)
            peak = 65535.0 if image.mode != "I" or array.max() > 255 else 255.0
            return np.repeat((array * (255.0 / peak))[..., None], 3, axis=-1)
        if image.mode == "F":
            return np.repeat(np.asarray(image, dtype=np.float32)[..., None], 3, axis=-1)
        if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
            # composite on white ourselves: transformers < 5.2x's RGB conversion drops the alpha channel instead
            white = Image.new("RGBA", image.size, (255, 255, 255, 255))
            return Image.alpha_composite(white, image.convert("RGBA")).convert("RGB")
        return image
    if isinstance(image, np.ndarray) and image.dtype == np.uint16:
        return image.astype(np.float32) * (255.0 / 65535.0)
    if isinstance(image, torch.Tensor) and image.dtype == torch.uint16:
        return image.to(torch.float32) * (255.0 / 65535.0)
    return image


__all__ = ["TipsImageProcessor", "center_pad_to_multiple"]
