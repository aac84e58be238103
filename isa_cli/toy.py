"""`isa toy-fa`: the factor-analysis experiments of the paper's appendix B."""

from __future__ import annotations

import json
import math
from enum import Enum
from pathlib import Path
from typing import Annotated

import numpy as np
import typer

from isa_cli.app import app
from isa_core import io
from isa_core.errors import IsaError
from isa_core.toy import (
    fa_free_energy,
    fa_log_likelihood,
    fa_mean_field,
    prune_model,
    rotation_model,
)


class Experiment(str, Enum):
    rotation = "rotation"
    prune = "prune"


@app.command("toy-fa")
def toy_fa(
    experiment: Annotated[
        Experiment, typer.Option(help="rotation (B.3, B.5) or prune (B.4).")
    ] = Experiment.rotation,
    beta: Annotated[
        list[float] | None, typer.Option(help="β values (repeat the flag). [default: 1]")
    ] = None,
    points: Annotated[int, typer.Option(help="Points along θ in [0, π] or α in [0, 1/2].")] = 181,
    out: Annotated[Path | None, typer.Option("-o", "--out", help="PNG of the panels.")] = None,
) -> None:
    """Exact log-likelihood and mean-field free energy of factor analysis: JSON lines, and a PNG."""
    betas = beta or [1.0]
    for b in betas:
        if not (math.isfinite(b) and b > 0):
            raise IsaError(f"--beta must be a positive number, got {b}")
    if points < 2:
        raise IsaError(f"--points must be at least 2 for a curve, got {points}")
    if out is not None and out.suffix.lower() != ".png":
        raise IsaError(f"{out}: figures are written as PNG; give a file name ending in .png")
    if experiment == Experiment.rotation:
        grid, key, build = np.linspace(0, math.pi, points), "theta", rotation_model
        shown = [0.0, math.pi / 8, math.pi / 4]
    else:
        grid, key, build = np.linspace(0, 0.5, points), "alpha", prune_model
        shown = [0.0, 0.25, 0.5]
    loglik = np.array([fa_log_likelihood(build(v)) for v in grid])
    curves = {b: np.array([fa_free_energy(build(v), b) for v in grid]) for b in betas}
    if out is not None:
        from isa_core.plots import fa_curves

        ellipses = []
        for v in shown:
            posterior, _, mean_field = fa_mean_field(build(v), betas[0])
            label = f"θ = {v / math.pi:.3g}π" if key == "theta" else f"α = {v:g}"
            ellipses.append((f"{label}, β = {betas[0]:g}", posterior, mean_field))
        io.save_figure(fa_curves(experiment.value, grid, loglik, curves, ellipses), out)
    for b, values in curves.items():
        for v, ll, fe in zip(grid, loglik, values, strict=True):
            record = {
                "experiment": experiment.value,
                "beta": b,
                key: float(v),
                "loglik": float(ll),
                "free_energy": float(fe),
            }
            typer.echo(json.dumps(record))
