"""Figures of a sweep's results (paper Figs. 5-7): MIG against reconstruction, the MIG
distribution per method, and the learned subspace exponents."""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure

from isa_core.errors import IsaError
from isa_core.sweeps.results import MIG_RANGE, RunResult

__all__ = ["exponent_histograms", "mig_distribution", "mig_logpx_scatter"]


def _by_beta(results: list[RunResult]) -> list[tuple[float | None, list[RunResult]]]:
    """The results grouped by β, in increasing β (runs without one last)."""
    groups: dict[float | None, list[RunResult]] = {}
    for result in results:
        groups.setdefault(result.beta, []).append(result)
    return sorted(groups.items(), key=lambda item: (item[0] is None, item[0]))


def _standard_error(values: np.ndarray) -> float:
    return values.std(ddof=1) / np.sqrt(len(values)) if len(values) > 1 else 0.0


def mig_logpx_scatter(results: list[RunResult]) -> Figure:
    """MIG against log p(x|z) per method and β, mean ± standard error (Figs. 5b, 5c, 6)."""
    fig = Figure(figsize=(6.4, 4.6), dpi=110)
    ax = fig.add_subplot()
    methods = sorted({str(r.method) for r in results})
    markers = "osD^v<>ph*"
    for m, method in enumerate(methods):
        points = []
        for beta, members in _by_beta([r for r in results if str(r.method) == method]):
            mig = np.array([r.mig for r in members])
            logpx = np.array([r.logpx for r in members])
            points.append(
                (logpx.mean(), mig.mean(), _standard_error(logpx), _standard_error(mig), beta)
            )
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


def mig_distribution(results: list[RunResult], beta: float | None = None) -> Figure:
    """Distribution of MIG per method, box plot with the runs on top (Fig. 5a); only the runs
    with this ``beta`` when one is given."""
    chosen = [r for r in results if beta is None or r.beta == beta]
    methods = sorted({str(r.method) for r in chosen})
    values = [np.array([r.mig for r in chosen if str(r.method) == m]) for m in methods]
    low, high = MIG_RANGE  # MIG lies in 0..1; allow estimation noise, refuse what is damage
    for v in values:
        if len(v) and not (v.dtype.kind in "fiu" and np.all((v >= low) & (v <= high))):
            bad = next(
                x for x in v.tolist() if not (isinstance(x, (int, float)) and low <= x <= high)
            )
            raise IsaError(
                f"results hold a run with mig = {bad!r}, far outside 0..1; it is damaged"
            )
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


def exponent_histograms(results: list[RunResult], bins: int = 20) -> Figure:
    """Histograms of learned subspace exponents, sorted per model so p_1 < p_2 < ... (Fig. 7).

    Each run that learned its exponents gives p0 and one exponent per subspace; all such runs
    must share one prior layout.
    """
    learned = [r.learned_exponents for r in results if r.learned_exponents]
    if not learned:
        raise IsaError("results hold no run that learned its exponents (config learn_exponents)")
    lengths = sorted({len(e) for e in learned})
    if len(lengths) > 1 or lengths[0] < 2:
        raise IsaError(
            f"results hold learned exponent lists of lengths {' and '.join(map(str, lengths))}; "
            "each must hold p0 and the same number (at least one) of subspace exponents"
        )
    p0 = learned[0][0]
    sorted_sub = np.sort(np.array([e[1:] for e in learned]), axis=1)  # (runs, subspaces)
    count = sorted_sub.shape[1]
    # One set of bins for every panel, spanning the exponents and p0 (at least 0.05 wide), so
    # that near-equal exponents still show as bars beside the p0 line.
    low, high = min(sorted_sub.min(), p0), max(sorted_sub.max(), p0)
    middle, half = (low + high) / 2, max((high - low) / 2, 0.025)
    edges = np.linspace(middle - 1.05 * half, middle + 1.05 * half, bins + 1)
    fig = Figure(figsize=(3.0 * count + 0.5, 3.2), dpi=110)
    axes = fig.subplots(1, count, squeeze=False)[0]
    for i, ax in enumerate(axes):
        ax.hist(sorted_sub[:, i], bins=edges, color="tab:blue", alpha=0.8)
        ax.axvline(p0, color="tab:red", ls="--", lw=1.2, label=f"p0 = {p0:g}")
        ax.set_xlabel(f"p_{i + 1}")
        ax.legend(fontsize=7)
    axes[0].set_ylabel("models")
    fig.suptitle(
        f"learned subspace exponents of {len(learned)} models (sorted per model)", fontsize=9
    )
    fig.tight_layout()
    return fig
