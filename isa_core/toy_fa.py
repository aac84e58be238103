"""The factor-analysis toy experiments of appendix B: what (β-)VI does to a linear model.

Factor analysis (Eqs. 14-16): z ~ N(0, I_K), x ~ N(W z, D), here D = sigma^2 I. For given W
and β the optimal mean-field q(z|x) is the diagonal Gaussian with the mean of the tempered
posterior and its diagonal precision (B.2):

    Sigma~^-1 = (1/β) W^T D^-1 W + I,   R = Sigma~ (1/β) W^T D^-1,   Sigma_q^-1 = diag(Sigma~^-1),

and with S = E[x x^T] the data's second moment, per data point

    F_β = E_q[log p(x|z)] - β KL(q || p)
        = -1/2 [log det(2 pi D) + tr(D^-1 (I - W R) S (I - W R)^T) + tr(W^T D^-1 W Sigma_q)]
          - β/2 [tr Sigma_q + tr(R S R^T) - K - log det Sigma_q],
    log p(x) = -1/2 [log det(2 pi C) + tr(C^-1 S)],  C = W W^T + D.

``rotation`` (B.3, B.5) rotates an ML solution with orthogonal columns in latent space,
W(θ) = W_ML R(θ), which keeps W W^T and so the likelihood; ``prune`` (B.4) is Eq. 17.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from isa_core.choices import FaExperiment, parse_choice
from isa_core.errors import field_error

__all__ = [
    "FaExperiment",
    "FaModel",
    "FaSweep",
    "fa_ellipses",
    "fa_free_energy",
    "fa_log_likelihood",
    "fa_mean_field",
    "fa_sweep",
    "prune_model",
    "rotation_model",
]

MAX_POINTS = 100_000  # more points along a curve than any figure can show


@dataclass
class FaModel:
    """Factor-analysis weights (L, K), isotropic noise variance, and the data's second moment."""

    weights: np.ndarray
    noise: float
    second_moment: np.ndarray


def _check_beta(beta: float) -> None:
    if not (math.isfinite(beta) and beta > 0):
        raise field_error("beta", f"must be a positive number, got {beta}")


def fa_mean_field(model: FaModel, beta: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The tempered posterior covariance, recognition weights R and mean-field covariance."""
    _check_beta(beta)
    w, k = model.weights, model.weights.shape[1]
    precision = (w.T @ w) / (beta * model.noise) + np.eye(k)
    posterior = np.linalg.inv(precision)
    recognition = posterior @ w.T / (beta * model.noise)
    mean_field = np.diag(1.0 / np.diag(precision))
    return posterior, recognition, mean_field


def fa_free_energy(model: FaModel, beta: float) -> float:
    """F_β per data point (nats) at the optimal mean-field q for these weights (Eq. 16)."""
    w, s = model.weights, model.second_moment
    dims, k = w.shape
    _, r, sigma_q = fa_mean_field(model, beta)
    residual = np.eye(dims) - w @ r
    recon = -0.5 * (
        dims * math.log(2 * math.pi * model.noise)
        + np.trace(residual @ s @ residual.T) / model.noise
        + np.trace(w.T @ w @ sigma_q) / model.noise
    )
    kl = 0.5 * (np.trace(sigma_q) + np.trace(r @ s @ r.T) - k - np.log(np.linalg.det(sigma_q)))
    return float(recon - beta * kl)


def fa_log_likelihood(model: FaModel) -> float:
    """log p(x) per data point (nats): -1/2 [log det(2 pi C) + tr(C^-1 S)], C = W W^T + D."""
    w, s = model.weights, model.second_moment
    c = w @ w.T + model.noise * np.eye(w.shape[0])
    _, logdet = np.linalg.slogdet(2 * math.pi * c)
    return float(-0.5 * (logdet + np.trace(np.linalg.solve(c, s))))


def rotation_model(theta: float, noise: float = 0.1) -> FaModel:
    """W_ML = diag(2, 1) (orthogonal columns) rotated in latent space by θ; data covariance
    W_ML W_ML^T + D, so every θ is a maximum-likelihood solution."""
    w_ml = np.diag([2.0, 1.0])
    rotation = np.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])
    second = w_ml @ w_ml.T + noise * np.eye(2)
    return FaModel(w_ml @ rotation, noise, second)


def prune_model(alpha: float, rho: float = 0.5, noise: float = 0.1) -> FaModel:
    """Eq. 17: x = α/√2 [1,1] z1 + β_w/√2 [1,1] z2 + ρ/√2 [1,-1] z3 + ε with α² + β_w² = 1."""
    if not 0 <= alpha <= 1:
        raise field_error("alpha", f"must lie in [0, 1], got {alpha}")
    beta_w = math.sqrt(1 - alpha**2)
    w = np.array([[alpha, beta_w, rho], [alpha, beta_w, -rho]]) / math.sqrt(2)
    return FaModel(w, noise, w @ w.T + noise * np.eye(2))


@dataclass(frozen=True)
class FaSweep:
    """log p(x) and F_β (nats per data point) along one experiment's parameter ``grid``, which
    is θ (``parameter`` "theta") for rotation and α ("alpha") for prune."""

    experiment: FaExperiment
    parameter: str
    grid: np.ndarray  # (points,)
    loglik: np.ndarray  # (points,)
    free_energy: dict[float, np.ndarray]  # β -> (points,)


def _model(experiment: FaExperiment, value: float) -> FaModel:
    return rotation_model(value) if experiment == FaExperiment.rotation else prune_model(value)


def fa_sweep(experiment: FaExperiment | str, betas: list[float], points: int = 181) -> FaSweep:
    """The exact log-likelihood and, per β, the mean-field free energy at ``points`` evenly
    spaced settings of the experiment's parameter."""
    experiment = _experiment(experiment)
    for beta in betas:
        _check_beta(beta)
    if points < 2:
        raise field_error("points", f"must be at least 2 for a curve, got {points}")
    if points > MAX_POINTS:
        raise field_error(
            "points", f"{points:,} is more than a curve can show; use at most {MAX_POINTS:,}"
        )
    if experiment == FaExperiment.rotation:
        parameter, grid = "theta", np.linspace(0, math.pi, points)
    else:
        parameter, grid = "alpha", np.linspace(0, 0.5, points)
    loglik = np.array([fa_log_likelihood(_model(experiment, v)) for v in grid])
    free_energy = {
        beta: np.array([fa_free_energy(_model(experiment, v), beta) for v in grid])
        for beta in betas
    }
    return FaSweep(experiment, parameter, grid, loglik, free_energy)


def fa_ellipses(
    experiment: FaExperiment | str, beta: float
) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """The tempered posterior and the mean-field covariance at three settings of the
    experiment (θ = 0, π/8, π/4; or α = 0, 1/4, 1/2), each with its panel label."""
    experiment = _experiment(experiment)
    if experiment == FaExperiment.rotation:
        shown = [(v, f"θ = {v / math.pi:.3g}π") for v in (0.0, math.pi / 8, math.pi / 4)]
    else:
        shown = [(v, f"α = {v:g}") for v in (0.0, 0.25, 0.5)]
    ellipses = []
    for value, label in shown:
        posterior, _, mean_field = fa_mean_field(_model(experiment, value), beta)
        ellipses.append((f"{label}, β = {beta:g}", posterior, mean_field))
    return ellipses


def _experiment(experiment: FaExperiment | str) -> FaExperiment:
    return parse_choice(FaExperiment, "experiment", experiment)
