"""The typer application object shared by every command module."""

from __future__ import annotations

from typing import Annotated

import typer
import typer.core

from isa_core import __version__


def _flag_type_rich(self: typer.core.TyperOption, ctx) -> str | None:
    """Show no type column for on/off switches (typer 0.29 prints '<bool>' there)."""
    if self.is_flag:
        return None
    return _option_type_rich(self, ctx)


_option_type_rich = typer.core.TyperOption.display_type_rich
typer.core.TyperOption.display_type_rich = _flag_type_rich

app = typer.Typer(
    name="isa",
    help=(
        "Disentangled representations with L^p-nested / independent subspace priors "
        "(Stühmer, Turner, Nowozin: ISA-VAE). Arrays travel as NPY on stdout/stdin; "
        "talk goes to stderr."
    ),
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"isa {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_print_version, is_eager=True, help="Print the version."
        ),
    ] = False,
) -> None:
    """Disentangled representations with L^p-nested / ISA priors."""
