"""Figures (matplotlib, Agg): each function returns a Figure; callers save it through io."""

from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")

import numpy as np
import torch
from matplotlib.figure import Figure

from isa_core.data.base import GroundTruthData
from isa_core.errors import IsaError
from isa_core.priors import LpNested

__all__ = ["factor_sweeps", "prior_contours"]


MAX_EXTENT = 1e100  # beyond, the grid's spacing overflows float64 and |z|^p is inf


def _check_extent(extent: float) -> None:
    if not (math.isfinite(extent) and 0 < extent <= MAX_EXTENT):
        raise IsaError(
            f"the plot extent must be a positive number up to {MAX_EXTENT:g}, got {extent:g}; "
            "give --extent, e.g. 3"
        )


def prior_contours(
    prior: LpNested,
    samples: np.ndarray,
    extent: float | None = None,
    resolution: int = 301,
) -> Figure:
    """Iso-density contours of a 2-D L^p-nested prior with samples on top (paper Figs. 2, 3).

    Contours are drawn at the log-density levels that enclose 10%, 30%, 50%, 70%, 90% and 99%
    of the samples, so the picture reads the same at any scale.
    """
    if prior.tree.n != 2:
        raise ValueError(f"contour plots need a 2-D prior, got n = {prior.tree.n}")
    if extent is None:
        extent = float(np.quantile(np.abs(samples), 0.999)) * 1.1 if len(samples) else 3.0
        extent = extent if math.isfinite(extent) and extent > 0 else 3.0
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


