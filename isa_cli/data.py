"""`isa data info|render|preview`: look at a ground-truth data set from the shell."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from isa_cli.app import app
from isa_cli.options import Output
from isa_core.data import open_dataset
from isa_core.errors import IsaError

if TYPE_CHECKING:  # numpy, torch and the data classes load inside the commands (fast `--help`)
    from isa_core.data import GroundTruthData

data_app = typer.Typer(
    help="Ground-truth data sets: dsprites, dsprites-mini, or a data file/folder.",
    no_args_is_help=True,
)
app.add_typer(data_app, name="data")

Source = Annotated[
    str,
    typer.Argument(
        help="A built-in name (dsprites, dsprites-mini) or a path: a dSprites/generic .npz, "
        "a 3D Faces .pt/.npz, a Cars3D folder.",
        show_default=False,
    ),
]


def _index_list(text: str, data: GroundTruthData) -> list[int]:
    """``0,5,9`` to flat indices, each checked against the data set's size."""
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise IsaError(f"cannot parse --index {text!r}; give integers like 0,5,9") from None
    if not values:
        raise IsaError("--index is empty; give integers like 0,5,9")
    for value in values:  # checked as Python ints: a huge one would overflow a tensor
        if not 0 <= value < len(data):
            raise IsaError(
                f"--index {value} is out of range for {data.name}; use 0..{len(data) - 1}"
            )
    return values


def _factor_tuple(text: str, data: GroundTruthData) -> list[int]:
    """``shape=2,scale=5,...`` to one factor-class tuple, every factor named once."""
    given: dict[str, int] = {}
    for part in text.split(","):
        name, sep, value = part.partition("=")
        name = name.strip()
        if not sep or name not in data.factor_names:
            raise IsaError(
                f"cannot parse --factors item {part!r}; write NAME=CLASS with NAME one of "
                f"{', '.join(data.factor_names)}"
            )
        try:
            given[name] = int(value)
        except ValueError:
            raise IsaError(f"--factors {name}={value!r}: the class must be an integer") from None
        size = data.factor_sizes[data.factor_names.index(name)]
        if not 0 <= given[name] < size:
            raise IsaError(
                f"--factors: factor {name} = {given[name]} is out of range for {data.name}; "
                f"it takes classes 0..{size - 1}"
            )
    missing = [n for n in data.factor_names if n not in given]
    if missing:
        raise IsaError(
            f"--factors is missing {', '.join(missing)}; name every factor of {data.name}"
        )
    return [given[n] for n in data.factor_names]


@data_app.command("info")
def info(source: Source) -> None:
    """One JSON object: name, n, image shape, factors (name, size, values)."""
    typer.echo(json.dumps(open_dataset(source).info()))


@data_app.command("render")
def render(
    source: Source,
    index: Annotated[
        str | None, typer.Option(help="Flat indices, e.g. 0,5,9.", show_default=False)
    ] = None,
    factors: Annotated[
        list[str] | None,
        typer.Option(
            help="One image by factor classes, e.g. shape=2,scale=5,orientation=0,x=3,y=31; "
            "repeat for more images.",
            show_default=False,
        ),
    ] = None,
    scale_255: Annotated[
        bool,
        typer.Option(
            "--scale-255",
            help="Write binary images (0/1) as 0/255, so that image viewers show them; "
            "images already in 0..255 are unchanged.",
        ),
    ] = False,
    out: Output = None,
) -> None:
    """Images as NPY uint8 (k, H, W) or (k, H, W, C); with -o FILE, prints the path.

    Pixel values are as the files store them: 0/1 for binary data such as dSprites (which
    looks black in an image viewer; add --scale-255 for 0/255), 0..255 otherwise.
    """
    import numpy as np
    import torch

    from isa_core import io

    if (index is None) == (not factors):
        raise IsaError("give exactly one of --index or --factors")
    data = open_dataset(source)
    if index is not None:
        indices = torch.tensor(_index_list(index, data))
    else:
        indices = data.factors_to_index([_factor_tuple(f, data) for f in factors or []])
    pixels = data.pixels(indices)
    if scale_255 and data.binary:
        pixels = pixels * np.uint8(255)
    io.write_array(pixels, out, typer.get_binary_stream("stdout"))
    if out is not None and str(out) != "-":
        typer.echo(str(out.resolve()))


@data_app.command("preview")
def preview(
    source: Source,
    out: Annotated[Path, typer.Option("-o", "--out", help="PNG file to write.")],
    columns: Annotated[
        int, typer.Option(min=2, max=40, help="Most values shown per factor (evenly spaced).")
    ] = 10,
) -> None:
    """A PNG with one row per factor, swept across its values with the others fixed."""
    from isa_core import io
    from isa_core.plots import factor_sweeps

    data = open_dataset(source)
    io.save_figure(factor_sweeps(data, columns), out)
    typer.echo(str(out.resolve()))
