"""`isa toy-fa`: the factor-analysis experiments of the paper's appendix B."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Annotated

import typer

from isa_cli.app import app
from isa_cli.options import seed_option
from isa_core.choices import FaExperiment
from isa_core.errors import IsaError

# numpy, torch and the toy models load inside the commands, so that `isa --help` stays fast.

MAX_COMPONENTS = 32
MAX_ICA_BYTES = 4 << 30
ICA_BYTES = 48 * 8 * 8  # per point and component: (N, K, Hermite nodes) float64, a few at once


@app.command("toy-fa")
def toy_fa(
    experiment: Annotated[
        FaExperiment, typer.Option(help="rotation (B.3, B.5) or prune (B.4).")
    ] = FaExperiment.rotation,
    beta: Annotated[
        list[float] | None, typer.Option(help="β values (repeat the flag); 1 if none.")
    ] = None,
    points: Annotated[
        int, typer.Option(help="Points along θ in [0, π] or α in [0, 1/2] (2..100,000).")
    ] = 181,
    out: Annotated[Path | None, typer.Option("-o", "--out", help="PNG of the panels.")] = None,
) -> None:
    """Exact log-likelihood and mean-field free energy of factor analysis: JSON lines, and a PNG."""
    from isa_core.toy_fa import fa_ellipses, fa_sweep

    if out is not None and out.suffix.lower() != ".png":
        raise IsaError(f"{out}: figures are written as PNG; give a file name ending in .png")
    betas = beta or [1.0]
    sweep = fa_sweep(experiment.value, betas, points)  # checks β and the number of points
    if out is not None:
        from isa_core import io
        from isa_core.plots import fa_curves

        ellipses = fa_ellipses(sweep.experiment, betas[0])
        figure = fa_curves(sweep.experiment, sweep.grid, sweep.loglik, sweep.free_energy, ellipses)
        io.save_figure(figure, out)
    for b, values in sweep.free_energy.items():
        for v, ll, fe in zip(sweep.grid, sweep.loglik, values, strict=True):
            record = {
                "experiment": experiment.value,
                "beta": b,
                sweep.parameter: float(v),
                "loglik": float(ll),
                "free_energy": float(fe),
            }
            typer.echo(json.dumps(record))


def panel_title(beta: float, iterations: int, pruned: list[int]) -> str:
    """A toy-ica panel's title; components are 0-based, as in the JSON lines."""
    which = "pruned " + ", ".join(str(k) for k in pruned) if pruned else "none pruned"
    return f"β = {beta:g}, {iterations} steps: {which}"


@app.command("toy-ica")
def toy_ica(
    beta: Annotated[
        list[float] | None, typer.Option(help="β values (repeat the flag); 1 and 5 if none.")
    ] = None,
    nu: Annotated[float, typer.Option(help="Student-t degrees of freedom of the sources.")] = 3.5,
    n: Annotated[int, typer.Option("--n", help="Number of data points (at least 2).")] = 200,
    seed: Annotated[int, seed_option("Seed of the data")] = 0,
    directions: Annotated[
        str, typer.Option(help="True component directions, degrees, comma-separated.")
    ] = "0,50,120",
    noise: Annotated[float, typer.Option(help="Observation noise standard deviation.")] = 0.05,
    iterations: Annotated[
        int, typer.Option(help="Gradient steps on W and q after fitting q to the true W.")
    ] = 2000,
    out: Annotated[Path | None, typer.Option("-o", "--out", help="PNG of the panels.")] = None,
) -> None:
    """Over-complete ICA (B.7-B.8) fitted by (β-)VI from the true model: one JSON line per β.

    Components are numbered from 0, in the JSON (pruned, pairwise_angles) and the figure alike.
    Default 2,000 steps: β = 1 keeps three components, β = 5 prunes one.
    With --iterations 20000, β = 1 prunes the same one too.
    """
    from isa_core.toy_ica import describe_components, fit_ica, make_ica_problem

    betas = beta or [1.0, 5.0]
    for b in betas:
        if not (math.isfinite(b) and b > 0):
            raise IsaError(f"--beta must be a positive number, got {b}")
    for name, value in (("--nu", nu), ("--noise", noise)):
        if not (math.isfinite(value) and value > 0):
            raise IsaError(f"{name} must be a positive number, got {value}")
    if n < 2:
        raise IsaError(f"--n must be at least 2 data points, got {n}")
    if iterations < 0:
        raise IsaError(f"--iterations must be 0 or more, got {iterations}")
    try:
        angles = tuple(float(part) for part in directions.split(","))
    except ValueError:
        raise IsaError(
            f"--directions must be comma-separated numbers (degrees), got {directions!r}"
        ) from None
    if len(angles) < 2 or not all(math.isfinite(a) for a in angles):
        raise IsaError(f"--directions needs at least two finite angles, got {directions!r}")
    if len(angles) > MAX_COMPONENTS:
        raise IsaError(
            f"--directions gives {len(angles)} components; the toy takes at most {MAX_COMPONENTS}"
        )
    need = n * len(angles) * ICA_BYTES
    if need > MAX_ICA_BYTES:
        most = MAX_ICA_BYTES // (len(angles) * ICA_BYTES)
        raise IsaError(
            f"--n {n:,} data points with {len(angles)} components need about "
            f"{need / 2**30:,.1f} GiB for the fit, over the {MAX_ICA_BYTES >> 30} GiB limit; "
            f"use at most --n {most:,}"
        )
    if out is not None and out.suffix.lower() != ".png":
        raise IsaError(f"{out}: figures are written as PNG; give a file name ending in .png")
    problem = make_ica_problem(n, nu, seed, angles, noise)
    truth = describe_components(problem.w_true)
    fits = []
    for b in betas:
        fit = fit_ica(problem, b, iterations=iterations)
        learned = describe_components(fit.w)
        fits.append((fit, learned))
        record = {
            "beta": b,
            "nu": nu,
            "n": n,
            "seed": seed,
            "noise": noise,
            "true_directions": truth["directions"],
            "learned_directions": learned["directions"],
            "norms": learned["norms"],
            "pairwise_angles": learned["pairwise_angles"],
            "true_pairwise_angles": truth["pairwise_angles"],
            "pruned": learned["pruned"],
            "start_free_energy": fit.start_free_energy,
            "free_energy": fit.free_energy,
            "iterations": fit.iterations,
            "accepted": fit.accepted,
            "converged": fit.converged,
        }
        typer.echo(json.dumps(record))
    if out is not None:
        from isa_core import io
        from isa_core.plots import ica_components

        panels = [
            (panel_title(fit.beta, fit.iterations, learned["pruned"]), fit.w)
            for fit, learned in fits
        ]
        io.save_figure(ica_components(problem.x, problem.w_true, panels), out)
