"""`isa encode`, `isa mig`, `isa traverse`: a trained model's numbers and pictures."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from isa_cli.app import app
from isa_cli.options import PRECISION_HELP, check_path_text, seed_option
from isa_cli.progress import progress_bar
from isa_core.choices import MiEstimator, Precision, SubspaceGrouping, TraverseKind
from isa_core.data import open_dataset
from isa_core.errors import IsaError

if TYPE_CHECKING:  # numpy, torch and the models load inside the commands (fast `isa --help`)
    from isa_core.codes import Codes


ModelInput = Annotated[
    str | None,
    typer.Argument(help="model.safetensors, '-' or absent: a path on stdin.", show_default=False),
]


def _stdin():
    return typer.get_binary_stream("stdin")


def _encode_model(
    path: Path,
    data: str | None,
    batch_size: int,
    device: str,
    quiet: bool,
    precision: Precision | None = None,
) -> Codes:
    """Codes of the model at ``path``, in ``precision`` or else the one it was trained with."""
    from isa_core.checkpoint import load_model
    from isa_core.codes import encode
    from isa_core.config import TrainConfig
    from isa_core.devices import resolve_device

    model, meta = load_model(path)
    # The requested precision it was trained with (auto resolves again for this device).
    precision = precision or TrainConfig.from_metadata(meta["config"], str(path)).precision
    source = data or meta["config"]["data"]
    try:
        dataset = open_dataset(source)
    except IsaError as error:
        raise IsaError(
            f"the model's data {source!r} is not available ({error}); pass --data"
        ) from None
    target = resolve_device(device)
    with progress_bar("encode", quiet, transient=True) as bar:
        codes = encode(
            model, dataset, target, batch_size, on_batch=bar.callback, precision=precision
        )
    codes.metadata.update(model=str(path.resolve()), config=meta["config"], data_source=source)
    return codes


def _codes_or_model(
    path: Path, data: str | None, batch_size: int, device: str, quiet: bool
) -> Codes:
    """The codes in ``path``, or the codes of the model in ``path`` (encoded now)."""
    from isa_core import io
    from isa_core.codes import is_codes_file, load_codes

    check_path_text(path, "the input path")
    bundle = io.load_bundle(path)
    if not isinstance(bundle.metadata, dict):
        raise IsaError(
            f"{path}: its 'isa' metadata is not a JSON object; it was not written by isa"
        )
    if is_codes_file(bundle.metadata):
        return load_codes(path)
    if "config" in bundle.metadata:
        return _encode_model(path, data, batch_size, device, quiet)
    raise IsaError(f"{path} is neither a codes file nor an isa model")


@app.command("encode")
def encode_command(
    model: ModelInput = None,
    data: Annotated[
        str | None, typer.Option(help="Data to encode.", show_default="the model's training data")
    ] = None,
    batch_size: Annotated[int, typer.Option(min=1, help="Images per batch.")] = 2048,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")] = "auto",
    precision: Annotated[
        Precision | None,
        typer.Option(
            help=PRECISION_HELP + " The codes are float32 either way.",
            show_default="the model's (fp32 for models from before --precision)",
        ),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(
            "-o", "--out", help="Codes file.", show_default="codes.safetensors beside the model"
        ),
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """q(z|x) for every image as a codes file (mean, logvar, factors, logpx); prints its path."""
    from isa_core import io
    from isa_core.codes import save_codes

    path = io.read_paths(model, _stdin())[0]
    codes = _encode_model(path, data, batch_size, device, quiet, precision)
    target = out or path.parent / "codes.safetensors"
    save_codes(target, codes)
    typer.echo(str(Path(target).resolve()))


@app.command("mig")
def mig_command(
    input: Annotated[
        str | None,
        typer.Argument(
            help="Codes file or model; '-' or absent: paths on stdin, one result line each.",
            show_default=False,
        ),
    ] = None,
    estimator: Annotated[
        MiEstimator, typer.Option(help="quadrature (deterministic), sampling or histogram.")
    ] = MiEstimator.quadrature,
    factors: Annotated[
        str | None,
        typer.Option(help="Factors to score, e.g. scale,orientation,x,y.", show_default="all"),
    ] = None,
    samples: Annotated[int, typer.Option(min=1, help="sampling: Monte-Carlo samples.")] = 10_000,
    bins: Annotated[int, typer.Option(min=2, help="histogram: bins per latent.")] = 20,
    seed: Annotated[int, seed_option("sampling: random seed")] = 0,
    group: Annotated[
        SubspaceGrouping,
        typer.Option(help="subspaces: also score each ISA subspace as one variable (Monte Carlo)."),
    ] = SubspaceGrouping.none,
    data: Annotated[str | None, typer.Option(help="Data for models (default: theirs).")] = None,
    batch_size: Annotated[int, typer.Option(min=1, help="Encoding batch size.")] = 2048,
    device: Annotated[str, typer.Option(help="Encoding device.")] = "auto",
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No table on stderr.")] = False,
) -> None:
    """MIG (and mean log p(x|z)) of codes or models: one JSON object per input on stdout."""
    from isa_core import io
    from isa_core.metrics import mig_report

    for path in io.read_paths(input, _stdin()):
        codes = _codes_or_model(path, data, batch_size, device, quiet)
        if not len(codes.mean):
            raise IsaError(f"{path} holds codes of 0 images; MIG of no images is undefined")
        report = mig_report(codes, estimator, factors, samples, bins, seed, group)
        record = {"input": str(path), **report}
        typer.echo(json.dumps(record))
        if not quiet:
            _print_table(record)


def _print_table(record: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"MIG {record['mig']:.4f} ({record['estimator']}) — {record['input']}")
    for column in ("factor", "H (nats)", "best latent (MI)", "second (MI)", "gap"):
        table.add_column(column, justify="right" if column != "factor" else "left")
    for factor in record["factors"]:
        a, b = factor["top"]
        table.add_row(
            factor["name"],
            f"{factor['entropy']:.3f}",
            f"z{a} ({factor['mi'][a]:.3f})",
            f"z{b} ({factor['mi'][b]:.3f})",
            f"{factor['gap']:.3f}",
        )
    if record.get("logpx") is not None:
        table.caption = f"log p(x|z): {record['logpx']:.2f} nats per image, n = {record['n']}"
    Console(stderr=True).print(table)


@app.command("traverse")
def traverse_command(
    out: Annotated[Path, typer.Option("-o", "--out", help="PNG file to write.")],
    model: ModelInput = None,
    kind: Annotated[
        TraverseKind, typer.Option(help="traversal or latent-vs-true.")
    ] = TraverseKind.traversal,
    steps: Annotated[int, typer.Option(min=2, max=30, help="Values per latent.")] = 8,
    range_: Annotated[
        float, typer.Option("--range", help="Half-width in aggregate-posterior std units.")
    ] = 3.0,
    index: Annotated[int, typer.Option(help="Image whose code is traversed.")] = 0,
    max_rows: Annotated[
        int, typer.Option(min=1, help="traversal: show at most this many latents (by MI).")
    ] = 10,
    codes: Annotated[
        Path | None, typer.Option(help="Codes file of this model (else the data is encoded).")
    ] = None,
    data: Annotated[str | None, typer.Option(help="Data (default: the model's).")] = None,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")] = "auto",
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Appendix A.5 figures: latent traversals, or latents against the true factors."""
    from isa_core import io, traverse
    from isa_core.checkpoint import load_model
    from isa_core.codes import load_codes
    from isa_core.plots import latent_traversal, latent_vs_true

    if not str(out).lower().endswith(".png"):
        raise IsaError(f"{out}: figures are written as PNG; give a file name ending in .png")
    path = io.read_paths(model, _stdin())[0]
    trained, meta = load_model(path)
    encoded = load_codes(codes) if codes else _encode_model(path, data, 2048, device, quiet)
    if encoded.mean.shape[1] != trained.latent_dim:
        raise IsaError(
            f"--codes {codes} has {encoded.mean.shape[1]} latents but the model has "
            f"{trained.latent_dim}; give the codes of this model (isa encode)"
        )
    ranking = traverse.rank_latents(encoded)
    if kind == TraverseKind.latent_vs_true:
        panel = traverse.latents_vs_true(encoded, ranking)
        figure = latent_vs_true(
            encoded.mean,
            encoded.factors,
            encoded.factor_names,
            panel.values,
            panel.latents,
            panel.labels,
        )
    else:
        dataset = open_dataset(data or meta["config"]["data"])
        rows = traverse.traversal(
            trained, encoded, dataset, ranking, index, steps, range_, max_rows
        )
        figure = latent_traversal(rows.rows, rows.original, rows.values, rows.labels)
    io.save_figure(figure, out)
    typer.echo(str(out.resolve()))
