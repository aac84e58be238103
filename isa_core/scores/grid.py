"""The codes of a whole factor grid, looked up by factor tuple.

The FactorVAE and BetaVAE scores (Kim & Mnih 2018; Higgins et al. 2017) draw batches as "fix
factor k, draw the others", so they need the code of every factor combination: the codes of a
full ground-truth data set (dSprites: 3 x 6 x 40 x 32 x 32 = 737,280 images), one row each.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from isa_core.errors import field_error

__all__ = ["FactorGrid"]

_WHY = (
    "the FactorVAE and BetaVAE scores fix one factor and draw the others, so they need the "
    "code of every factor combination exactly once: encode the whole data set, or leave these "
    "two scores out"
)


@dataclass(frozen=True)
class FactorGrid:
    """Codes (N, K) in flat-index order, N = prod(sizes): factor tuple v is row v @ strides."""

    codes: np.ndarray  # (N, K), row n = the code of the factor tuple with flat index n
    sizes: tuple[int, ...]  # (F,) number of classes of each factor
    strides: np.ndarray  # (F,) int64, C order: flat index = factors @ strides

    @classmethod
    def from_codes(cls, codes: np.ndarray, factors: np.ndarray, sizes: Sequence[int]) -> FactorGrid:
        """Index ``codes`` (N, K) by their ``factors`` (N, F) classes; refuse a partial grid."""
        sizes = _check_sizes(sizes)
        codes = _check_codes(codes)
        factors = _check_factors(factors, sizes, "factors")
        if factors.shape[0] != codes.shape[0]:
            raise field_error(
                "factors",
                f"has {factors.shape[0]} rows but codes has {codes.shape[0]}: give one factor "
                "row per code row",
            )
        total = math.prod(sizes)
        if codes.shape[0] < total:
            raise field_error(
                "codes",
                f"cover {codes.shape[0]} of the {total} factor combinations of sizes {sizes}: "
                f"{_WHY}",
            )
        if codes.shape[0] > total:
            raise field_error(
                "factors",
                f"repeat combinations: {codes.shape[0]} rows for the {total} combinations of "
                f"sizes {sizes}; {_WHY}",
            )
        strides = _strides(sizes)
        flat = factors @ strides  # (N,)
        counts = np.bincount(flat, minlength=total)
        if (counts != 1).any():
            repeated = int(np.flatnonzero(counts > 1)[0])
            tuple_ = tuple(int(v) for v in np.unravel_index(repeated, sizes))
            raise field_error(
                "factors",
                f"repeat the combination {tuple_} ({int(counts[repeated])} rows), leaving "
                f"{int((counts == 0).sum())} missing: {_WHY}",
            )
        if not np.array_equal(flat, np.arange(total)):
            rows = np.empty(total, dtype=np.int64)
            rows[flat] = np.arange(total)
            codes = codes[rows]
        return cls(codes=codes, sizes=sizes, strides=strides)

    @property
    def num_factors(self) -> int:
        """F, the number of factors."""
        return len(self.sizes)

    @property
    def num_latents(self) -> int:
        """K, the code dimension."""
        return int(self.codes.shape[1])

    def sample_factors(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """n factor tuples (n, F) int64 drawn uniformly from the grid (factors independent)."""
        if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 0:
            raise field_error("n", f"must be a non-negative integer, got {n!r}")
        return rng.integers(0, self.sizes, size=(int(n), self.num_factors), dtype=np.int64)

    def codes_of(self, factors: np.ndarray) -> np.ndarray:
        """The codes (M, K) of the factor tuples ``factors`` (M, F)."""
        factors = _check_factors(factors, self.sizes, "factors")
        return self.codes[factors @ self.strides]


def _strides(sizes: tuple[int, ...]) -> np.ndarray:
    """C-order strides: the last factor varies fastest, as in dSprites' file order."""
    return np.array([math.prod(sizes[f + 1 :]) for f in range(len(sizes))], dtype=np.int64)


def _check_sizes(sizes: Sequence[int]) -> tuple[int, ...]:
    """Factor sizes as a tuple of positive Python ints."""
    values = list(sizes) if isinstance(sizes, Sequence | np.ndarray) else None
    if not values or any(
        isinstance(v, bool) or not isinstance(v, int | np.integer) or v < 1 for v in values
    ):
        raise field_error(
            "sizes",
            f"must be a non-empty list of positive integers (one per factor), got {sizes!r}",
        )
    return tuple(int(v) for v in values)


def _check_codes(codes: np.ndarray) -> np.ndarray:
    """A finite, non-empty (N, K) float array (integers become float64)."""
    codes = np.asarray(codes)
    if codes.ndim != 2 or codes.shape[0] == 0 or codes.shape[1] == 0:
        raise field_error("codes", f"must be a non-empty (N, K) array, got shape {codes.shape}")
    if not (np.issubdtype(codes.dtype, np.floating) or np.issubdtype(codes.dtype, np.integer)):
        raise field_error("codes", f"must hold real numbers, got dtype {codes.dtype}")
    if not np.issubdtype(codes.dtype, np.floating):
        codes = codes.astype(np.float64)
    if not np.isfinite(codes).all():
        raise field_error("codes", "hold NaN or infinite values: give finite codes")
    return codes


def _check_factors(factors: np.ndarray, sizes: tuple[int, ...], field: str) -> np.ndarray:
    """(M, F) int64 class indices within 0..sizes[f]-1 (whole-number floats are accepted)."""
    factors = np.asarray(factors)
    if factors.ndim != 2 or factors.shape[1] != len(sizes):
        raise field_error(
            field,
            f"must be an (M, {len(sizes)}) array of class indices, one column per factor; "
            f"got shape {factors.shape}",
        )
    if np.issubdtype(factors.dtype, np.floating):
        if not (np.isfinite(factors).all() and (factors == np.round(factors)).all()):
            raise field_error(field, "must hold whole-number class indices, got fractions or NaN")
    elif not np.issubdtype(factors.dtype, np.integer):
        raise field_error(field, f"must hold integer class indices, got dtype {factors.dtype}")
    factors = factors.astype(np.int64)
    bad = (factors < 0) | (factors >= np.asarray(sizes, dtype=np.int64))
    if bad.any():
        row, column = (int(i) for i in np.argwhere(bad)[0])
        raise field_error(
            field,
            f"column {column} holds {int(factors[row, column])} (row {row}), outside "
            f"0..{sizes[column] - 1} for a factor of size {sizes[column]}: give class indices "
            "within the factor sizes",
        )
    return factors
