"""`isa report`: a sweep's results, figures and runs on one self-contained HTML page."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from isa_cli.app import app
from isa_cli.progress import DEFAULT_EVERY, ProgressEvery, progress_bar
from isa_core.errors import IsaError


@app.command("report")
def report_command(
    sweep: Annotated[Path, typer.Argument(help="Sweep folder (OUT/NAME).", show_default=False)],
    out: Annotated[Path, typer.Option("-o", "--out", help="HTML file to write.")],
    run_figures: Annotated[
        bool,
        typer.Option(
            help="Per run: curves, traversal GIF, latent-vs-true panel (cached in its folder)."
        ),
    ] = True,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress.")] = False,
    progress_every: ProgressEvery = DEFAULT_EVERY,
) -> None:
    """One static HTML page of a sweep (results.jsonl, else its finished runs): the sortable
    results table with the representatives marked, the sweep figures and each run's figures,
    every image embedded so it opens offline. Prints the page's path."""
    from isa_core.report import sweep_results, write_report

    if out.suffix.lower() != ".html":
        raise IsaError(f"{out}: the report is HTML; give -o a file name ending in .html")
    results = sweep_results(sweep)
    hidden = quiet or not run_figures  # without run figures the page takes a second
    units = {"noun": "runs", "unit": "runs/h", "scale": 3600.0}
    with progress_bar("report", hidden, len(results), every=progress_every, **units) as bar:
        written = write_report(
            sweep, out, run_figures, on_run=lambda _: bar.update(advance=1), results=results
        )
    typer.echo(str(written.resolve()))
