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
  (benchmarks/bench_mig.py) measures the total against a 10x finer reference. If
  sigma_min / h would need more than 2^17 grid points, narrower components are widened to 3h
  and ``resolution`` in the result says so.
* ``sampling``: the Monte-Carlo estimator of Chen et al. 2018: H(z_j) = -E log q(z_j) over
  ``samples`` draws z ~ q(z_j), with q evaluated exactly over all N components; conditional
  entropies likewise over the images with v_k = v.
* ``histogram``: Locatello et al. 2019: the posterior means are discretised into ``bins``
  equal-width bins per latent and I is the discrete mutual information with the factor.

H(v_k) is the entropy of the factor's empirical distribution: log |V_k| for a full uniform grid.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from isa_core.errors import IsaError

__all__ = ["MigResult", "mig", "mutual_information", "quadrature_mi", "subspace_mig"]

ESTIMATORS = ("quadrature", "sampling", "histogram")
_MAX_GRID = 1 << 17
_NODE_SPACING = 0.1  # in log sigma


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


def _check(mean: np.ndarray, std: np.ndarray, factors: np.ndarray) -> None:
    if mean.shape != std.shape or mean.ndim != 2 or factors.ndim != 2:
        raise IsaError(
            f"codes must be mean/std (N, K) and factors (N, F); got {mean.shape}, "
            f"{std.shape}, {factors.shape}"
        )
    if len(factors) != len(mean):
        raise IsaError(f"{len(mean)} codes but {len(factors)} factor rows")
    if not (np.isfinite(mean).all() and np.isfinite(std).all()):
        raise IsaError("the codes contain NaN or inf; the model diverged or the file is damaged")
    if (std <= 0).any():
        raise IsaError("posterior standard deviations must be positive")


def _quadrature_entropies(
    mu: np.ndarray,
    sd: np.ndarray,
    groups: list[np.ndarray],
    points_per_sigma: float = 3.0,
    node_spacing: float = _NODE_SPACING,
):
    """Entropies of the marginal mixture and of each grouping's conditional mixtures (1 latent).

    ``groups`` are integer labels (N,) per factor; returns (H_marginal, [H per value] per factor,
    resolution).
    """
    n = len(mu)
    s_min, s_max = float(sd.min()), float(sd.max())
    lo = float(mu.min()) - 8 * s_max - 2 * s_min
    hi = float(mu.max()) + 8 * s_max
    h = s_min / points_per_sigma
    size = 1 << max(4, math.ceil(math.log2((hi - lo) / h + 2)))
    resolution = points_per_sigma
    if size > _MAX_GRID:
        size = _MAX_GRID
        h = (hi - lo) / (size - 2)
        resolution = s_min / h
        sd = np.maximum(sd, points_per_sigma * h)
        s_min = points_per_sigma * h
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
    cells = np.concatenate([ni * size + cell + shift for ni in node_index for shift, _ in spline])
    weights = np.concatenate([nw * sw for nw in node_weight for _, sw in spline])
    omega = 2 * np.pi * np.fft.rfftfreq(size, d=h)
    deposit_transfer = np.sinc(omega * h / (2 * np.pi)) ** 4
    widths = np.exp(nodes)[:, None]
    transfer = np.exp(-0.5 * (omega[None, :] * widths) ** 2) / deposit_transfer  # (nodes, F)
    families = [np.zeros(n, dtype=np.int64), *groups]
    entropies, shares = [], []
    for labels in families:
        values = int(labels.max()) + 1
        index = np.tile(labels, 12) * (count * size) + cells
        grid = np.bincount(index, weights, minlength=values * count * size)
        grid = grid.reshape(values, count, size)
        spectrum = np.einsum("vbf,bf->vf", np.fft.rfft(grid, axis=2), transfer)
        density = np.fft.irfft(spectrum, n=size, axis=1)
        totals = np.bincount(labels, minlength=values).astype(np.float64)
        density /= np.maximum(totals, 1)[:, None] * h
        q = np.clip(density, 1e-300, None)
        entropies.append(-(q * np.log(q)).sum(1) * h)
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
        h_marg, h_cond, weights, resolution = _quadrature_entropies(
            mean[:, j], std[:, j], groups, points_per_sigma, node_spacing
        )
        worst = min(worst, resolution)
        for i in range(f):
            mi[i, j] = h_marg - float((weights[i] * h_cond[i]).sum())
    return mi, worst


