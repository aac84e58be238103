"""Figures by subject (matplotlib, Agg): each function returns a Figure; callers save it
through `isa_core.io.save_figure`.

``prior`` (Figs. 2, 3), ``data`` (factor sweeps), ``model`` (appendix A.5: traversals,
image grids, latents against the true factors), ``animation`` (traversal GIFs, with Pillow),
``sweep`` (Figs. 5-7, on `RunResult`), ``training`` (a run's logged curves, on `RunCurves`)
and ``toy`` (appendix B). Names load their submodule on first use (PEP 562), so a command
that draws one kind of figure imports only what that kind needs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import matplotlib

from isa_core.lazy import lazy_attributes

matplotlib.use("Agg")  # no display: figures are only ever written to files

if TYPE_CHECKING:
    from isa_core.plots.animation import save_gif, traversal_frames
    from isa_core.plots.data import factor_sweeps
    from isa_core.plots.model import image_grid, latent_traversal, latent_vs_true
    from isa_core.plots.prior import MAX_EXTENT, prior_contour_grid, prior_contours
    from isa_core.plots.sweep import exponent_histograms, mig_distribution, mig_logpx_scatter
    from isa_core.plots.toy import fa_curves, ica_components
    from isa_core.plots.training import RunCurves, read_curves, training_curves

__all__ = [
    "MAX_EXTENT",
    "RunCurves",
    "exponent_histograms",
    "fa_curves",
    "factor_sweeps",
    "ica_components",
    "image_grid",
    "latent_traversal",
    "latent_vs_true",
    "mig_distribution",
    "mig_logpx_scatter",
    "prior_contour_grid",
    "prior_contours",
    "read_curves",
    "save_gif",
    "training_curves",
    "traversal_frames",
]

# name -> submodule that defines it, imported when the name is first looked up
_LAZY = {
    "MAX_EXTENT": "prior",
    "prior_contour_grid": "prior",
    "prior_contours": "prior",
    "factor_sweeps": "data",
    "image_grid": "model",
    "latent_traversal": "model",
    "latent_vs_true": "model",
    "exponent_histograms": "sweep",
    "mig_distribution": "sweep",
    "mig_logpx_scatter": "sweep",
    "fa_curves": "toy",
    "ica_components": "toy",
    "RunCurves": "training",
    "read_curves": "training",
    "training_curves": "training",
    "save_gif": "animation",
    "traversal_frames": "animation",
}

__getattr__, __dir__ = lazy_attributes(__name__, _LAZY, globals())
