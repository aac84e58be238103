"""Factor-class tables read from files, checked to form a full grid and put in grid order."""

from __future__ import annotations

import math

import numpy as np

from isa_core.errors import IsaError

__all__ = ["grid_order"]


def grid_order(
    classes: np.ndarray, names: tuple[str, ...], source: str
) -> tuple[np.ndarray, tuple[int, ...]]:
    """Each row's flat (C-order) grid index and the factor sizes, refusing any table of
    ``classes`` (N, F) that is not every combination of ``names`` exactly once."""
    if classes.ndim != 2 or classes.shape[1] != len(names) or classes.dtype.kind not in "iu":
        raise IsaError(
            f"{source}: factor classes must be integers of shape (N, {len(names)}), got "
            f"{classes.dtype} {classes.shape}"
        )
    if not len(classes) or not names:
        raise IsaError(f"{source} holds no images or no factors; a data set needs both")
    if classes.min() < 0:
        raise IsaError(f"{source}: factor classes must be >= 0")
    sizes = tuple(int(m) + 1 for m in classes.max(axis=0))
    total = math.prod(sizes)  # Python ints: no overflow before the check below
    grid = "x".join(map(str, sizes))
    if len(classes) != total:
        raise IsaError(
            f"{source}: the factors ({', '.join(names)}) do not form a full grid: they span "
            f"{grid} = {total:,} cells but there are {len(classes):,} rows; "
            "isa needs every combination exactly once"
        )
    strides = np.cumprod((1, *sizes[:0:-1]))[::-1]
    flat = (classes.astype(np.int64) * strides).sum(axis=1)
    distinct = len(np.unique(flat))
    if distinct != total:
        raise IsaError(
            f"{source}: the factors ({', '.join(names)}) do not form a full grid {grid}: "
            f"{len(classes)} rows, {distinct} distinct of {total} cells; isa needs every "
            "combination exactly once"
        )
    return flat, sizes
