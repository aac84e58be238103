"""The numbers behind the paper's appendix A.5 figures: latents ranked by what they encode,
their traversal grids decoded to images, reconstructions, prior samples, and the active
latents for the latent-vs-true panel.

Each latent z_j is matched to the factor v_k it shares most information with, I(z_j; v_k) by
the quadrature estimator of ``isa_core.metrics``; a latent whose posterior mean barely varies
over the data (variance <= ``ACTIVE_VARIANCE``) is inactive and named so, never by a factor.
A traversal decodes an image's posterior mean with one latent moved through ``steps`` values,
over one of two spans (``TraversalSpan``):

- ``prior`` (default): the prior's marginal quantiles of z_j at levels
  linspace(q, 1 - q, steps), estimated from exact prior samples (Algorithm 1), so that the
  column values are where the model's own prior puts its mass (an ISA prior is not N(0, I));
- ``posterior``: the code's value ± ``half_width`` standard deviations of the aggregate
  posterior q(z_j) = (1/N) Σ_n N(mu_nj, sigma_nj^2), whose variance is
  Var_n(mu_nj) + mean_n(sigma_nj^2).

The arrays returned here are what ``isa_core.plots.latent_traversal``, ``image_grid``,
``latent_vs_true`` and ``isa_core.plots.animation`` draw.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from isa_core.choices import TraversalSpan
from isa_core.codes import Codes
from isa_core.data import GroundTruthData
from isa_core.errors import IsaError, field_error
from isa_core.metrics import mutual_information
from isa_core.models import VAE

__all__ = [
    "ACTIVE_VARIANCE",
    "DSPRITES_FACTORS",
    "PRIOR_SAMPLES",
    "LatentRanking",
    "LatentsVsTrue",
    "Traversal",
    "active_latents",
    "aggregate_spread",
    "decode_rows",
    "latents_vs_true",
    "prior_quantiles",
    "prior_samples",
    "rank_latents",
    "reconstructions",
    "traversal",
    "traversal_codes",
    "traversal_grid",
    "traversal_levels",
]

ACTIVE_VARIANCE = 0.01  # a latent whose posterior mean varies less than this over the data is off
DSPRITES_FACTORS = ("shape", "scale", "orientation", "x", "y")  # the latent-vs-true panel's
PRIOR_SAMPLES = 100_000  # exact prior draws behind the quantiles of the prior span


@dataclass(frozen=True)
class LatentRanking:
    """Each latent's best-matched factor and its mutual information, and the resulting order."""

    factor: np.ndarray  # (K,) index of the factor each latent shares most information with
    mi: np.ndarray  # (K,) that mutual information I(z_j; v_k), nats
    order: list[int]  # the latents by decreasing ``mi``
    labels: list[str]  # per latent: "z<j> · <factor> (<mi>)", or "z<j> · inactive"


@dataclass(frozen=True)
class Traversal:
    """A latent-traversal figure's arrays, in the form ``plots.latent_traversal`` takes."""

    rows: list[np.ndarray]  # per latent: (steps, H, W) or (steps, H, W, C) images in [0, 1]
    original: np.ndarray  # (H, W) or (H, W, C): the image whose code is traversed
    reconstruction: np.ndarray  # like ``original``: the decoded code, Bernoulli means
    values: np.ndarray  # (R, steps): the latent's value in each column
    labels: list[str]  # per row, the latent's label
    caption: str  # one line: what the number in a label is, and where the values come from


@dataclass(frozen=True)
class LatentsVsTrue:
    """The latent-vs-true panel's inputs besides the codes: which latents, their labels, and
    each factor's values (in the form ``plots.latent_vs_true`` takes)."""

    latents: list[int]
    labels: list[str]
    values: list[np.ndarray]  # per factor, the value of each class


def _is_active(codes: Codes, threshold: float = ACTIVE_VARIANCE) -> np.ndarray:
    """(K,) bool: whether each latent's posterior mean varies over the data."""
    return codes.mean.var(0) > threshold


def rank_latents(codes: Codes) -> LatentRanking:
    """Match each latent to the factor it shares most information with and order the latents
    by that mutual information, largest first; an inactive latent is labelled as such."""
    mi, _ = mutual_information(codes.mean, codes.std, codes.factors)  # (F, K)
    factor = mi.argmax(0)
    strength = mi.max(0)
    names = codes.factor_names
    active = _is_active(codes)
    labels = [
        f"z{j} · {names[factor[j]]} ({strength[j]:.2f})" if active[j] else f"z{j} · inactive"
        for j in range(mi.shape[1])
    ]
    order = [int(j) for j in np.argsort(-strength)]
    return LatentRanking(factor, strength, order, labels)


def active_latents(
    codes: Codes, ranking: LatentRanking, threshold: float = ACTIVE_VARIANCE
) -> list[int]:
    """The latents in ranking order whose posterior mean varies over the data (variance above
    ``threshold``); the rest are collapsed to the prior and carry no information."""
    active = _is_active(codes, threshold)
    return [j for j in ranking.order if active[j]]


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


def traversal_levels(steps: int, quantile: float) -> np.ndarray:
    """The prior span's ``steps`` quantile levels, linspace(q, 1 - q, steps), q in (0, 0.5)."""
    if steps < 2:
        raise field_error("steps", f"must be >= 2, got {steps}")
    if not (math.isfinite(quantile) and 0 < quantile < 0.5):
        raise field_error("quantile", f"must be in (0, 0.5), got {quantile}; e.g. 0.02")
    return np.linspace(quantile, 1 - quantile, steps)


