"""Figures of the toy experiments (paper appendix B): factor-analysis curves with posterior
ellipses (B.3-B.5) and over-complete ICA components (B.8)."""

from __future__ import annotations

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Ellipse

from isa_core.choices import FaExperiment, parse_choice
from isa_core.errors import field_error

__all__ = ["fa_curves", "ica_components"]


def _ellipse(ax: Axes, covariance: np.ndarray, **style) -> None:
    """The 2-sigma ellipse of a 2x2 covariance, centred at the origin."""
    values, vectors = np.linalg.eigh(covariance)
    angle = np.degrees(np.arctan2(vectors[1, 1], vectors[0, 1]))
    width, height = 2 * 2 * np.sqrt(values[1]), 2 * 2 * np.sqrt(values[0])  # 2-sigma
    ax.add_patch(Ellipse((0, 0), width, height, angle=angle, fill=False, **style))


def fa_curves(
    experiment: FaExperiment | str,
    grid: np.ndarray,
    loglik: np.ndarray,
    free_energy: dict[float, np.ndarray],
    ellipses: list[tuple[str, np.ndarray, np.ndarray]],
) -> Figure:
    """Appendix B.3-B.5 panels: log-likelihood and F_β along the sweep, and true (tempered)
    vs mean-field posterior covariances (2-sigma ellipses of z1, z2) at a few settings.

    ``experiment`` is ``rotation`` (``grid`` holds θ) or ``prune`` (``grid`` holds α, Eq. 17).
    """
    experiment = parse_choice(FaExperiment, "experiment", experiment)
    rotation = experiment == FaExperiment.rotation
    fig = Figure(figsize=(4.2 + 2.2 * len(ellipses), 3.6), dpi=110)
    grid_spec = fig.add_gridspec(1, 1 + len(ellipses), width_ratios=[2.0] + [1.0] * len(ellipses))
    ax = fig.add_subplot(grid_spec[0])
    x = grid / np.pi if rotation else grid
    ax.plot(x, loglik, color="k", lw=2, label="log-likelihood")
    for beta, values in free_energy.items():
        ax.plot(x, values, lw=1.4, label=f"free energy, β = {beta:g}")
    ax.set_xlabel("rotation θ / π" if rotation else "α (weight of z1)")
    ax.set_ylabel("nats per data point")
    ax.legend(fontsize=7)
    ax.set_title(
        "rotation of an ML solution" if rotation else "over-complete model, Eq. 17",
        fontsize=9,
    )
    for i, (label, true_cov, q_cov) in enumerate(ellipses, start=1):
        sub = fig.add_subplot(grid_spec[i])
        _ellipse(sub, true_cov[:2, :2], color="tab:blue", lw=1.5, label="posterior")
        _ellipse(sub, q_cov[:2, :2], color="tab:red", lw=1.5, ls="--", label="mean field")
        reach = 2.2 * np.sqrt(max(np.diag(true_cov[:2, :2]).max(), np.diag(q_cov[:2, :2]).max()))
        sub.set_xlim(-reach, reach)
        sub.set_ylim(-reach, reach)
        sub.set_aspect("equal")
        sub.set_title(label, fontsize=8)
        sub.set_xlabel("$z_1$", fontsize=8)
        sub.set_ylabel("$z_2$", fontsize=8)
        sub.tick_params(labelsize=6)
        if i == 1:
            sub.legend(fontsize=6, loc="upper right")
    fig.tight_layout()
    return fig


def ica_components(x: np.ndarray, w_true: np.ndarray, fits: list[tuple[str, np.ndarray]]) -> Figure:
    """Appendix B.8 panels: data points, true component directions (blue) and learned ones (red),
    each a line through the origin scaled by the column's norm and labelled by its 0-based
    column index; one panel per fit."""
    if not fits:
        raise field_error("fits", "is empty; give at least one (title, W) panel")
    fig = Figure(figsize=(3.6 * len(fits), 3.8), dpi=110)
    reach = float(np.quantile(np.abs(x), 0.98)) * 1.1
    for i, (title, w) in enumerate(fits, start=1):
        ax = fig.add_subplot(1, len(fits), i)
        ax.scatter(
            x[:, 0], x[:, 1], s=9, facecolors="none", edgecolors="tab:blue", alpha=0.45, lw=0.6
        )
        for columns, color, style, label in (
            (w_true, "tab:blue", "-", "true"),
            (w, "tab:red", "--", "learned"),
        ):
            for k in range(columns.shape[1]):
                end = columns[:, k] * reach / 1.5
                ax.plot(
                    [-end[0], end[0]],
                    [-end[1], end[1]],
                    color=color,
                    ls=style,
                    lw=2,
                    label=label if k == 0 else None,
                )
                if color == "tab:red":  # numbered from 0, like the JSON of `isa toy-ica`
                    ax.annotate(f"{k}", end, color=color, fontsize=8)
        ax.set_xlim(-reach, reach)
        ax.set_ylim(-reach, reach)
        ax.set_aspect("equal")
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("$x_1$")
        ax.set_ylabel("$x_2$")
        ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return fig
