r"""The over-complete ICA toy experiment of appendix B.7-B.8: what (β-)VI does to ICA components.

Generative model: z_n ~ Π_k Student-t(z_nk; ν, scale 1), x_n ~ N(W z_n, σ_x² I), with K = 3
components in D = 2 observed dimensions. Inference is mean-field and not amortized: each data
point has its own q(z_n) = Π_k N(μ_nk, s_nk²). The β-free energy, summed over points, is

    F_β = Σ_n E_q[log N(x_n; W z, σ_x² I)] - β KL(q(z_n) || p(z))
    E_q[log N(x; W z, σ_x² I)] = log N(x; W μ, σ_x² I) - Σ_dk W_dk² s_k² / (2 σ_x²)   (closed form)
    KL = -H(q) - E_q[log p(z)],  H = Σ_k ½ log(2πe s_k²),
    E_q[log t_ν(z_k)] = ∫ N(z; μ_k, s_k²) log t_ν(z) dz    (Gauss-Hermite, 1-D per latent)

Following the appendix, the fit starts at the true W (with each q first fitted to it) and takes
gradient steps (autograd, Adam directions) on W and all q jointly, accepting a step only when
it raises F_β and halving the step otherwise.
"""

from __future__ import annotations

import copy
import functools
import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from isa_core.errors import field_error

__all__ = [
    "IcaFit",
    "IcaProblem",
    "describe_components",
    "directions_to_matrix",
    "fit_ica",
    "ica_free_energy",
    "make_ica_problem",
]

HERMITE_NODES = 48


@dataclass(frozen=True)
class IcaProblem:
    """Data from the true model: x (N, 2), the true W (2, 3), noise variance, Student-t ν."""

    x: np.ndarray
    w_true: np.ndarray
    noise_var: float
    nu: float


@dataclass(frozen=True)
class IcaFit:
    """The fitted W (2, 3), its β-free energy (nats, summed over points) and the steps taken;
    ``start_free_energy`` is F_β at the true W with each q fitted to it."""

    beta: float
    w: np.ndarray
    start_free_energy: float
    free_energy: float
    iterations: int
    accepted: int
    converged: bool


def directions_to_matrix(degrees: tuple[float, ...]) -> np.ndarray:
    """Unit columns at the given angles (degrees from the x axis), (2, K)."""
    radians = np.deg2rad(np.asarray(degrees, dtype=float))
    return np.stack([np.cos(radians), np.sin(radians)])


def make_ica_problem(
    n: int = 200,
    nu: float = 3.5,
    seed: int = 0,
    directions: tuple[float, ...] = (0.0, 50.0, 120.0),
    noise: float = 0.05,
) -> IcaProblem:
    """Draw N points from the over-complete ICA model with Student-t(ν) sources."""
    if n < 1:
        raise field_error("n", f"must be at least 1, got {n}")
    if not nu > 0:
        raise field_error("nu", f"must be positive, got {nu}")
    if not 1e-150 <= noise <= 1e150:  # its square must stay a positive float64
        raise field_error("noise", f"must lie in 1e-150..1e150, got {noise:g}")
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= 2**63 - 1:
        raise field_error("seed", f"must be a whole number in 0..2^63-1, got {seed!r}")
    rng = np.random.default_rng(seed)
    w = directions_to_matrix(directions)
    z = rng.standard_t(nu, size=(n, w.shape[1]))
    x = z @ w.T + noise * rng.standard_normal((n, 2))
    return IcaProblem(x=x, w_true=w, noise_var=noise**2, nu=nu)


