# Copyright 2026 The tips-hf authors. Licensed under the Apache License, Version 2.0.
"""Array inputs of the metrics: numpy arrays, torch tensors (any device or dtype) or lists of per-image maps."""

from __future__ import annotations

from typing import Any

import numpy as np


def to_numpy(array: Any) -> np.ndarray:
    if hasattr(array, "detach"):  # torch tensor (any device or dtype)
        array = array.detach().cpu()
        if array.dtype.is_floating_point:
            array = array.float()
        return array.numpy()
    return np.asarray(array)


def as_list_of_arrays(maps: Any) -> list[np.ndarray]:
    """One array per image: a (N, H, W) array/tensor or a list of (H_i, W_i) maps (sizes may differ)."""
    if not isinstance(maps, np.ndarray) and not hasattr(maps, "detach"):
        # a list, or whatever sequence `evaluate` hands over (a `datasets` Column with evaluate 0.4.0)
        return [to_numpy(m) for m in maps]
    array = to_numpy(maps)
    return [array] if array.ndim < 3 else list(array)
