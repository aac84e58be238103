"""Our generic ground-truth ``.npz``: any image data set with its factors, in one file.

Entries: ``images`` (N, H, W[, C]) uint8, ``factors`` (N, F) integer classes, ``factor_names``
(F,) strings, ``factor_sizes`` (F,) integers, and optionally ``factor_values_<name>`` arrays of
real values; the rows in any order, every cell of the factor grid exactly once.
"""

from __future__ import annotations

import numpy as np
import torch

from isa_core.data.base import ArrayData, GroundTruthData
from isa_core.data.grid import grid_order
from isa_core.errors import IsaError
from isa_core.io import NpzArchive

__all__ = ["load_generic_npz"]


def load_generic_npz(archive: NpzArchive) -> GroundTruthData:
    """The data set in a generic ``.npz`` (see the module doc), named after the file."""
    name = archive.name
    images = archive.array("images")
    factors = archive.array("factors")
    raw_names = archive.array("factor_names", "US", "strings")
    raw_sizes = archive.array("factor_sizes", "iu", "integers (int64)")
    names = tuple(str(n) for n in raw_names.reshape(-1))
    sizes = tuple(int(s) for s in raw_sizes.reshape(-1))
    if len(set(names)) != len(names):
        raise IsaError(f"{name}: factor_names {list(names)} repeat a name; name each factor once")
    if len(names) != len(sizes):
        raise IsaError(f"{name}: {len(names)} factor_names but {len(sizes)} factor_sizes")
    if images.ndim not in (3, 4) or images.dtype != np.uint8:
        raise IsaError(
            f"{name}: images must be uint8 (N, H, W) or (N, H, W, C), got {images.dtype} "
            f"{images.shape}"
        )
    if len(images) != len(factors):
        raise IsaError(f"{name}: {len(images)} images but {len(factors)} factor rows")
    flat, found = grid_order(factors, names, name)
    if found != sizes:
        raise IsaError(f"{name}: factor_sizes says {sizes} but the factors span {found}")
    values = []
    for factor, size in zip(names, sizes, strict=True):
        key = f"factor_values_{factor}"
        if key in archive.files:
            column = archive.array(key, "fiu", "float64 numbers")
        else:
            column = np.arange(size, dtype=float)
        if column.shape != (size,):
            raise IsaError(f"{name}: {key} must have shape ({size},), got {column.shape}")
        values.append(column.astype(np.float64))
    ordered = np.empty_like(images)
    ordered[flat] = images
    if ordered.ndim == 3:
        ordered = ordered[..., None]
    binary = bool(ordered.max(initial=0) <= 1)
    stem = archive.path.stem
    return ArrayData(stem, torch.from_numpy(ordered), names, values, binary=binary)
