"""PCA of patch features as an RGB picture (the standard way to look at dense ViT features)."""

from __future__ import annotations

import os

import numpy as np
import torch
import torch.nn.functional as F


def pca_rgb(patch_embeds: torch.Tensor, background_threshold: float | None = None) -> torch.Tensor:
    """Project (B, h, w, D) patch features on their first three principal components → (B, h, w, 3) in [0, 1].

    The components are fitted jointly over all images of the batch (so colours are comparable between them) and
    each channel is min-max scaled. With `background_threshold`, patches whose first component falls below it
    (after scaling) are painted black, as in the DINOv2 figures.
    """
    if patch_embeds.ndim != 4:
        raise ValueError(f"patch_embeds must be (batch, h, w, dim), got shape {tuple(patch_embeds.shape)}.")
    batch, height, width, dim = patch_embeds.shape
    flat = patch_embeds.reshape(-1, dim).float()
    flat = flat - flat.mean(dim=0, keepdim=True)
    # torch.pca_lowrank is randomised; a full SVD of the (D x D) covariance is exact and cheap for ViT widths.
    _, _, v = torch.linalg.svd(flat.T @ flat / max(flat.shape[0] - 1, 1))
    projected = flat @ v[:, :3]
    low, high = projected.min(dim=0).values, projected.max(dim=0).values
    rgb = (projected - low) / (high - low).clamp_min(1e-12)
    if background_threshold is not None:
        rgb = torch.where(rgb[:, :1] < background_threshold, torch.zeros_like(rgb), rgb)
    return rgb.reshape(batch, height, width, 3)


def save_pca_picture(
    path: str | os.PathLike,
    patch_embeds: torch.Tensor,
    image: torch.Tensor | None = None,
    scale: int = 14,
) -> None:
    """Write a PNG of the PCA colours of one image's (h, w, D) patches, upscaled by `scale` (nearest), beside the
    input image (3, H, W) in [0, 1] when given. Written to a temporary name and renamed."""
    from PIL import Image

    rgb = pca_rgb(patch_embeds[None] if patch_embeds.ndim == 3 else patch_embeds)[0]
    picture = F.interpolate(rgb.permute(2, 0, 1)[None], scale_factor=scale, mode="nearest")[0]
    if image is not None:
        image = image.float().clamp(0, 1)
        if image.shape[-2:] != picture.shape[-2:]:
            image = F.interpolate(image[None], size=picture.shape[-2:], mode="bilinear", align_corners=False)[0]
        picture = torch.cat([image, torch.ones(3, picture.shape[1], 4), picture], dim=2)
    array = (picture.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    path = os.fspath(path)
    tmp = f"{path}.tmp.png"
    Image.fromarray(array).save(tmp)
    os.replace(tmp, path)
