"""The Mutual Information Gap (Chen et al. 2018; paper section 4) by three estimators.

MIG = mean over factors k of (I(z_a; v_k) - I(z_b; v_k)) / H(v_k), a and b the latents with the
largest and second-largest mutual information with v_k, and

    I(z_j; v_k) = H(z_j) - sum_v p(v) H(z_j | v_k = v),

where q(z_j) = (1/N) sum_n N(z_j; mu_nj, sigma_nj^2) is the aggregate posterior (a 1-D Gaussian
mixture) and q(z_j | v) the same mixture over the images whose factor k equals v.

* ``quadrature`` (default, deterministic): every mixture is evaluated on a uniform grid of step
  h = sigma_min / 3 covering [min mu - 8 sigma_max, max mu + 8 sigma_max], and each entropy is
  the Riemann sum of -q log q (spectrally accurate for these smooth, decaying integrands).
  The mixture is built in Fourier space: component means are deposited on the grid by cubic
  B-spline weights, whose transfer function sinc^4(omega h / 2) is divided out, and
  component widths are interpolated quadratically in log sigma between nodes 0.1 apart, each
  node's Gaussian applied exactly as exp(-omega^2 sigma^2 / 2). The error is bounded by
  (i) the aliasing of the deposit: at frequency omega its relative size is at most
  (sinc(pi - omega h / 2) / sinc(omega h / 2))^4 exp(-(omega sigma_min)^2 / 2), below 3e-5 at
  every frequency for h = sigma_min / 3; (ii) the log-sigma interpolation, below
  1e-4 of the density; (iii) the mass beyond 8 sigma_max, below 1e-15. The benchmark
  (benchmarks/bench_mig.py) measures the total against a 10x finer reference.
  Narrow posteriors (a converged VAE can give std 1e-6 and below, e.g. logvar -24 to -40):
  when h = sigma_min / 3 would need more than 2^17 grid points over the latent's range, every
  entropy of that latent is instead integrated directly, H(q) = -(1/N) sum_n E_{N(mu_n,
  sigma_n^2)}[log q], by 16-point Gauss-Hermite quadrature per component with q summed over
  the components within 8.5 sigma_max of each node (the rest add below exp(-36) of their
  peak). Against trapezoid integration on fine local grids (400 and 2,000 codes, means over
  N(0, 2^2)) it agrees within 3e-6 nats at equal logvar -20 to -40, and within 1e-4 nats when
  the widths in one latent spread over logvar -40 to -24 (a component 1000x narrower than its
  neighbour is a spike that the neighbour's nodes resolve only roughly). 737,280 codes at
  logvar -24 take 8 to 20 s per latent on 2 CPU cores. When even that would exceed 2^29 node
  evaluations per latent (many codes packed within a few sigma of one another), the grid is
  kept at 2^17 points and narrower components are widened to 3h: ``resolution`` (min sigma /
  h) in the result then falls below 3, and MI is biased low, because widened components of
  different factor values overlap: -0.04 nats for 300 codes and -0.19 nats for 2,000 codes
  (of H(v) = 1.61) at logvar -24 to -40 with means over N(0, 2^2), measured against the
  direct integral.
* ``sampling``: the Monte-Carlo estimator of Chen et al. 2018 as their code
  (``estimate_entropies``, ``mutual_info_metric_shapes``) computes it. One draw z_n ~ q(z|x_n)
  per image (``numpy.random.default_rng(seed).standard_normal((N, K))``, row order). Each
  entropy H of a group of images (all N for H(z_j); those with v_k = v for H(z_j | v_k = v))
  is -mean over the group's own draws of log q(z_j), q the mixture of the group's n images:
  log q(z_j) = logsumexp_n log N(z_j; mu_nj, sd_nj^2) minus log n, in float64. A group of
  more than ``samples`` images (the sample budget, 10,000 by default) uses a random
  ``samples`` of its draws (a fresh permutation from the same generator per group, drawn in
  the order marginal, then factor by factor, value by value). So on small data sets (every
  group within the budget, e.g. dsprites-mini) the marginal and conditional terms share their
  draws and most of the Monte-Carlo noise cancels in I = H(z_j) - sum_v p(v) H(z_j | v),
  p(v) = n_v / N (1 / |V_k| on a full grid, as Chen et al.). Subspace MIG uses the same draws
  with q(z_V) the joint mixture of the subspace's latents.
* ``histogram``: Locatello et al. 2019: the posterior means are discretised into ``bins``
  equal-width bins per latent and I is the discrete mutual information with the factor.

H(v_k) is the entropy of the factor's empirical distribution: log |V_k| for a full uniform grid.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

if TYPE_CHECKING:
    from isa_core.codes import Codes

from isa_core.choices import MiEstimator, SubspaceGrouping, parse_choice
from isa_core.errors import IsaError, field_error

__all__ = [
    "MigResult",
    "mig",
    "mig_report",
    "mutual_information",
    "quadrature_mi",
    "subspace_mig",
]

_MAX_GRID = 1 << 17
_HERMITE_NODES = 16
_REACH = 8.5  # in sigma_max: a component farther from a node adds below exp(-36) of its peak
_PAIR_CHUNK = 1 << 16
_DIRECT_BUDGET = 1 << 29  # (node, component) evaluations per latent for the direct route
_QUADRATURE_BYTES = 256 << 20  # the (values, nodes, grid) arrays of one chunk of factor values
_NODE_SPACING = 0.1  # in log sigma
_MAX_WORK_BYTES = 4 << 30
_SAMPLING_BYTES = 64  # per sample and latent, bounding the picked draws and running log-sums
_MIXTURE_BLOCK = 1 << 17  # elements of one (latents, samples, components) block: 1 MiB
_HISTOGRAM_BYTES = 40  # per bin and factor value: counts, joint, outer product, ratio, log


@dataclass
class MigResult:
    """MI matrix (F, K) in nats, factor entropies (F,), the gaps and the MIG."""

    mi: np.ndarray
    entropies: np.ndarray
    names: list[str]
    estimator: str
    resolution: float | None = None  # min sigma / grid step actually used (quadrature)

    @property
    def top(self) -> np.ndarray:
        return np.argsort(-self.mi, axis=1)[:, :2]

    @property
    def gaps(self) -> np.ndarray:
        ordered = -np.sort(-self.mi, axis=1)
        second = ordered[:, 1] if ordered.shape[1] > 1 else np.zeros(len(ordered))
        return (ordered[:, 0] - second) / self.entropies

    @property
    def score(self) -> float:
        return float(self.gaps.mean())

    def as_dict(self) -> dict:
        return {
            "mig": self.score,
            "estimator": self.estimator,
            "factors": [
                {
                    "name": name,
                    "entropy": float(self.entropies[k]),
                    "mi": [float(v) for v in self.mi[k]],
                    "top": [int(t) for t in self.top[k]],
                    "gap": float(self.gaps[k]),
                }
                for k, name in enumerate(self.names)
            ],
        }


def _factor_entropy(classes: np.ndarray) -> float:
    counts = np.bincount(classes)
    p = counts[counts > 0] / len(classes)
    return float(-(p * np.log(p)).sum())


def _prepare(mean, std, factors) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Validate codes and factors; return float64 mean and std, and each factor's classes
    relabelled 0..V-1 in sorted order (any integers may name the classes). ``std`` may be None
    for the histogram estimator, which reads the means only."""
    mean = np.asarray(mean, dtype=np.float64)
    std = None if std is None else np.asarray(std, dtype=np.float64)
    factors = np.asarray(factors)
    std_shape = mean.shape if std is None else std.shape
    if mean.shape != std_shape or mean.ndim != 2 or factors.ndim != 2:
        raise IsaError(
            f"codes must be mean/std (N, K) and factors (N, F); got {mean.shape}, "
            f"{std_shape}, {factors.shape}"
        )
    if len(factors) != len(mean):
        raise IsaError(f"{len(mean)} codes but {len(factors)} factor rows")
    if not len(mean):
        raise IsaError("there are no codes (0 images): MIG of no images is undefined")
    if not mean.shape[1] or not factors.shape[1]:
        raise IsaError(
            f"the codes have {mean.shape[1]} latents and {factors.shape[1]} factors; "
            "MIG needs at least one of each"
        )
    if factors.dtype.kind not in "iub":
        raise IsaError(f"factor classes must be integers, got {factors.dtype}")
    if not (np.isfinite(mean).all() and (std is None or np.isfinite(std).all())):
        raise IsaError("the codes contain NaN or inf; the model diverged or the file is damaged")
    if std is not None and (std <= 0).any():
        raise IsaError(
            "posterior standard deviations must be positive (a logvar below about -1490 "
            "underflows to 0 in float64)"
        )
    labels = np.stack([np.unique(f, return_inverse=True)[1] for f in factors.T], axis=1)
    return mean, std, labels.astype(np.int64)