def factor_sweeps(data: GroundTruthData, columns: int = 10) -> Figure:
    """One row per factor, swept across (up to ``columns`` evenly spaced) values.

    The other factors stay at their middle class; each row is labelled with the factor and
    each panel with the value shown.
    """
    sizes = data.factor_sizes
    base = [size // 2 for size in sizes]
    width = min(columns, max(sizes))
    fig = Figure(figsize=(1.1 * width + 1.4, 1.15 * len(sizes) + 0.5), dpi=110)
    axes = fig.subplots(len(sizes), width, squeeze=False)
    for k, (name, size) in enumerate(zip(data.factor_names, sizes, strict=True)):
        shown = np.unique(np.linspace(0, size - 1, min(width, size)).round().astype(int))
        tuples = torch.tensor([[*base[:k], c, *base[k + 1 :]] for c in shown])
        images = data.pixels(data.factors_to_index(tuples))
        for j in range(width):
            ax = axes[k, j]
            ax.set_xticks([])
            ax.set_yticks([])
            if j >= len(shown):
                ax.axis("off")
                continue
            cmap = "gray" if images.ndim == 3 else None
            vmax = 1 if data.binary else 255
            ax.imshow(images[j], cmap=cmap, vmin=0, vmax=vmax, interpolation="nearest")
            ax.set_title(f"{data.factor_values[k][shown[j]]:.3g}", fontsize=7, pad=2)
            for spine in ax.spines.values():
                spine.set_color("0.6")
        axes[k, 0].set_ylabel(name, fontsize=9, rotation=0, ha="right", va="center")
    fig.suptitle(
        f"{data.name}: each row sweeps one factor, others at their middle class", fontsize=9
    )
    fig.tight_layout()
    return fig


def latent_traversal(
    rows: list[np.ndarray], original: np.ndarray, values: np.ndarray, labels: list[str]
) -> Figure:
    """Latent traversals (paper A.5): one row per latent, the decoded images along it.

    ``rows[r]`` is (steps, H, W) or (steps, H, W, C) in [0, 1]; ``values`` (R, steps) the latent
    values shown; ``original`` the image whose code is traversed.
    """
    steps = rows[0].shape[0]
    fig = Figure(figsize=(0.9 * (steps + 1) + 2.2, 0.9 * len(rows) + 0.8), dpi=110)
    axes = fig.subplots(len(rows), steps + 1, squeeze=False)
    cmap = "gray" if original.ndim == 2 else None
    for r, images in enumerate(rows):
        for c in range(steps + 1):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            image = original if c == 0 else images[c - 1]
            ax.imshow(image, cmap=cmap, vmin=0, vmax=1, interpolation="nearest")
            if c > 0:
                ax.set_title(f"{values[r, c - 1]:+.2f}", fontsize=6, pad=1)
        axes[r, 0].set_ylabel(labels[r], fontsize=7, rotation=0, ha="right", va="center")
    axes[0, 0].set_title("input", fontsize=7, pad=1)
    fig.suptitle(
        "latent traversals: each row varies one latent around the input's code", fontsize=9
    )
    fig.tight_layout()
    return fig


_SHAPE_COLOURS = {0: ("tab:green", "square"), 1: ("tab:red", "ellipse"), 2: ("tab:blue", "heart")}


def latent_vs_true(
    mean: np.ndarray,
    factors: np.ndarray,
    names: list[str],
    values: list[np.ndarray],
    latents: list[int],
    labels: list[str],
) -> Figure:
    """Chen et al.'s panel (paper A.5): per active latent, its mean over (x, y), vs scale and
    vs orientation, one line per shape (red ellipse, green square, blue heart)."""
    col = {name: names.index(name) for name in ("shape", "scale", "orientation", "x", "y")}
    fig = Figure(figsize=(8.5, 2.0 * len(latents) + 0.6), dpi=110)
    axes = fig.subplots(len(latents), 3, squeeze=False)
    sizes = {name: int(factors[:, i].max()) + 1 for name, i in col.items()}
    for r, j in enumerate(latents):
        m = mean[:, j]
        xy = np.zeros((sizes["y"], sizes["x"]))
        counts = np.zeros_like(xy)
        np.add.at(xy, (factors[:, col["y"]], factors[:, col["x"]]), m)
        np.add.at(counts, (factors[:, col["y"]], factors[:, col["x"]]), 1)
        image = axes[r, 0].imshow(
            xy / np.maximum(counts, 1), cmap="coolwarm", origin="upper", interpolation="nearest"
        )
        fig.colorbar(image, ax=axes[r, 0], fraction=0.046, pad=0.03)
        axes[r, 0].set_ylabel(labels[r], fontsize=8)
        axes[r, 0].set_xlabel("x →, y ↓", fontsize=7)
        axes[r, 0].set_xticks([])
        axes[r, 0].set_yticks([])
        for panel, factor in ((1, "scale"), (2, "orientation")):
            ax = axes[r, panel]
            for shape in range(sizes["shape"]):
                rows = factors[:, col["shape"]] == shape
                sums = np.bincount(factors[rows, col[factor]], m[rows], minlength=sizes[factor])
                n = np.bincount(factors[rows, col[factor]], minlength=sizes[factor])
                colour, label = _SHAPE_COLOURS.get(shape, (None, f"shape {shape}"))
                ax.plot(
                    values[col[factor]], sums / np.maximum(n, 1), color=colour, label=label, lw=1.2
                )
            ax.tick_params(labelsize=7)
            if r == len(latents) - 1:
                ax.set_xlabel(factor, fontsize=8)
            if r == 0 and panel == 1:
                ax.legend(fontsize=6, loc="best")
    axes[0, 0].set_title("mean over (x, y)", fontsize=8)
    axes[0, 1].set_title("mean vs scale", fontsize=8)
    axes[0, 2].set_title("mean vs orientation", fontsize=8)
    fig.suptitle("active latents against the true factors", fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 0.98))
    return fig


def _ellipse(ax, covariance: np.ndarray, **style) -> None:
    from matplotlib.patches import Ellipse

    values, vectors = np.linalg.eigh(covariance)
    angle = np.degrees(np.arctan2(vectors[1, 1], vectors[0, 1]))
    width, height = 2 * 2 * np.sqrt(values[1]), 2 * 2 * np.sqrt(values[0])  # 2-sigma
    ax.add_patch(Ellipse((0, 0), width, height, angle=angle, fill=False, **style))


