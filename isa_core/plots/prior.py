"""Figures of 2-D L^p-nested priors: iso-density contours with samples (paper Figs. 2, 3)."""

from __future__ import annotations

import math

import numpy as np
import torch
from matplotlib.figure import Figure

from isa_core.errors import IsaError, field_error
from isa_core.priors import LpNested

__all__ = ["MAX_EXTENT", "prior_contour_grid", "prior_contours"]

MAX_EXTENT = 1e100  # beyond, the grid's spacing overflows float64 and |z|^p is inf


def _check_extent(extent: float) -> None:
    if not (math.isfinite(extent) and 0 < extent <= MAX_EXTENT):
        raise field_error(
            "extent", f"must be a positive number up to {MAX_EXTENT:g}, got {extent:g}; e.g. 3"
        )


def _check_two_dimensional(prior: LpNested, argument: str) -> None:
    if prior.tree.n != 2:
        # no field: the CLI builds priors from several flags and checks n itself
        raise IsaError(
            f"{argument} {prior.tree} has n = {prior.tree.n}; contour plots need 2-D priors"
        )


def prior_contours(
    prior: LpNested,
    samples: np.ndarray,
    extent: float | None = None,
    resolution: int = 301,
) -> Figure:
    """Iso-density contours of a 2-D L^p-nested prior with samples on top (paper Figs. 2, 3).

    Contours are drawn at the log-density levels that enclose 10%, 30%, 50%, 70%, 90% and 99%
    of the samples, so the picture reads the same at any scale. ``extent`` (the half-width of
    the square shown) defaults to just beyond the samples.
    """
    _check_two_dimensional(prior, "prior")
    if extent is None:
        extent = float(np.quantile(np.abs(samples), 0.999)) * 1.1 if len(samples) else 3.0
        extent = extent if math.isfinite(extent) and extent > 0 else 3.0
        if extent > MAX_EXTENT:
            raise field_error(
                "extent",
                f"is needed: the samples reach {extent:g}, beyond the widest plot "
                f"({MAX_EXTENT:g}); give one, e.g. 3",
            )
    _check_extent(extent)
    axis = np.linspace(-extent, extent, resolution)
    grid_x, grid_y = np.meshgrid(axis, axis)
    grid = torch.from_numpy(np.stack([grid_x, grid_y], -1))
    log_density = prior.log_prob(grid).numpy()

    fig = Figure(figsize=(5.2, 5.0), dpi=120)
    ax = fig.add_subplot()
    filled = ax.contourf(grid_x, grid_y, np.exp(log_density), levels=30, cmap="Blues")
    fig.colorbar(filled, ax=ax, label="density p(z)", shrink=0.85)
    sample_logp = prior.log_prob(torch.from_numpy(samples.astype(np.float64))).numpy()
    sample_logp = sample_logp[np.isfinite(sample_logp)]  # far-out samples can underflow to -inf
    if len(sample_logp):
        masses = (0.99, 0.9, 0.7, 0.5, 0.3, 0.1)
        levels = np.unique(np.quantile(sample_logp, [1 - m for m in masses]))
        lines = ax.contour(
            grid_x,
            grid_y,
            log_density,
            levels=levels,
            colors="k",
            linewidths=0.8,
            linestyles="solid",
        )
        labels = {lv: f"{m:.0%}" for lv, m in zip(levels, masses[: len(levels)], strict=False)}
        ax.clabel(lines, fmt=labels, fontsize=7)
    if len(samples):
        ax.scatter(
            samples[:, 0],
            samples[:, 1],
            s=3,
            c="tab:red",
            alpha=0.5,
            lw=0,
            label=f"{len(samples)} samples",
        )
        ax.legend(loc="upper right", fontsize=8, framealpha=0.9)
    ax.set_xlim(-extent, extent)
    ax.set_ylim(-extent, extent)
    ax.set_aspect("equal")
    ax.set_xlabel("$z_1$")
    ax.set_ylabel("$z_2$")
    ax.set_title(f"L$^p$-nested prior {prior.tree}, s = {float(prior.scale):g}", fontsize=10)
    fig.tight_layout()
    return fig


def prior_contour_grid(priors: list[LpNested], extent: float = 3.0) -> Figure:
    """Iso-density contours of several 2-D L^p-nested priors side by side (Figs. 2, 3)."""
    _check_extent(extent)
    for prior in priors:
        _check_two_dimensional(prior, "priors")
    fig = Figure(figsize=(2.8 * len(priors) + 0.4, 3.0), dpi=110)
    axes = fig.subplots(1, len(priors), squeeze=False)[0]
    axis = np.linspace(-extent, extent, 241)
    gx, gy = np.meshgrid(axis, axis)
    grid = torch.from_numpy(np.stack([gx, gy], -1))
    for ax, prior in zip(axes, priors, strict=True):
        ax.contour(gx, gy, prior.log_prob(grid).numpy(), levels=10, cmap="viridis", linewidths=1)
        ax.set_aspect("equal")
        ax.set_title(str(prior.tree), fontsize=8)
        ax.tick_params(labelsize=6)
    fig.suptitle("iso-contours of the log-density", fontsize=9)
    fig.tight_layout()
    return fig