def _check_memory(need: int, what: str, fix: str, field: str | None = None) -> None:
    """Refuse work over the memory limit; ``field`` names the argument ``what`` starts with."""
    if need > _MAX_WORK_BYTES:
        raise IsaError(
            f"{what} needs about {need / 2**30:,.1f} GiB of memory, over the "
            f"{_MAX_WORK_BYTES >> 30} GiB limit; {fix}",
            field=field,
        )


def _grid(mu: np.ndarray, sd: np.ndarray, points_per_sigma: float):
    """The grid step h, size and origin for one latent's mixtures, the widths to use and the
    resolution s_min / h actually reached.

    The grid covers [min mu - 8 s_max, max mu + 8 s_max] plus room for the B-spline deposit
    (one cell left, two right) and, being periodic, keeps 8 s_max of clearance between the two
    ends. When h = s_min / points_per_sigma would need more than ``_MAX_GRID`` points, h is
    chosen so that everything fits and narrower components are widened to points_per_sigma * h.
    """
    s_min, s_max = float(sd.min()), float(sd.max())
    spread = float(mu.max()) - float(mu.min())
    if not math.isfinite(spread + 16 * s_max + s_max / s_min):
        raise IsaError("the posterior means or widths are too large to integrate (overflow)")
    h = s_min / points_per_sigma
    if (spread + 16 * s_max) / h + 8 > _MAX_GRID:
        room = _MAX_GRID - 8
        h = max((spread + 16 * s_max) / room, spread / (room - 16 * points_per_sigma))
        sd = np.maximum(sd, points_per_sigma * h)
        s_max = max(s_max, points_per_sigma * h)
    size = 1 << max(4, math.ceil(math.log2((spread + 16 * s_max) / h + 8)))
    lo = float(mu.min()) - 8 * s_max - 2 * h
    return h, size, lo, sd, s_min / h


