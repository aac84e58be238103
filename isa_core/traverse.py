"""The numbers behind the paper's appendix A.5 figures: latents ranked by what they encode,
their traversal grids decoded to images, and the active latents for the latent-vs-true panel.

Each latent z_j is matched to the factor v_k it shares most information with, I(z_j; v_k) by
the quadrature estimator of ``isa_core.metrics``. A traversal varies one latent of an image's
posterior mean over ``± range`` standard deviations of the aggregate posterior
q(z_j) = (1/N) Σ_n N(mu_nj, sigma_nj^2), whose variance is Var_n(mu_nj) + mean_n(sigma_nj^2).
The arrays returned here are what ``isa_core.plots.latent_traversal`` and ``latent_vs_true``
draw.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from isa_core.codes import Codes
from isa_core.data import GroundTruthData
from isa_core.errors import IsaError, field_error
from isa_core.metrics import mutual_information
from isa_core.models import VAE

__all__ = [
    "ACTIVE_VARIANCE",
    "DSPRITES_FACTORS",
    "LatentRanking",
    "LatentsVsTrue",
    "Traversal",
    "active_latents",
    "aggregate_spread",
    "decode_rows",
    "latents_vs_true",
    "rank_latents",
    "traversal",
    "traversal_codes",
    "traversal_grid",
]

ACTIVE_VARIANCE = 0.01  # a latent whose posterior mean varies less than this over the data is off
DSPRITES_FACTORS = ("shape", "scale", "orientation", "x", "y")  # the latent-vs-true panel's


@dataclass(frozen=True)
class LatentRanking:
    """Each latent's best-matched factor and its mutual information, and the resulting order."""

    factor: np.ndarray  # (K,) index of the factor each latent shares most information with
    mi: np.ndarray  # (K,) that mutual information I(z_j; v_k), nats
    order: list[int]  # the latents by decreasing ``mi``
    labels: list[str]  # per latent: "z<j> · <factor> (<mi>)"


@dataclass(frozen=True)
class Traversal:
    """A latent-traversal figure's arrays, in the form ``plots.latent_traversal`` takes."""

    rows: list[np.ndarray]  # per latent: (steps, H, W) or (steps, H, W, C) images in [0, 1]
    original: np.ndarray  # (H, W) or (H, W, C): the image whose code is traversed
    values: np.ndarray  # (R, steps): the latent's value in each column
    labels: list[str]  # per row, the latent's label


@dataclass(frozen=True)
class LatentsVsTrue:
    """The latent-vs-true panel's inputs besides the codes: which latents, their labels, and
    each factor's values (in the form ``plots.latent_vs_true`` takes)."""

    latents: list[int]
    labels: list[str]
    values: list[np.ndarray]  # per factor, the value of each class


def rank_latents(codes: Codes) -> LatentRanking:
    """Match each latent to the factor it shares most information with and order the latents
    by that mutual information, largest first."""
    mi, _ = mutual_information(codes.mean, codes.std, codes.factors)  # (F, K)
    factor = mi.argmax(0)
    strength = mi.max(0)
    names = codes.factor_names
    labels = [f"z{j} · {names[factor[j]]} ({strength[j]:.2f})" for j in range(mi.shape[1])]
    order = [int(j) for j in np.argsort(-strength)]
    return LatentRanking(factor, strength, order, labels)


def active_latents(
    codes: Codes, ranking: LatentRanking, threshold: float = ACTIVE_VARIANCE
) -> list[int]:
    """The latents in ranking order whose posterior mean varies over the data (variance above
    ``threshold``); the rest are collapsed to the prior and carry no information."""
    return [j for j in ranking.order if codes.mean[:, j].var() > threshold]


def aggregate_spread(mean: np.ndarray, logvar: np.ndarray) -> np.ndarray:
    """Standard deviation of the aggregate posterior q(z_j) per latent, (K,), from the (N, K)
    posterior means and log-variances: sqrt(Var_n(mu_nj) + mean_n(sigma_nj^2))."""
    return np.sqrt(mean.var(0) + np.exp(logvar).mean(0))


