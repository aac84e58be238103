"""Figures of a ground-truth data set: its images swept along each factor."""

from __future__ import annotations

import numpy as np
import torch
from matplotlib.figure import Figure

from isa_core.data.base import GroundTruthData
from isa_core.errors import field_error

__all__ = ["factor_sweeps"]


def factor_sweeps(data: GroundTruthData, columns: int = 10) -> Figure:
    """One row per factor, swept across (up to ``columns`` evenly spaced) values.

    The other factors stay at their middle class; each row is labelled with the factor and
    each panel with the value shown.
    """
    if columns < 1:
        raise field_error("columns", f"must be at least 1, got {columns}")
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
