"""`isa prior-sample`, `isa prior-logpdf`, `isa prior-plot`: the L^p-nested prior on the shell."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from isa_cli.app import app
from isa_cli.options import (
    P0,
    P1,
    Layout,
    Model,
    Output,
    Scale,
    Tree,
    build_prior,
    check_path_text,
    seed_option,
)
from isa_core.choices import DType, SampleMethod
from isa_core.errors import IsaError

if TYPE_CHECKING:  # numpy, torch and isa_core.io load inside the commands (fast `isa --help`)
    import numpy as np

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


def _read_points(input: str | None) -> tuple[np.ndarray, str]:
    """The NPY array named by INPUT (a path, or stdin: array bytes or a path line)."""
    from isa_core import io

    check_path_text(input, "INPUT")
    source = io.read_source(input, _stdin())
    if isinstance(source, bytes):
        return io.load_npy(source, "stdin"), "stdin"
    check_path_text(source, "the path on stdin")
    return io.load_npy(source), str(source)


def _echo_path(out: Path | None) -> None:
    """Print the path written, as every command that writes a file does (not for stdout)."""
    if out is not None and str(out) != "-":
        typer.echo(str(out.resolve()))


def _checked_points(array: np.ndarray, n: int, what: str) -> np.ndarray:
    """Validate an (N, n) array of finite numbers; return it as float64."""
    import numpy as np

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
    seed: Annotated[int, seed_option("Random seed; the same seed gives the same bytes")] = 0,
    dtype: Annotated[DType, typer.Option(help="Output dtype.")] = DType.float64,
    method: Annotated[
        SampleMethod,
        typer.Option(
            help="nested: Algorithm 1 (any tree); isa: the per-subspace route (ISA trees).",
        ),
    ] = SampleMethod.nested,
    out: Output = None,
) -> None:
    """Draw exact samples z ~ p(z) of an L^p-nested prior: NPY (N, n) on stdout or -o FILE.

    With -o FILE the path written is printed.
    """
    import numpy as np
    import torch

    from isa_core import io

    prior = build_prior(layout, p0, p1, scale, tree, model)
    generator = torch.Generator().manual_seed(seed)
    z = prior.sample((n,), generator=generator, method=method.value).numpy()
    largest = float(np.abs(z).max(initial=0.0))  # the draws are finite float64
    if largest > float(np.finfo(dtype.value).max):
        raise IsaError(
            f"the samples reach |z| = {largest:.3g}, beyond the {dtype.value} range; "
            "use --dtype float64"
        )
    io.write_array(z.astype(dtype.value, copy=False), out, _stdout())
    _echo_path(out)


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
    """Log-density log p(z) (Eqs. 7, 8, 11) of each row: NPY float64 (N,) or --text lines.

    An input of 0 rows gives an output of 0 rows. With -o FILE the path written is printed.
    """
    import torch

    from isa_core import io

    prior = build_prior(layout, p0, p1, scale, tree, model)
    array, name = _read_points(input)
    points = _checked_points(array, prior.tree.n, name)
    log_p = prior.log_prob(torch.from_numpy(points)).numpy()
    if text:
        io.write_text("".join(f"{v!r}\n" for v in log_p.tolist()), out, _stdout())
    else:
        io.write_array(log_p, out, _stdout())
    _echo_path(out)


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
    seed: Annotated[int, seed_option("Random seed for the drawn samples")] = 0,
    extent: Annotated[
        float | None, typer.Option(help="Half-width of the plotted square.", show_default="auto")
    ] = None,
) -> None:
    """Iso-density contours of a 2-D prior with samples on top (like the paper's Figs. 2-3).

    Samples come from INPUT (an (N, 2) NPY file, or '-' for stdin) when given, else are drawn.
    """
    import torch

    from isa_core import io
    from isa_core.plots import MAX_EXTENT, prior_contours

    prior = build_prior(layout, p0, p1, scale, tree)
    if prior.tree.n != 2:
        raise IsaError(
            f"prior-plot draws 2-D priors, but {prior.tree} has n = {prior.tree.n}; "
            "use e.g. --tree '1(2)' or --layout 1,1"
        )
    if extent is not None and not (math.isfinite(extent) and 0 < extent <= MAX_EXTENT):
        raise IsaError(f"--extent must be a positive number up to {MAX_EXTENT:g}, got {extent}")
    if input is not None:
        array, name = _read_points(input)
        z = _checked_points(array, 2, name)
    else:
        z = prior.sample((samples,), generator=torch.Generator().manual_seed(seed)).numpy()
    io.save_figure(prior_contours(prior, z, extent), out)
    typer.echo(str(out.resolve()))