def prior_quantiles(
    prior: torch.nn.Module, levels: np.ndarray, samples: int = PRIOR_SAMPLES, seed: int = 0
) -> np.ndarray:
    """The prior's marginal quantiles of each z_j at ``levels``, (len(levels), K), from
    ``samples`` exact draws (Algorithm 1) of ``prior`` (anything with ``.sample(n, generator)``)."""
    if samples < 2:
        raise field_error("samples", f"must be >= 2, got {samples}")
    generator = torch.Generator().manual_seed(seed)
    z = prior.sample(samples, generator=generator).detach().cpu().double().numpy()  # (S, K)
    return np.quantile(z, np.asarray(levels, dtype=np.float64), axis=0)


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
    pictures = images.detach().cpu().permute(0, 2, 3, 1).numpy()
    return pictures[..., 0] if pictures.shape[-1] == 1 else pictures


@torch.no_grad()
def decode_rows(model: VAE, codes: np.ndarray) -> np.ndarray:
    """The decoder's Bernoulli means sigmoid(f(z)) for (steps, K) codes: (steps, H, W) images
    in [0, 1], or (steps, H, W, C) in colour."""
    return _picture(torch.sigmoid(model.decode(torch.from_numpy(codes))))


def _shown_latents(
    codes: Codes, ranking: LatentRanking, max_rows: int, include_inactive: bool
) -> list[int]:
    """The traversal's rows: the active latents by rank, then (if asked) the inactive ones."""
    if max_rows < 1:
        raise field_error("max_rows", f"must be >= 1, got {max_rows}")
    active = active_latents(codes, ranking)
    if include_inactive:
        active += [j for j in ranking.order if j not in active]
    if not active:
        raise IsaError(
            f"no active latent (variance of the posterior mean > {ACTIVE_VARIANCE}): every "
            "latent is collapsed to the prior; include the inactive latents to draw them anyway"
        )
    return active[:max_rows]


def traversal(
    model: VAE,
    codes: Codes,
    data: GroundTruthData,
    ranking: LatentRanking,
    index: int = 0,
    steps: int = 8,
    *,
    span: TraversalSpan = TraversalSpan.prior,
    quantile: float = 0.02,
    half_width: float = 3.0,
    max_rows: int = 10,
    include_inactive: bool = False,
) -> Traversal:
    """Traverse image ``index``'s posterior mean along the active latents (by rank; then the
    inactive ones if ``include_inactive``), at most ``max_rows``, decoding ``steps`` images
    per row over the prior's quantiles or the aggregate posterior's spread (see the module)."""
    last = min(len(data), len(codes.mean)) - 1
    if not 0 <= index <= last:
        raise field_error("index", f"{index} is out of range (0..{last})")
    grid = traversal_grid(steps, half_width)
    levels = traversal_levels(steps, quantile)
    span = TraversalSpan(span)
    shown = _shown_latents(codes, ranking, max_rows, include_inactive)
    base = codes.mean[index].astype(np.float32)
    if span == TraversalSpan.prior:
        quantiles = prior_quantiles(model.prior, levels).astype(np.float32)  # (steps, K)
        where = f"range: the prior's marginal quantiles {quantile:g} to {1 - quantile:g}"
    else:
        spread = aggregate_spread(codes.mean, codes.logvar)
        where = f"range: the code ± {half_width:g} aggregate-posterior standard deviations"
    rows, values = [], []
    for j in shown:
        if span == TraversalSpan.prior:
            row = np.tile(base, (steps, 1))
            row[:, j] = quantiles[:, j]
        else:
            row = traversal_codes(base, spread, j, grid)
        rows.append(decode_rows(model, row))
        values.append(row[:, j])
    original = _picture(data.images([index]))[0]
    reconstruction = decode_rows(model, base[None, :])[0]
    caption = f"number: mutual information with that factor, nats; {where}"
    labels = [ranking.labels[j] for j in shown]
    return Traversal(rows, original, reconstruction, np.array(values), labels, caption)


@torch.no_grad()
def reconstructions(
    model: VAE, data: GroundTruthData, indices: Sequence[int]
) -> tuple[np.ndarray, np.ndarray]:
    """The images at ``indices`` and their reconstructions, the decoder's Bernoulli means at
    the posterior mean: two (n, H, W) arrays, or (n, H, W, C) in colour."""
    if len(indices) == 0:
        raise field_error("indices", "is empty; give at least one image index")
    last = len(data) - 1
    bad = [i for i in indices if not 0 <= i <= last]
    if bad:
        raise field_error("indices", f"{bad[0]} is out of range (0..{last})")
    images = data.images(list(indices))
    mean, _ = model.encode(images)
    return _picture(images), _picture(torch.sigmoid(model.decode(mean)))


@torch.no_grad()
def prior_samples(model: VAE, n: int, seed: int = 0) -> np.ndarray:
    """``n`` images decoded from exact draws of the model's own prior (its learned exponents
    included): Bernoulli means, (n, H, W) or (n, H, W, C)."""
    if n < 1:
        raise field_error("n", f"must be >= 1, got {n}")
    z = model.prior.sample(n, generator=torch.Generator().manual_seed(seed))
    return _picture(torch.sigmoid(model.decode(z.float())))


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
