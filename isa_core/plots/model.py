"""Figures of a trained model (paper appendix A.5): latent traversals, image grids
(reconstructions, prior samples), and latents against the true factors of dSprites."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
from matplotlib.figure import Figure

from isa_core.data.dsprites import FACTOR_NAMES, SHAPE_NAMES
from isa_core.errors import IsaError

if TYPE_CHECKING:
    from isa_core.traverse import Traversal

__all__ = ["image_grid", "latent_traversal", "latent_vs_true"]

# One colour per shape class, in class order (Chen et al.'s panel: green, red, blue).
SHAPE_COLOURS = ("tab:green", "tab:red", "tab:blue")


def latent_traversal(traversal: Traversal) -> Figure:
    """Latent traversals (paper A.5): one row per latent, the decoded images along it, after
    two columns with the input and its reconstruction; the caption explains the labels."""
    rows, values = traversal.rows, traversal.values
    if not rows:
        raise IsaError("rows is empty; give the decoded images of at least one latent")
    steps = rows[0].shape[0]
    columns = steps + 2
    # Margins in inches: the row labels on the left, the title on top, the caption below;
    # explicit (not tight_layout), so the long row labels do not widen every column's gap.
    width, height = 0.78 * columns + 1.7, 0.9 * len(rows) + 0.9
    margins = dict(left=1.6 / width, right=1 - 0.1 / width, top=1 - 0.55 / height)
    margins.update(bottom=0.35 / height, wspace=0.08, hspace=0.3)
    fig = Figure(figsize=(width, height), dpi=110)
    axes = fig.subplots(len(rows), columns, squeeze=False, gridspec_kw=margins)
    cmap = "gray" if traversal.original.ndim == 2 else None
    for r, images in enumerate(rows):
        shown = [traversal.original, traversal.reconstruction, *images]
        for c, image in enumerate(shown):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            ax.imshow(image, cmap=cmap, vmin=0, vmax=1, interpolation="nearest")
            if c >= 2:
                ax.set_title(f"{values[r, c - 2]:+.2f}", fontsize=6, pad=1)
        axes[r, 0].set_ylabel(traversal.labels[r], fontsize=7, rotation=0, ha="right", va="center")
    axes[0, 0].set_title("input", fontsize=7, pad=1)
    axes[0, 1].set_title("reconstruction", fontsize=7, pad=1)
    fig.suptitle(
        "latent traversals: each row moves one latent, the others stay at the input's code",
        fontsize=9,
        y=1 - 0.12 / height,
    )
    fig.text(0.5, 0.08 / height, traversal.caption, ha="center", va="bottom", fontsize=7)
    return fig


def image_grid(images: np.ndarray, row_labels: list[str], title: str) -> Figure:
    """A grid of images, (R, C, H, W) grey or (R, C, H, W, 3) colour in [0, 1], one label
    per row (e.g. inputs above their reconstructions, or samples of the prior)."""
    if images.ndim not in (4, 5) or images.shape[0] < 1 or images.shape[1] < 1:
        raise IsaError(
            f"images has shape {images.shape}; give (rows, columns, H, W) or (..., H, W, 3)"
        )
    if len(row_labels) != images.shape[0]:
        raise IsaError(f"row_labels has {len(row_labels)} labels for {images.shape[0]} rows")
    rows, columns = images.shape[:2]
    fig = Figure(figsize=(0.9 * columns + 1.4, 0.9 * rows + 0.6), dpi=110)
    axes = fig.subplots(rows, columns, squeeze=False)
    cmap = "gray" if images.ndim == 4 else None
    for r in range(rows):
        for c in range(columns):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            ax.imshow(images[r, c], cmap=cmap, vmin=0, vmax=1, interpolation="nearest")
        axes[r, 0].set_ylabel(row_labels[r], fontsize=7, rotation=0, ha="right", va="center")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def latent_vs_true(
    mean: np.ndarray,
    factors: np.ndarray,
    names: list[str],
    values: list[np.ndarray],
    latents: list[int],
    labels: list[str],
    *,
    shape_names: Sequence[str] = SHAPE_NAMES,
) -> Figure:
    """Chen et al.'s panel (paper A.5): per active latent, its mean over (x, y), vs scale and
    vs orientation, one line per shape (green square, red ellipse, blue heart).

    ``mean`` (N, K) are the posterior means, ``factors`` (N, F) the factor classes named by
    ``names`` (which must include dSprites' five), ``values[f]`` factor f's value per class;
    ``latents`` the latents drawn, ``labels`` their row labels.
    """
    missing = [name for name in FACTOR_NAMES if name not in names]
    if missing:
        raise IsaError(
            f"names lack the dSprites factor(s) {', '.join(missing)}; latent-vs-true panels "
            "need all of " + ", ".join(FACTOR_NAMES)
        )
    if not latents:
        raise IsaError("latents is empty; give at least one active latent")
    shape, scale, orientation, x, y = FACTOR_NAMES
    col = {name: names.index(name) for name in FACTOR_NAMES}
    fig = Figure(figsize=(8.5, 2.0 * len(latents) + 0.6), dpi=110)
    axes = fig.subplots(len(latents), 3, squeeze=False)
    sizes = {name: int(factors[:, i].max()) + 1 for name, i in col.items()}
    for r, j in enumerate(latents):
        m = mean[:, j]
        xy = np.zeros((sizes[y], sizes[x]))
        counts = np.zeros_like(xy)
        np.add.at(xy, (factors[:, col[y]], factors[:, col[x]]), m)
        np.add.at(counts, (factors[:, col[y]], factors[:, col[x]]), 1)
        image = axes[r, 0].imshow(
            xy / np.maximum(counts, 1), cmap="coolwarm", origin="upper", interpolation="nearest"
        )
        fig.colorbar(image, ax=axes[r, 0], fraction=0.046, pad=0.03)
        axes[r, 0].set_ylabel(labels[r], fontsize=8)
        axes[r, 0].set_xlabel(f"{x} →, {y} ↓", fontsize=7)
        axes[r, 0].set_xticks([])
        axes[r, 0].set_yticks([])
        for panel, factor in ((1, scale), (2, orientation)):
            ax = axes[r, panel]
            for kind in range(sizes[shape]):
                rows = factors[:, col[shape]] == kind
                sums = np.bincount(factors[rows, col[factor]], m[rows], minlength=sizes[factor])
                n = np.bincount(factors[rows, col[factor]], minlength=sizes[factor])
                colour = SHAPE_COLOURS[kind] if kind < len(SHAPE_COLOURS) else None
                label = shape_names[kind] if kind < len(shape_names) else f"{shape} {kind}"
                ax.plot(
                    values[col[factor]], sums / np.maximum(n, 1), color=colour, label=label, lw=1.2
                )
            ax.tick_params(labelsize=7)
            if r == len(latents) - 1:
                ax.set_xlabel(factor, fontsize=8)
            if r == 0 and panel == 1:
                ax.legend(fontsize=6, loc="best")
    axes[0, 0].set_title(f"mean over ({x}, {y})", fontsize=8)
    axes[0, 1].set_title(f"mean vs {scale}", fontsize=8)
    axes[0, 2].set_title(f"mean vs {orientation}", fontsize=8)
    fig.suptitle("active latents against the true factors", fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 0.98))
    return fig