def _hermite() -> tuple[np.ndarray, np.ndarray]:
    """Gauss-Hermite nodes and weights for E over N(0, 1)."""
    t, w = np.polynomial.hermite.hermgauss(_HERMITE_NODES)
    return math.sqrt(2) * t, w / math.sqrt(math.pi)


def _neighbours(mu: np.ndarray, sd: np.ndarray, reach: float) -> tuple[np.ndarray, np.ndarray]:
    """For means sorted ascending: the index range of the components that reach each
    component's quadrature nodes (all others contribute below exp(-_REACH^2 / 2))."""
    width = reach * sd + _REACH * float(sd.max())
    return np.searchsorted(mu, mu - width, "left"), np.searchsorted(mu, mu + width, "right")


def _direct_plan(mu: np.ndarray, sd: np.ndarray) -> tuple[np.ndarray, ...]:
    """Means and widths sorted by mean, with each component's neighbour range."""
    order = np.argsort(mu, kind="stable")
    mu, sd = mu[order], sd[order]
    lo, hi = _neighbours(mu, sd, float(_hermite()[0].max()))
    return mu, sd, lo, hi


def _direct_entropy(mu: np.ndarray, sd: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> float:
    """H(q) = -(1/N) sum_n E_{N(mu_n, sd_n^2)}[log q] of the mixture q, by Gauss-Hermite
    quadrature per component, q summed over the neighbouring components only (sorted means)."""
    nodes, weights = _hermite()
    counts = hi - lo
    ends = np.cumsum(counts)
    n, total, start = len(mu), 0.0, 0
    while start < n:  # chunks of about _PAIR_CHUNK pairs keep the (pairs, nodes) arrays small
        done = int(ends[start - 1]) if start else 0
        stop = max(start + 1, int(np.searchsorted(ends, done + _PAIR_CHUNK, "right")))
        c = counts[start:stop]
        rows = np.repeat(np.arange(start, stop), c)
        first = np.concatenate([[0], np.cumsum(c)[:-1]])
        cols = lo[rows] + np.arange(len(rows)) - np.repeat(first, c)
        # (x - mu_m) / sd_m with x = mu_n + sd_n t, from the mean difference (exact when close).
        z = ((mu[rows] - mu[cols])[:, None] + sd[rows][:, None] * nodes) / sd[cols][:, None]
        log_c = -0.5 * z * z - np.log(sd[cols])[:, None]
        peak = np.maximum.reduceat(log_c, first, axis=0)
        sums = np.add.reduceat(np.exp(log_c - np.repeat(peak, c, axis=0)), first, axis=0)
        total += float(((peak + np.log(sums)) @ weights).sum())
        start = stop
    return -total / n + math.log(n) + 0.5 * math.log(2 * math.pi)


def _direct_entropies(mu: np.ndarray, sd: np.ndarray, groups: list[np.ndarray]):
    """What ``_quadrature_entropies`` returns (but the resolution), by the direct route; None
    when it would take more than ``_DIRECT_BUDGET`` evaluations."""
    families = [[_direct_plan(mu, sd)]]
    for labels in groups:
        families.append(
            [_direct_plan(mu[labels == v], sd[labels == v]) for v in range(int(labels.max()) + 1)]
        )
    pairs = sum(int((plan[3] - plan[2]).sum()) for family in families for plan in family)
    if pairs * _HERMITE_NODES > _DIRECT_BUDGET:
        return None
    entropies = [np.array([_direct_entropy(*plan) for plan in family]) for family in families]
    shares = [np.bincount(labels) / len(mu) for labels in groups]
    return float(entropies[0][0]), entropies[1:], shares


def _quadrature_entropies(
    mu: np.ndarray,
    sd: np.ndarray,
    groups: list[np.ndarray],
    points_per_sigma: float = 3.0,
    node_spacing: float = _NODE_SPACING,
):
    """Entropies of the marginal mixture and of each grouping's conditional mixtures (1 latent).

    ``groups`` are integer labels 0..V-1 (N,) per factor; returns (H_marginal, [H per value]
    per factor, [share per value] per factor, resolution).
    """
    n = len(mu)
    h, size, lo, widened, resolution = _grid(mu, sd, points_per_sigma)
    if resolution < points_per_sigma:  # too narrow for the grid: integrate directly if cheap
        direct = _direct_entropies(mu, sd, groups)
        if direct is not None:
            return (*direct, points_per_sigma)
    sd = widened
    s_min, s_max = float(sd.min()), float(sd.max())
    # Width nodes in log sigma, with quadratic (3-point Lagrange) weights.
    log_sd = np.log(sd)
    span = math.log(s_max) - math.log(s_min)
    count = max(3, math.ceil(span / node_spacing) + 3)
    nodes = math.log(s_min) - node_spacing + node_spacing * np.arange(count)
    position = (log_sd - nodes[0]) / node_spacing
    centre = np.clip(np.rint(position).astype(np.int64), 1, count - 2)
    t = position - centre
    node_index = [centre - 1, centre, centre + 1]
    node_weight = [0.5 * t * (t - 1), 1 - t * t, 0.5 * t * (t + 1)]
    # Cubic B-spline deposit of the means (4 grid points; transfer function sinc^4). The grid
    # has room for the spline on both sides of [lo, hi].
    u = (mu - lo) / h
    cell = np.floor(u).astype(np.int64)
    frac = u - cell
    spline = [
        (-1, (1 - frac) ** 3 / 6),
        (0, (4 - 6 * frac**2 + 3 * frac**3) / 6),
        (1, (4 - 6 * (1 - frac) ** 2 + 3 * (1 - frac) ** 3) / 6),
        (2, frac**3 / 6),
    ]
    # Every component lands on 3 width nodes x 4 grid points: 12 (cell, weight) entries.
    cells = np.stack([ni * size + cell + shift for ni in node_index for shift, _ in spline])
    weights = np.stack([nw * sw for nw in node_weight for _, sw in spline])  # (12, N)
    omega = 2 * np.pi * np.fft.rfftfreq(size, d=h)
    deposit_transfer = np.sinc(omega * h / (2 * np.pi)) ** 4
    widths = np.exp(nodes)[:, None]
    transfer = np.exp(-0.5 * (omega[None, :] * widths) ** 2) / deposit_transfer  # (nodes, F)
    # Values are done in chunks so the (values, nodes, grid) arrays stay within a fixed budget.
    chunk = max(1, _QUADRATURE_BYTES // (count * size * 24))
    families = [np.zeros(n, dtype=np.int64), *groups]
    entropies, shares = [], []
    for labels in families:
        values = int(labels.max()) + 1
        totals = np.bincount(labels, minlength=values).astype(np.float64)
        if values > chunk:  # rows grouped by value, so that each chunk is one slice
            order = np.argsort(labels, kind="stable")
            bounds = np.concatenate([[0], np.cumsum(totals).astype(np.int64)])
        entropy = np.empty(values)
        for first in range(0, values, chunk):
            last = min(values, first + chunk)
            rows = order[bounds[first] : bounds[last]] if values > chunk else slice(None)
            index = (labels[rows] - first) * (count * size) + cells[:, rows]
            grid = np.bincount(
                index.ravel(), weights[:, rows].ravel(), minlength=(last - first) * count * size
            )
            grid = grid.reshape(last - first, count, size)
            spectrum = np.einsum("vbf,bf->vf", np.fft.rfft(grid, axis=2), transfer)
            density = np.fft.irfft(spectrum, n=size, axis=1)
            density /= np.maximum(totals[first:last], 1)[:, None] * h
            q = np.clip(density, 1e-300, None)
            entropy[first:last] = -(q * np.log(q)).sum(1) * h
        entropies.append(entropy)
        shares.append(totals / n)
    return float(entropies[0][0]), entropies[1:], shares[1:], resolution


def quadrature_mi(
    mean: np.ndarray,
    std: np.ndarray,
    factors: np.ndarray,
    points_per_sigma: float = 3.0,
    node_spacing: float = _NODE_SPACING,
) -> tuple[np.ndarray, float]:
    """I(z_j; v_k) (F, K) by quadrature; finer settings give the benchmark's reference."""
    f, k = factors.shape[1], mean.shape[1]
    mi = np.zeros((f, k))
    worst = points_per_sigma
    groups = [factors[:, i] for i in range(f)]
    for j in range(k):
        # MI does not change under a shift; from the smallest mean, the grid positions keep
        # their precision however far from 0 the means lie.
        h_marg, h_cond, weights, resolution = _quadrature_entropies(
            mean[:, j] - mean[:, j].min(), std[:, j], groups, points_per_sigma, node_spacing
        )
        worst = min(worst, resolution)
        for i in range(f):
            mi[i, j] = h_marg - float((weights[i] * h_cond[i]).sum())
    return mi, worst


def _log_mixture(
    points: torch.Tensor, mu: torch.Tensor, sd: torch.Tensor, groups: torch.Tensor | None
) -> torch.Tensor:
    """log q(points_g) per point and group, (S, G): logsumexp over the n components of
    sum_{j in g} log N(points_j; mu_nj, sd_nj^2), minus log n.

    ``groups`` is a (K, G) 0/1 matrix; None gives every latent its own mixture. The
    (latents, points, components) blocks are chunked to at most ``_MIXTURE_BLOCK`` elements.
    """
    centres = mu.T.contiguous()  # (K, N)
    scaled = (math.sqrt(0.5) / sd).T.contiguous()  # (K, N): ((x - m) scaled)^2 = (x - m)^2 / 2sd^2
    log_norm = (-torch.log(sd) - 0.5 * math.log(2 * math.pi)).T.contiguous()  # (K, N)
    x = points.T.contiguous()  # (K, S)
    latents, count = x.shape
    width = latents if groups is None else groups.shape[1]
    total = torch.full((width, count), -math.inf, dtype=torch.float64)  # (G, S)
    # Blocks of at least 256 components, so that merging the running sums stays cheap.
    rows = max(1, min(count, _MIXTURE_BLOCK // (latents * 256)))
    cols = max(1, _MIXTURE_BLOCK // (latents * rows))
    for first in range(0, count, rows):
        part = slice(first, first + rows)
        for start in range(0, len(mu), cols):
            comp = slice(start, start + cols)
            block = x[:, part, None] - centres[:, None, comp]  # (K, s, c)
            block.mul_(scaled[:, None, comp]).square_()
            block = torch.sub(log_norm[:, None, comp], block)  # log N(x_j; mu_nj, sd_nj^2)
            if groups is not None:  # sum the log densities over each group's latents
                block = torch.einsum("kg,ksc->gsc", groups, block)
            total[:, part] = torch.logaddexp(total[:, part], torch.logsumexp(block, dim=2))
    return total.T - math.log(len(mu))


def _group_entropy(points, mu, sd, rows, budget, rng, groups) -> torch.Tensor:
    """-E log q over the group's own draws (a random ``budget`` of them when it has more), q
    the mixture of the group's components: (G,)."""
    picked = rows if len(rows) <= budget else rows[rng.permutation(len(rows))[:budget]]
    picked, rows = torch.from_numpy(picked), torch.from_numpy(rows)
    return -_log_mixture(points[picked], mu[rows], sd[rows], groups).mean(0)


def _sampling_mi(mean, std, factors, samples: int, seed: int, groups=None) -> np.ndarray:
    """I(z_j; v_k) (F, G) by Chen et al.'s Monte-Carlo scheme (see the module docstring)."""
    rng = np.random.default_rng(seed)
    draws = mean + std * rng.standard_normal(mean.shape)  # one z ~ q(z|x_n) per image
    points, mu, sd = (torch.from_numpy(np.ascontiguousarray(a)) for a in (draws, mean, std))
    every = np.arange(len(mean))
    h_marg = _group_entropy(points, mu, sd, every, samples, rng, groups)
    mi = np.zeros((factors.shape[1], len(h_marg)))
    for i in range(factors.shape[1]):
        order = np.argsort(factors[:, i], kind="stable")
        counts = np.bincount(factors[:, i])
        h_cond = torch.zeros_like(h_marg)
        for rows in np.split(order, np.cumsum(counts)[:-1]):
            entropy = _group_entropy(points, mu, sd, rows, samples, rng, groups)
            h_cond += len(rows) / len(mean) * entropy
        mi[i] = (h_marg - h_cond).numpy()
    return mi


def subspace_mig(
    mean: np.ndarray,
    std: np.ndarray,
    factors: np.ndarray,
    names: Sequence[str],
    subspaces: Sequence[Sequence[int]],
    samples: int = 10_000,
    seed: int = 0,
) -> MigResult:
    """MIG with each latent subspace scored as one variable (its joint posterior), by Monte Carlo.

    I(z_V; v_k) = H(z_V) - sum_v p(v) H(z_V | v), the entropies of the |V|-dimensional aggregate
    posterior mixtures estimated as in ``sampling`` (Chen et al.'s scheme, the same draws).
    """
    mean, std, factors = _prepare(mean, std, factors)
    k = mean.shape[1]
    if not subspaces or any(not dims for dims in subspaces):
        raise IsaError("each subspace needs at least one latent")
    if any(not 0 <= j < k for dims in subspaces for j in dims):
        raise IsaError(
            f"the subspaces {[list(d) for d in subspaces]} name latents beyond the codes' "
            f"{k}; the codes do not come from this prior"
        )
    _check_samples(samples, k)
    groups = torch.zeros(k, len(subspaces), dtype=torch.float64)
    for g, dims in enumerate(subspaces):
        groups[list(dims), g] = 1.0
    mi = _sampling_mi(mean, std, factors, samples, seed, groups)
    entropies = np.array([_factor_entropy(factors[:, i]) for i in range(len(names))])
    return MigResult(np.maximum(mi, 0.0), entropies, list(names), "sampling (subspaces)")


def _check_samples(samples: int, latents: int) -> None:
    if samples < 1:
        raise field_error("samples", f"must be >= 1, got {samples}")
    _check_memory(
        samples * latents * _SAMPLING_BYTES,
        f"samples {samples:,} over {latents} latents",
        "use fewer samples (the default, 10,000, is plenty for 2 decimals)",
        field="samples",
    )


def _histogram_mi(mean, factors, bins: int):
    mi = np.zeros((factors.shape[1], mean.shape[1]))
    for j in range(mean.shape[1]):
        edges = np.histogram_bin_edges(mean[:, j], bins)
        code = np.clip(np.digitize(mean[:, j], edges[1:-1]), 0, bins - 1)
        for i in range(factors.shape[1]):
            v = factors[:, i]
            joint = np.bincount(code * (v.max() + 1) + v, minlength=bins * (v.max() + 1))
            joint = joint.reshape(bins, v.max() + 1) / len(v)
            pa, pb = joint.sum(1, keepdims=True), joint.sum(0, keepdims=True)
            nz = joint > 0
            mi[i, j] = float((joint[nz] * np.log(joint[nz] / (pa @ pb)[nz])).sum())
    return mi


def mutual_information(
    mean: np.ndarray,
    std: np.ndarray,
    factors: np.ndarray,
    estimator: str = "quadrature",
    samples: int = 10_000,
    bins: int = 20,
    seed: int = 0,
) -> tuple[np.ndarray, float | None]:
    """I(z_j; v_k) in nats, (F, K), and the quadrature resolution (None for the others)."""
    mean, std, factors = _prepare(mean, std, factors)
    return _mutual_information(mean, std, factors, estimator, samples, bins, seed)


def _mutual_information(mean, std, factors, estimator, samples, bins, seed):
    """``mutual_information`` on prepared codes (see ``_prepare``)."""
    estimator = parse_choice(MiEstimator, "estimator", estimator)
    if std is None and estimator != MiEstimator.histogram:
        raise field_error("std", f"is needed by the {estimator} estimator (histogram reads means)")
    if estimator == MiEstimator.quadrature:
        return quadrature_mi(mean, std, factors)
    if estimator == MiEstimator.sampling:
        _check_samples(samples, mean.shape[1])
        return _sampling_mi(mean, std, factors, samples, seed), None
    if bins < 2:
        raise field_error("bins", f"must be >= 2, got {bins}")
    values = int(factors.max()) + 1
    _check_memory(
        bins * values * _HISTOGRAM_BYTES,
        f"bins {bins:,} with factors of up to {values} values",
        "use fewer bins (the default is 20)",
        field="bins",
    )
    return _histogram_mi(mean, factors, bins), None


def mig(
    mean: np.ndarray,
    std: np.ndarray,
    factors: np.ndarray,
    names: Sequence[str],
    estimator: str = "quadrature",
    samples: int = 10_000,
    bins: int = 20,
    seed: int = 0,
) -> MigResult:
    """MIG over the given factors (columns of ``factors``, named ``names``)."""
    mean, std, factors = _prepare(mean, std, factors)
    if len(names) != factors.shape[1]:
        raise IsaError(f"{factors.shape[1]} factor columns but {len(names)} names")
    mi, resolution = _mutual_information(mean, std, factors, estimator, samples, bins, seed)
    entropies = np.array([_factor_entropy(factors[:, i]) for i in range(len(names))])
    if (entropies <= 0).any():
        constant = [n for n, e in zip(names, entropies, strict=True) if e <= 0]
        raise IsaError(f"factor(s) {', '.join(constant)} take a single value; leave them out")
    return MigResult(np.maximum(mi, 0.0), entropies, list(names), estimator, resolution)


NORMALIZATION = "H(v_k), the factor's empirical entropy (log |V_k| on a full grid)"


def mig_report(
    codes: Codes,
    estimator: MiEstimator | str = MiEstimator.quadrature,
    factors: Sequence[str] | str | None = None,
    samples: int = 10_000,
    bins: int = 20,
    seed: int = 0,
    group: SubspaceGrouping | str = SubspaceGrouping.none,
) -> dict:
    """MIG of a codes file as the JSON record `isa mig` prints (and sweeps store): the score,
    per-factor MI and gaps, mean log p(x|z), and with ``group=subspaces`` the subspace MIG.
    ``factors`` limits the score to those factors (names, or one comma-separated string)."""
    import numpy as np

    names = codes.factor_names
    if not len(codes.mean):
        raise IsaError("the codes are of 0 images; MIG of no images is undefined")
    keep = list(range(len(names)))
    if factors is not None:
        given = factors if isinstance(factors, str) else ",".join(factors)
        if isinstance(factors, str):
            factors = [f.strip() for f in factors.split(",") if f.strip()]
        unknown = [f for f in factors if f not in names]
        if unknown or not factors:
            raise field_error(
                "factors",
                f"{given!r}: unknown {', '.join(unknown) or 'list'}; "
                f"this data has {', '.join(names)}",
            )
        keep = [names.index(f) for f in factors]
    chosen = [names[i] for i in keep]
    histogram = parse_choice(MiEstimator, "estimator", estimator) == MiEstimator.histogram
    std = None if histogram else codes.std  # the histogram reads the means only
    result = mig(
        codes.mean, std, codes.factors[:, keep], chosen, str(estimator), samples, bins, seed
    )
    record = result.as_dict()
    record["n"] = len(codes.mean)
    record["logpx"] = None if codes.logpx is None else float(np.mean(codes.logpx))
    record["scored_factors"] = chosen
    record["normalization"] = NORMALIZATION
    if result.resolution is not None:
        record["resolution"] = result.resolution
    if SubspaceGrouping(group) == SubspaceGrouping.subspaces:
        record["subspaces"] = _subspace_record(codes, keep, samples, seed)
    return record


def _subspace_record(codes: Codes, keep: list[int], samples: int, seed: int) -> dict:
    """Subspace MIG of codes whose metadata names the model's ISA tree."""
    from isa_core.priors import LpTree

    config = codes.metadata.get("config") or {}
    if not isinstance(config, dict) or not isinstance(config.get("tree"), str):
        raise field_error(
            "group", "subspaces needs the model's prior; these codes do not record it"
        )
    subspaces = [list(r) for r in LpTree.parse(config["tree"]).subspaces]
    if all(len(s) == 1 for s in subspaces):
        raise field_error(
            "group", "subspaces needs an ISA prior; this model's subspaces are single latents"
        )
    names = codes.factor_names
    chosen = [names[i] for i in keep]
    result = subspace_mig(
        codes.mean, codes.std, codes.factors[:, keep], chosen, subspaces, samples, seed
    )
    return {"groups": subspaces, **result.as_dict()}
