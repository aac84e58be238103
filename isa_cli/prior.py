"""`isa prior-sample`, `isa prior-logpdf`, `isa prior-plot`: the L^p-nested prior on the shell."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import numpy as np
import torch
import typer

from isa_cli.app import app
from isa_cli.options import (
    P0,
    P1,
    DType,
    Layout,
    Model,
    Output,
    SampleMethod,
    Scale,
    Tree,
    build_prior,
)
from isa_core import io
from isa_core.errors import IsaError

PlotInput = Annotated[
    str | None,
    typer.Argument(
        help="Samples to draw on top: NPY (N, 2) file or '-' for stdin.",
        show_default="drawn from the prior",
    ),
]
Input = Annotated[
    str | None,
    typer.Argument(
        help="NPY file of shape (N, n), '-' or absent for stdin (NPY bytes or a path line).",
        show_default=False,
    ),
]


def _stdin() -> object:
    return typer.get_binary_stream("stdin")


def _stdout() -> object:
    return typer.get_binary_stream("stdout")


def _checked_points(array: np.ndarray, n: int, what: str) -> np.ndarray:
    """Validate an (N, n) array of finite numbers; return it as float64."""
    if array.dtype.kind not in "fiu":
        raise IsaError(f"{what} has dtype {array.dtype}; expected float32 or float64 numbers")
    if array.ndim != 2:
        raise IsaError(
            f"{what} has shape {array.shape}; expected a 2-D array (N, {n}), one point per row"
        )
    if array.shape[1] != n:
        raise IsaError(
            f"{what} has {array.shape[1]} columns but the prior has n = {n} dimensions; "
            "pass the --layout or --tree the points were drawn from"
        )
    points = array.astype(np.float64, copy=False)
    finite = np.isfinite(points).all(axis=1)
    if not finite.all():
        row = int(np.flatnonzero(~finite)[0])
        raise IsaError(
            f"{what} row {row} contains NaN or inf ({int((~finite).sum())} bad rows); "
            "the log-density needs finite values"
        )
    return points


@app.command("prior-sample")
def prior_sample(
    n: Annotated[int, typer.Option("-n", "--num", min=1, help="Number of samples N.")],
    layout: Layout = None,
    p0: P0 = None,
    p1: P1 = None,
    scale: Scale = None,
    tree: Tree = None,
    model: Model = None,
    seed: Annotated[int, typer.Option(help="Random seed; the same seed gives the same bytes.")] = 0,
    dtype: Annotated[DType, typer.Option(help="Output dtype.")] = DType.float64,
    method: Annotated[
        SampleMethod,
        typer.Option(
            help="nested: Algorithm 1 (any tree); isa: the per-subspace route (ISA trees).",
        ),
    ] = SampleMethod.nested,
    out: Output = None,
) -> None:
    """Draw exact samples z ~ p(z) of an L^p-nested prior: NPY (N, n) on stdout or -o FILE."""
    prior = build_prior(layout, p0, p1, scale, tree, model)
    generator = torch.Generator().manual_seed(seed)
    z = prior.sample((n,), generator=generator, method=method.value)
    io.write_array(z.numpy().astype(dtype.value, copy=False), out, _stdout())


@app.command("prior-logpdf")
def prior_logpdf(
    input: Input = None,
    layout: Layout = None,
    p0: P0 = None,
    p1: P1 = None,
    scale: Scale = None,
    tree: Tree = None,
    model: Model = None,
    text: Annotated[
        bool, typer.Option("--text", help="Write one number per line instead of NPY.")
    ] = False,
    out: Output = None,
) -> None:
    """Log-density log p(z) (Eqs. 7, 8, 11) of each row: NPY float64 (N,) or --text lines."""
    prior = build_prior(layout, p0, p1, scale, tree, model)
    points = _checked_points(io.read_array(input, _stdin()), prior.tree.n, input or "stdin")
    log_p = prior.log_prob(torch.from_numpy(points)).numpy()
    if text:
        io.write_text("".join(f"{v!r}\n" for v in log_p.tolist()), out, _stdout())
    else:
        io.write_array(log_p, out, _stdout())


@app.command("prior-plot")
def prior_plot(
    out: Annotated[Path, typer.Option("-o", "--out", help="PNG file to write.")],
    input: PlotInput = None,
    layout: Layout = None,
    p0: P0 = None,
    p1: P1 = None,
    scale: Scale = None,
    tree: Tree = None,
    samples: Annotated[
        int, typer.Option(min=0, help="Samples to draw when no INPUT is given.")
    ] = 1000,
    seed: Annotated[int, typer.Option(help="Random seed for the drawn samples.")] = 0,
    extent: Annotated[
        float | None, typer.Option(help="Half-width of the plotted square.", show_default="auto")
    ] = None,
) -> None:
    """Iso-density contours of a 2-D prior with samples on top (like the paper's Figs. 2-3).

    Samples come from INPUT (an (N, 2) NPY file, or '-' for stdin) when given, else are drawn.
    """
    from isa_core.plots import prior_contours  # matplotlib loads only for plots

    prior = build_prior(layout, p0, p1, scale, tree)
    if prior.tree.n != 2:
        raise IsaError(
            f"prior-plot draws 2-D priors, but {prior.tree} has n = {prior.tree.n}; "
            "use e.g. --tree '1(2)' or --layout 1,1"
        )
    if extent is not None and not extent > 0:
        raise IsaError(f"--extent must be positive, got {extent}")
    if input is not None:
        z = _checked_points(io.read_array(input, _stdin()), 2, input)
    else:
        z = prior.sample((samples,), generator=torch.Generator().manual_seed(seed)).numpy()
    io.save_figure(prior_contours(prior, z, extent), out)
    typer.echo(str(out.resolve()))
