"""Lazy, pickle-free reading of `.npz` checkpoints: shapes from the array headers, data one array at a time."""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import numpy as np
import torch

from .layouts import LayoutError


class NpzReader:
    """Read-only view of an `.npz` file that never unpickles and loads one array at a time.

    `shape(key)` reads only the array header, so architecture inference costs nothing; `read(key)` returns a torch
    tensor. Errors name the file and the key.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        if not self.path.is_file():
            raise LayoutError(f"{self.path}: no such file.")
        try:
            self._zip = zipfile.ZipFile(self.path)
        except (zipfile.BadZipFile, EOFError, OSError) as error:
            raise LayoutError(
                f"{self.path}: not a readable .npz archive ({error}); the file may be truncated or of another format."
            ) from None
        self._members = {name[: -len(".npy")]: name for name in self._zip.namelist() if name.endswith(".npy")}
        self._headers: dict[str, tuple[tuple[int, ...], np.dtype]] = {}

    def keys(self) -> list[str]:
        return list(self._members)

    def __contains__(self, key: str) -> bool:
        return key in self._members

    def _header(self, key: str) -> tuple[tuple[int, ...], np.dtype]:
        if key not in self._members:
            raise LayoutError(f"{self.path}: no key {key!r}.")
        if key not in self._headers:
            with self._zip.open(self._members[key]) as handle:
                try:
                    version = np.lib.format.read_magic(handle)
                    read_header = (
                        np.lib.format.read_array_header_1_0
                        if version == (1, 0)
                        else np.lib.format.read_array_header_2_0
                    )
                    shape, _, dtype = read_header(handle)
                except ValueError as error:
                    raise LayoutError(f"{self.path}: key {key!r} has an unreadable array header ({error}).") from None
            if dtype.hasobject:
                raise LayoutError(
                    f"{self.path}: key {key!r} holds pickled Python objects (dtype {dtype}); tips-hf loads plain "
                    "numeric arrays only (np.load(..., allow_pickle=False))."
                )
            self._headers[key] = (tuple(shape), dtype)
        return self._headers[key]

    def shape(self, key: str) -> tuple[int, ...]:
        return self._header(key)[0]

    def read(self, key: str) -> torch.Tensor:
        self._header(key)  # refuses object arrays before any data is read
        with self._zip.open(self._members[key]) as handle:
            try:
                array = np.lib.format.read_array(handle, allow_pickle=False)
            except (ValueError, EOFError, OSError, zipfile.BadZipFile) as error:
                raise LayoutError(
                    f"{self.path}: key {key!r} could not be read ({error}); the file may be truncated or corrupt."
                ) from None
        return torch.from_numpy(np.ascontiguousarray(array))

    def close(self) -> None:
        self._zip.close()

    def __enter__(self) -> NpzReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
