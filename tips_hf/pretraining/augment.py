"""Multi-crop views for TIPS: one global crop and M local crops per image, with random resized crops and flips.

All randomness comes from a per-sample `torch.Generator`, so a sample's views depend only on (seed, epoch, index):
identical whatever the number of processes or workers, and reproducible after a resume.
"""

from __future__ import annotations

import math

import torch
from PIL import Image
from torchvision.transforms.v2 import functional as TF


def random_resized_crop_box(
    height: int, width: int, scale: tuple[float, float], ratio: tuple[float, float], generator: torch.Generator
) -> tuple[int, int, int, int]:
    """(top, left, h, w) of a crop covering a random area fraction in `scale` with aspect in `ratio` (the Inception
    crop), falling back to a centre crop after 10 tries."""
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        u = torch.rand(2, generator=generator).tolist()
        target = area * (scale[0] + u[0] * (scale[1] - scale[0]))
        aspect = math.exp(log_ratio[0] + u[1] * (log_ratio[1] - log_ratio[0]))
        w = int(round(math.sqrt(target * aspect)))
        h = int(round(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            top = int(torch.randint(0, height - h + 1, (), generator=generator))
            left = int(torch.randint(0, width - w + 1, (), generator=generator))
            return top, left, h, w
    side = min(height, width)
    return (height - side) // 2, (width - side) // 2, side, side


class MultiCropTransform:
    """PIL image → dict(global_crop (3, G, G) uint8, local_crops (M, 3, L, L) uint8).

    Args:
        global_size, local_size (`int`): crop sides.
        num_local_crops (`int`): M.
        global_scale, local_scale (`tuple[float, float]`): area ranges of the random resized crops.
        flip_probability (`float`): horizontal flip probability, per crop.
    """

    def __init__(
        self,
        global_size: int,
        local_size: int,
        num_local_crops: int,
        global_scale: tuple[float, float] = (0.32, 1.0),
        local_scale: tuple[float, float] = (0.05, 0.32),
        flip_probability: float = 0.5,
        ratio: tuple[float, float] = (3 / 4, 4 / 3),
    ):
        self.global_size, self.local_size = global_size, local_size
        self.num_local_crops = num_local_crops
        self.global_scale, self.local_scale = global_scale, local_scale
        self.flip_probability = flip_probability
        self.ratio = ratio

    def crop(self, image: torch.Tensor, size: int, scale, generator: torch.Generator) -> torch.Tensor:
        _, height, width = image.shape
        top, left, h, w = random_resized_crop_box(height, width, scale, self.ratio, generator)
        crop = TF.resized_crop(image, top, left, h, w, [size, size], antialias=True)
        if torch.rand((), generator=generator).item() < self.flip_probability:
            crop = crop.flip(-1)
        return crop

    def __call__(self, image: Image.Image, generator: torch.Generator) -> dict[str, torch.Tensor]:
        tensor = TF.pil_to_tensor(image.convert("RGB"))  # (3, H, W) uint8
        out = {"global_crop": self.crop(tensor, self.global_size, self.global_scale, generator)}
        if self.num_local_crops:
            out["local_crops"] = torch.stack(
                [self.crop(tensor, self.local_size, self.local_scale, generator) for _ in range(self.num_local_crops)]
            )
        return out


def eval_transform(image: Image.Image, size: int) -> torch.Tensor:
    """Deterministic evaluation view: bilinear resize to (size, size), uint8 (3, size, size)."""
    tensor = TF.pil_to_tensor(image.convert("RGB"))
    return TF.resize(tensor, [size, size], antialias=True)
