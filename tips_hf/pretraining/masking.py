"""Patch masks for masked image modeling with an exact masked count per image (static shapes for compilation)."""

from __future__ import annotations

import math

import torch


class MaskGenerator:
    """Masks `round(ratio · h · w)` patches of an (h, w) grid.

    Args:
        grid (`tuple[int, int]`): patch grid of the global crop.
        ratio (`float`): fraction masked (0.75 in TIPS).
        mode (`str`): `"random"` — uniformly random patches; `"block"` — BEiT-style rectangles of random aspect,
            then trimmed/filled at random to the exact count.
        min_block (`int`): smallest rectangle area (patches) in block mode.
    """

    def __init__(self, grid: tuple[int, int], ratio: float = 0.75, mode: str = "random", min_block: int = 4):
        if mode not in ("random", "block"):
            raise ValueError(f"mask mode must be 'random' or 'block', got {mode!r}.")
        self.height, self.width = grid
        self.count = int(round(ratio * self.height * self.width))
        self.mode = mode
        self.min_block = min_block

    def __call__(self, generator: torch.Generator) -> torch.Tensor:
        """A (h·w,) bool mask, True = masked, with exactly `self.count` True entries."""
        total = self.height * self.width
        if self.mode == "random":
            order = torch.randperm(total, generator=generator)
            mask = torch.zeros(total, dtype=torch.bool)
            mask[order[: self.count]] = True
            return mask
        grid = torch.zeros(self.height, self.width, dtype=torch.bool)
        for _ in range(100):
            if int(grid.sum()) >= self.count:
                break
            remaining = self.count - int(grid.sum())
            area = self.min_block + torch.rand((), generator=generator).item() * max(remaining - self.min_block, 0)
            aspect = math.exp(
                math.log(0.3) + torch.rand((), generator=generator).item() * (math.log(1 / 0.3) - math.log(0.3))
            )
            h = max(1, min(self.height, int(round(math.sqrt(area * aspect)))))
            w = max(1, min(self.width, int(round(math.sqrt(area / aspect)))))
            top = int(torch.randint(0, self.height - h + 1, (), generator=generator))
            left = int(torch.randint(0, self.width - w + 1, (), generator=generator))
            grid[top : top + h, left : left + w] = True
        mask = grid.reshape(-1)
        masked = mask.nonzero().squeeze(1)
        if masked.numel() > self.count:  # trim at random
            drop = masked[torch.randperm(masked.numel(), generator=generator)[: masked.numel() - self.count]]
            mask[drop] = False
        elif masked.numel() < self.count:  # fill at random
            free = (~mask).nonzero().squeeze(1)
            mask[free[torch.randperm(free.numel(), generator=generator)[: self.count - masked.numel()]]] = True
        return mask