def _log_mixture(
    points: torch.Tensor, mu: torch.Tensor, sd: torch.Tensor, groups: torch.Tensor | None
) -> torch.Tensor:
    """log (1/N) sum_n prod_{j in g} N(points_j; mu_nj, sd_nj) per point and group: (S, G).

    ``groups`` is a (K, G) 0/1 matrix; None gives every latent its own mixture. The exponent
    -(x - m)^2 / 2s^2 + log-normaliser is a bilinear form in (x^2, x, 1) and per-component
    coefficients, so each (points x components) block is one matrix product.
    """
    groups = torch.eye(points.shape[1], dtype=torch.float64) if groups is None else groups
    precision = 1.0 / sd**2  # (N, K)
    coefficients = torch.stack(  # (N, K, 3): weights of x^2, x and 1
        [
            -0.5 * precision,
            mu * precision,
            -0.5 * mu**2 * precision - torch.log(sd) - 0.5 * math.log(2 * math.pi),
        ],
        dim=-1,
    )
    features = torch.stack([points**2, points, torch.ones_like(points)], dim=-1)  # (S, K, 3)
    total = torch.full((len(points), groups.shape[1]), -math.inf, dtype=torch.float64)
    chunk = max(1, (1 << 23) // max(1, len(points)))
    for g in range(groups.shape[1]):
        dims = torch.nonzero(groups[:, g]).flatten()
        x = features[:, dims, :].reshape(len(points), -1)  # (S, |g| * 3)
        for start in range(0, len(mu), chunk):
            c = coefficients[start : start + chunk, dims, :].reshape(-1, x.shape[1])  # (c, |g|*3)
            block = x @ c.T  # (S, c): sum over the group's dims of log N
            total[:, g] = torch.logaddexp(total[:, g], torch.logsumexp(block, dim=1))
    return total - math.log(len(mu))


def _sampled_entropy(mu, sd, samples, generator, groups) -> torch.Tensor:
    pick = torch.randint(0, len(mu), (samples,), generator=generator)
    eps = torch.randn(samples, mu.shape[1], generator=generator, dtype=torch.float64)
    points = mu[pick] + sd[pick] * eps
    return -_log_mixture(points, mu, sd, groups).mean(0)


def _sampling_mi(mean, std, factors, samples: int, seed: int, groups=None):
    generator = torch.Generator().manual_seed(seed)
    mu, sd = torch.from_numpy(mean).double(), torch.from_numpy(std).double()
    width = mean.shape[1] if groups is None else groups.shape[1]
    h_marg = _sampled_entropy(mu, sd, samples, generator, groups)
    mi = np.zeros((factors.shape[1], width))
    for i in range(factors.shape[1]):
        h_cond = torch.zeros(width, dtype=torch.float64)
        for v in np.unique(factors[:, i]):
            rows = torch.from_numpy(np.flatnonzero(factors[:, i] == v))
            p = len(rows) / len(mean)
            h_cond += p * _sampled_entropy(mu[rows], sd[rows], samples, generator, groups)
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
    posterior mixtures estimated as in ``sampling``.
    """
    mean = np.asarray(mean, dtype=np.float64)
    std = np.asarray(std, dtype=np.float64)
    factors = np.asarray(factors, dtype=np.int64)
    _check(mean, std, factors)
    groups = torch.zeros(mean.shape[1], len(subspaces), dtype=torch.float64)
    for g, dims in enumerate(subspaces):
        groups[list(dims), g] = 1.0
    mi = _sampling_mi(mean, std, factors, samples, seed, groups)
    entropies = np.array([_factor_entropy(factors[:, i]) for i in range(len(names))])
    return MigResult(np.maximum(mi, 0.0), entropies, list(names), "sampling (subspaces)")


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
    mean = np.asarray(mean, dtype=np.float64)
    std = np.asarray(std, dtype=np.float64)
    factors = np.asarray(factors, dtype=np.int64)
    _check(mean, std, factors)
    if estimator == "quadrature":
        return quadrature_mi(mean, std, factors)
    if estimator == "sampling":
        if samples < 1:
            raise IsaError(f"--samples must be >= 1, got {samples}")
        return _sampling_mi(mean, std, factors, samples, seed), None
    if estimator == "histogram":
        if bins < 2:
            raise IsaError(f"--bins must be >= 2, got {bins}")
        return _histogram_mi(mean, factors, bins), None
    raise IsaError(f"unknown estimator {estimator!r}; use quadrature, sampling or histogram")


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
    mi, resolution = mutual_information(mean, std, factors, estimator, samples, bins, seed)
    entropies = np.array([_factor_entropy(np.asarray(factors)[:, i]) for i in range(len(names))])
    if (entropies <= 0).any():
        constant = [n for n, e in zip(names, entropies, strict=True) if e <= 0]
        raise IsaError(f"factor(s) {', '.join(constant)} take a single value; leave them out")
    return MigResult(np.maximum(mi, 0.0), entropies, list(names), estimator, resolution)