def fa_curves(
    experiment: str,
    grid: np.ndarray,
    loglik: np.ndarray,
    free_energy: dict[float, np.ndarray],
    ellipses: list[tuple[str, np.ndarray, np.ndarray]],
) -> Figure:
    """Appendix B.3-B.5 panels: log-likelihood and F_β along the sweep, and true (tempered)
    vs mean-field posterior covariances (2-sigma ellipses of z1, z2) at a few settings."""
    fig = Figure(figsize=(4.2 + 2.2 * len(ellipses), 3.6), dpi=110)
    grid_spec = fig.add_gridspec(1, 1 + len(ellipses), width_ratios=[2.0] + [1.0] * len(ellipses))
    ax = fig.add_subplot(grid_spec[0])
    x = grid / np.pi if experiment == "rotation" else grid
    ax.plot(x, loglik, color="k", lw=2, label="log-likelihood")
    for beta, values in free_energy.items():
        ax.plot(x, values, lw=1.4, label=f"free energy, β = {beta:g}")
    ax.set_xlabel("rotation θ / π" if experiment == "rotation" else "α (weight of z1)")
    ax.set_ylabel("nats per data point")
    ax.legend(fontsize=7)
    ax.set_title(
        "rotation of an ML solution" if experiment == "rotation" else "over-complete model, Eq. 17",
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


def _groups(rows: list[dict], keys: tuple[str, ...]) -> dict[tuple, list[dict]]:
    out: dict[tuple, list[dict]] = {}
    for row in rows:
        out.setdefault(tuple(row.get(k) for k in keys), []).append(row)
    return out


def mig_logpx_scatter(rows: list[dict]) -> Figure:
    """MIG against log p(x|z) per method and β, mean ± standard error (Figs. 5b, 5c, 6)."""
    fig = Figure(figsize=(6.4, 4.6), dpi=110)
    ax = fig.add_subplot()
    methods = sorted({str(r.get("method")) for r in rows})
    markers = "osD^v<>ph*"
    for m, method in enumerate(methods):
        points = []
        for (beta,), members in sorted(
            _groups([r for r in rows if str(r.get("method")) == method], ("beta",)).items(),
            key=lambda item: (item[0][0] is None, item[0][0]),
        ):
            mig = np.array([r["mig"] for r in members])
            logpx = np.array([r["logpx"] for r in members])
            se = lambda v: v.std(ddof=1) / np.sqrt(len(v)) if len(v) > 1 else 0.0  # noqa: E731
            points.append((logpx.mean(), mig.mean(), se(logpx), se(mig), beta))
        xs, ys, xe, ye, betas = zip(*points, strict=True)
        ax.errorbar(
            xs,
            ys,
            xerr=xe,
            yerr=ye,
            marker=markers[m % len(markers)],
            capsize=3,
            label=method,
            lw=1,
        )
        for x, y, beta in zip(xs, ys, betas, strict=True):
            ax.annotate(
                f"β={beta:g}" if beta is not None else "",
                (x, y),
                fontsize=7,
                xytext=(4, 4),
                textcoords="offset points",
            )
    ax.set_xlabel("log p(x|z), nats per image (better →)")
    ax.set_ylabel("MIG (better ↑)")
    ax.legend(fontsize=8)
    ax.set_title("disentanglement against reconstruction, mean ± standard error", fontsize=9)
    fig.tight_layout()
    return fig


def mig_distribution(rows: list[dict], beta: float | None = None) -> Figure:
    """Distribution of MIG per method, box plot with the runs on top (Fig. 5a)."""
    chosen = [r for r in rows if beta is None or r.get("beta") == beta]
    methods = sorted({str(r.get("method")) for r in chosen})
    values = [np.array([r["mig"] for r in chosen if str(r.get("method")) == m]) for m in methods]
    for v in values:  # MIG lies in 0..1; allow estimation noise, refuse what must be damage
        if len(v) and not (v.dtype.kind in "fiu" and np.all((v >= -1) & (v <= 2))):
            bad = next(x for x in v.tolist() if not (isinstance(x, (int, float)) and -1 <= x <= 2))
            raise IsaError(f"a results row has mig = {bad!r}, far outside 0..1; it is damaged")
    fig = Figure(figsize=(1.8 * len(methods) + 2.0, 4.2), dpi=110)
    ax = fig.add_subplot()
    ax.boxplot(values, showmeans=True)
    ax.set_xticks(range(1, len(methods) + 1), methods)
    rng = np.random.default_rng(0)
    low, high = ax.get_ylim()
    ax.set_ylim(low, high + 0.3 * (high - low))  # room for the summary text above the boxes
    for i, v in enumerate(values, start=1):
        ax.scatter(i + rng.uniform(-0.12, 0.12, len(v)), v, s=12, alpha=0.6, color="tab:red")
        ax.text(
            i,
            high + 0.27 * (high - low),
            f"mean {v.mean():.3f}\nmedian {np.median(v):.3f}\nmax {v.max():.3f}",
            ha="center",
            va="top",
            fontsize=7,
        )
    ax.set_ylabel("MIG")
    ax.set_title(
        f"MIG per method{'' if beta is None else f', β = {beta:g}'} ({len(chosen)} runs)",
        fontsize=9,
    )
    fig.tight_layout()
    return fig


def exponent_histograms(rows: list[dict], bins: int = 20) -> Figure:
    """Histograms of learned subspace exponents, sorted per model so p_1 < p_2 < ... (Fig. 7)."""
    learned = [
        r["exponents"]
        for r in rows
        if r.get("exponents") and (r.get("config") or {}).get("learn_exponents")
    ]
    if not learned:
        raise ValueError("no run in the results learned its exponents")
    p0 = learned[0][0]
    sorted_sub = np.sort(np.array([e[1:] for e in learned]), axis=1)  # (runs, subspaces)
    count = sorted_sub.shape[1]
    fig = Figure(figsize=(3.0 * count + 0.5, 3.2), dpi=110)
    axes = fig.subplots(1, count, squeeze=False)[0]
    for i, ax in enumerate(axes):
        ax.hist(sorted_sub[:, i], bins=bins, color="tab:blue", alpha=0.8)
        ax.axvline(p0, color="tab:red", ls="--", lw=1.2, label=f"p0 = {p0:g}")
        ax.set_xlabel(f"p_{i + 1}")
        ax.legend(fontsize=7)
    axes[0].set_ylabel("models")
    fig.suptitle(
        f"learned subspace exponents of {len(learned)} models (sorted per model)", fontsize=9
    )
    fig.tight_layout()
    return fig


def prior_contour_grid(priors: list[LpNested], extent: float = 3.0) -> Figure:
    """Iso-density contours of several 2-D L^p-nested priors side by side (Figs. 2, 3)."""
    _check_extent(extent)
    fig = Figure(figsize=(2.8 * len(priors) + 0.4, 3.0), dpi=110)
    axes = fig.subplots(1, len(priors), squeeze=False)[0]
    axis = np.linspace(-extent, extent, 241)
    gx, gy = np.meshgrid(axis, axis)
    grid = torch.from_numpy(np.stack([gx, gy], -1))
    for ax, prior in zip(axes, priors, strict=True):
        if prior.tree.n != 2:
            raise ValueError(f"contour grids need 2-D priors, got {prior.tree}")
        ax.contour(gx, gy, prior.log_prob(grid).numpy(), levels=10, cmap="viridis", linewidths=1)
        ax.set_aspect("equal")
        ax.set_title(str(prior.tree), fontsize=8)
        ax.tick_params(labelsize=6)
    fig.suptitle("iso-contours of the log-density", fontsize=9)
    fig.tight_layout()
    return fig
