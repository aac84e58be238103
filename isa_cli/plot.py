"""`isa plot scatter|mig-dist|exponents|prior-contours|curves`: the paper's summary figures,
and training curves of run folders."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from isa_cli.app import app
from isa_cli.options import build_prior
from isa_core.errors import IsaError

if TYPE_CHECKING:
    from isa_core.sweeps.results import RunResult

# The results reader and the figures load inside the commands, so that `isa --help` stays fast.

plot_app = typer.Typer(
    help="Figures from a results file (isa sweep collect) or from run folders.",
    no_args_is_help=True,
)
app.add_typer(plot_app, name="plot")

Results = Annotated[
    Path, typer.Argument(help="Results JSONL (isa sweep collect).", show_default=False)
]
Out = Annotated[Path, typer.Option("-o", "--out", help="PNG file to write.")]


def _save(figure, out: Path) -> None:
    from isa_core import io  # numpy, loaded only when a figure is written (fast --help)

    io.save_figure(figure, out)
    typer.echo(str(out.resolve()))


@plot_app.command("scatter")
def scatter(results: Results, out: Out) -> None:
    """MIG against log p(x|z), per method and β, mean ± standard error (Figs. 5b, 5c, 6)."""
    from isa_core.plots import mig_logpx_scatter
    from isa_core.sweeps.results import read_results

    _save(mig_logpx_scatter(read_results(results, ("mig", "logpx"))), out)


@plot_app.command("mig-dist")
def mig_dist(
    results: Results,
    out: Out,
    beta: Annotated[float | None, typer.Option(help="Only runs with this β.")] = None,
) -> None:
    """Distribution of MIG per method, with mean, median and max (Fig. 5a)."""
    from isa_core.plots import mig_distribution
    from isa_core.sweeps.results import read_results

    runs = read_results(results, ("mig",))
    if beta is not None and not any(r.beta == beta for r in runs):
        raise IsaError(f"no run in {results} has beta = {beta:g}")
    _save(mig_distribution(runs, beta), out)


@plot_app.command("exponents")
def exponents(results: Results, out: Out) -> None:
    """Histograms of learned subspace exponents, sorted per model (Fig. 7)."""
    from isa_core.plots import exponent_histograms
    from isa_core.sweeps.results import read_results

    runs = read_results(results)
    _check_learned_exponents(runs, results)
    _save(exponent_histograms(runs), out)


def _check_learned_exponents(runs: list[RunResult], results: Path) -> None:
    """Refuse results whose learned exponents cannot be drawn side by side (none at all, or
    lists of different lengths), naming the file and the flag that fixes it."""
    learned = [r.learned_exponents for r in runs if r.learned_exponents]
    if not learned:
        raise IsaError(
            f"{results}: no run in the results learned its exponents; train with --learn-exponents"
        )
    lengths = sorted({len(e) for e in learned})
    if len(lengths) > 1 or lengths[0] < 2:
        raise IsaError(
            f"{results}: the learned exponent lists have lengths "
            f"{' and '.join(map(str, lengths))}; each must hold p0 and the same number (at "
            "least one) of subspace exponents, as `isa sweep collect` writes them for runs of "
            "one prior layout"
        )


@plot_app.command("prior-contours")
def prior_contours(
    out: Out,
    tree: Annotated[
        list[str] | None, typer.Option(help="A 2-D tree per panel, e.g. '1(2)' (repeatable).")
    ] = None,
    scale: Annotated[float, typer.Option(help="Scale s of every panel.")] = 2.0,
) -> None:
    """Iso-density contours of 2-D priors, one panel per tree (Figs. 2, 3)."""
    from isa_core.plots import prior_contour_grid

    specs = tree or ["0.5(2)", "1(2)", "2(2)", "4(2)", "9(2)"]
    priors = [build_prior(None, None, None, scale, spec) for spec in specs]
    for prior in priors:
        if prior.tree.n != 2:
            raise IsaError(f"--tree {prior.tree} has n = {prior.tree.n}; panels need 2-D priors")
    _save(prior_contour_grid(priors), out)


@plot_app.command("curves")
def curves(
    run_dirs: Annotated[
        list[Path],
        typer.Argument(
            help="Run folders (isa train -o), overlaid; each needs its metrics.jsonl.",
            show_default=False,
        ),
    ],
    out: Out,
) -> None:
    """Loss, its parts and the prior's exponents against step, one panel each, runs overlaid."""
    from isa_core.plots import read_curves, training_curves

    _save(training_curves([read_curves(folder) for folder in run_dirs]), out)