@functools.cache
def _hermite(dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    nodes, weights = np.polynomial.hermite.hermgauss(HERMITE_NODES)
    return (
        torch.as_tensor(nodes * math.sqrt(2), dtype=dtype),
        torch.as_tensor(weights / math.sqrt(math.pi), dtype=dtype),
    )


def student_t_log_density(z: Tensor, nu: float) -> Tensor:
    """log t_ν(z) with unit scale."""
    const = math.lgamma((nu + 1) / 2) - math.lgamma(nu / 2) - 0.5 * math.log(nu * math.pi)
    return const - 0.5 * (nu + 1) * torch.log1p(z * z / nu)


def ica_free_energy(
    x: Tensor, w: Tensor, mean: Tensor, logvar: Tensor, noise_var: float, nu: float, beta: float
) -> Tensor:
    """F_β summed over the data points (see the module docstring)."""
    # Broadcast sums rather than matrix products: BLAS kernels for these tiny shapes may pick
    # a different summation order from run to run (memory alignment), and the accept/reject
    # steps would amplify the last-bit differences into different fits.
    residual = x - (mean[:, None, :] * w).sum(-1)  # (N, D)
    spread = (logvar.exp()[:, None, :] * w**2).sum((-1, -2))  # Σ_dk W_dk² s_nk²
    dims = x.shape[1]
    reconstruction = -0.5 * (
        dims * math.log(2 * math.pi * noise_var) + ((residual**2).sum(-1) + spread) / noise_var
    )
    nodes, weights = _hermite(x.dtype)
    points = mean[..., None] + torch.exp(0.5 * logvar)[..., None] * nodes  # (N, K, nodes)
    cross_entropy = (student_t_log_density(points, nu) * weights).sum(-1)  # E_q log p(z_k)
    entropy = 0.5 * (math.log(2 * math.pi) + 1 + logvar)
    kl = -(entropy + cross_entropy).sum(-1)
    return (reconstruction - beta * kl).sum()


def fit_ica(
    problem: IcaProblem,
    beta: float,
    iterations: int = 2000,
    step: float = 0.01,
    tolerance: float = 1e-7,
) -> IcaFit:
    """Maximise F_β over W and every q from the true W, accepting only improving steps."""
    if not beta > 0:
        raise field_error("beta", f"must be positive, got {beta}")
    if iterations < 0:
        raise field_error("iterations", f"must be non-negative, got {iterations}")
    x = torch.as_tensor(problem.x, dtype=torch.float64)
    w = torch.as_tensor(problem.w_true, dtype=torch.float64).clone()
    # Start each q at the minimum-norm sources W^T (W W^T)^-1 x, with the 2x2 inverse written
    # out: LAPACK's least squares can differ in the last bits from run to run (alignment).
    (a, b), (_, c) = (w[:, None, :] * w[None, :, :]).sum(-1).tolist()
    inverse = torch.tensor([[c, -b], [-b, a]], dtype=x.dtype) / (a * c - b * b)
    mean = ((x[:, None, :] * inverse).sum(-1)[:, :, None] * w).sum(1)  # (N, K)
    logvar = torch.full_like(mean, math.log(0.1))

    def objective() -> Tensor:
        return ica_free_energy(x, w, mean, logvar, problem.noise_var, problem.nu, beta)

    # q first, for the true W: the starting point is the true model with its best posteriors.
    _ascend(objective, [mean, logvar], iterations=2000, step=0.05, tolerance=1e-10)
    start = objective().item()
    taken, accepted, converged = _ascend(objective, [w, mean, logvar], iterations, step, tolerance)
    return IcaFit(beta, w.numpy().copy(), start, objective().item(), taken, accepted, converged)


def _ascend(objective, params: list[Tensor], iterations: int, step: float, tolerance: float):
    """Adam-direction ascent on ``params`` (changed in place); a step is kept only if it raises
    the objective, otherwise it is undone and the step size halved. Stops after 50 accepted
    steps in a row that each gain less than ``tolerance`` (relative), or at ``iterations``."""
    for p in params:
        p.requires_grad_(True)
    optimizer = torch.optim.Adam(params, lr=step)
    current = objective()
    accepted = quiet = taken = 0
    converged = False
    for taken in range(1, iterations + 1):  # noqa: B007 - the count is returned
        optimizer.zero_grad()
        (-current).backward()
        saved = [p.detach().clone() for p in params]
        saved_state = copy.deepcopy(optimizer.state_dict())
        optimizer.step()
        trial = objective()
        if trial.item() > current.item():
            gain = trial.item() - current.item()
            current = trial
            accepted += 1
            quiet = quiet + 1 if gain < tolerance * abs(current.item()) else 0
        else:  # undo the step, Adam's moments included, and retry it at half the size
            with torch.no_grad():
                for p, old in zip(params, saved, strict=True):
                    p.copy_(old)
            optimizer.load_state_dict(saved_state)
            for group in optimizer.param_groups:
                group["lr"] *= 0.5
            current = objective()
        if quiet >= 50 or optimizer.param_groups[0]["lr"] < 1e-12:
            converged = True
            break
    for p in params:
        p.requires_grad_(False)
    return taken, accepted, converged


def describe_components(w: np.ndarray, pruned_below: float = 0.1) -> dict:
    """Angles (degrees in [0, 180)), norms, pairwise angles between the component lines
    (degrees in [0, 90]) and the components pruned (norm < ``pruned_below`` of the largest)."""
    norms = np.linalg.norm(w, axis=0)
    angles = np.rad2deg(np.arctan2(w[1], w[0])) % 180.0
    pairs = {}
    for i in range(w.shape[1]):
        for j in range(i + 1, w.shape[1]):
            gap = abs(angles[i] - angles[j]) % 180.0
            pairs[f"{i}-{j}"] = float(min(gap, 180.0 - gap))
    return {
        "directions": [float(a) for a in angles],
        "norms": [float(n) for n in norms],
        "pairwise_angles": pairs,
        "pruned": [int(k) for k in np.flatnonzero(norms < pruned_below * norms.max())],
    }