def traversal_grid(steps: int, half_width: float) -> np.ndarray:
    """``steps`` evenly spaced offsets from -``half_width`` to +``half_width``, in units of the
    aggregate posterior's standard deviation (errors call the half-width the figure's range)."""
    if steps < 2:
        raise field_error("steps", f"must be >= 2, got {steps}")
    if not (math.isfinite(half_width) and half_width > 0):
        raise field_error("range", f"must be a positive finite number, got {half_width}; e.g. 3")
    return np.linspace(-half_width, half_width, steps)


def traversal_codes(
    base: np.ndarray, spread: np.ndarray, latent: int, grid: np.ndarray
) -> np.ndarray:
    """The codes of one traversal row, (steps, K) float32: ``base`` with latent ``latent``
    moved to base + grid · spread."""
    start = base.astype(np.float32)
    codes = np.tile(start, (len(grid), 1))
    codes[:, latent] = start[latent] + (grid * spread[latent]).astype(np.float32)
    return codes


def _picture(images: torch.Tensor) -> np.ndarray:
    """(N, C, H, W) images as (N, H, W) when grey, (N, H, W, C) when in colour."""
    pictures = images.permute(0, 2, 3, 1).numpy()
    return pictures[..., 0] if pictures.shape[-1] == 1 else pictures


@torch.no_grad()
def decode_rows(model: VAE, codes: np.ndarray) -> np.ndarray:
    """The decoder's Bernoulli means sigmoid(f(z)) for (steps, K) codes: (steps, H, W) images
    in [0, 1], or (steps, H, W, C) in colour."""
    return _picture(torch.sigmoid(model.decode(torch.from_numpy(codes))))


def traversal(
    model: VAE,
    codes: Codes,
    data: GroundTruthData,
    ranking: LatentRanking,
    index: int = 0,
    steps: int = 8,
    half_width: float = 3.0,
    max_rows: int = 10,
) -> Traversal:
    """Traverse the ``max_rows`` highest-ranked latents of image ``index``'s posterior mean
    over ± ``half_width`` aggregate standard deviations, decoding ``steps`` images per row."""
    last = min(len(data), len(codes.mean)) - 1
    if not 0 <= index <= last:
        raise field_error("index", f"{index} is out of range (0..{last})")
    grid = traversal_grid(steps, half_width)
    if max_rows < 1:
        raise field_error("max_rows", f"must be >= 1, got {max_rows}")
    order = ranking.order[:max_rows]
    spread = aggregate_spread(codes.mean, codes.logvar)
    rows, values = [], []
    for j in order:
        row = traversal_codes(codes.mean[index], spread, j, grid)
        rows.append(decode_rows(model, row))
        values.append(row[:, j])
    original = _picture(data.images([index]))[0]
    return Traversal(rows, original, np.array(values), [ranking.labels[j] for j in order])


def latents_vs_true(codes: Codes, ranking: LatentRanking) -> LatentsVsTrue:
    """The active latents (by rank) and the factor values that the latent-vs-true panel of
    dSprites codes needs; refuse codes of other data or without factor values."""
    missing = set(DSPRITES_FACTORS) - set(codes.factor_names)
    if missing:
        lacking = ", ".join(sorted(missing))
        raise IsaError(f"latent-vs-true needs dSprites factors; this data lacks {lacking}")
    latents = active_latents(codes, ranking)
    if not latents:
        raise IsaError(f"no active latent (variance of the posterior mean > {ACTIVE_VARIANCE})")
    if "factor_values" not in codes.metadata:
        raise IsaError("latent-vs-true needs the factor values; these codes do not record them")
    values = [np.asarray(v) for v in codes.metadata["factor_values"]]
    return LatentsVsTrue(latents, [ranking.labels[j] for j in latents], values)
