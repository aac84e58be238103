"""`isa encode`, `isa mig`, `isa score`, `isa traverse`: a trained model's numbers and pictures."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from isa_cli.app import app
from isa_cli.options import PRECISION_HELP, check_path_text, seed_option
from isa_cli.progress import DEFAULT_EVERY, ProgressEvery, progress_bar
from isa_core.choices import (
    MiEstimator,
    Precision,
    Protocol,
    ScoreMetric,
    SubspaceGrouping,
    TraversalSpan,
    TraverseKind,
)
from isa_core.data import open_dataset
from isa_core.errors import IsaError

if TYPE_CHECKING:  # numpy, torch and the models load inside the commands (fast `isa --help`)
    from isa_core.codes import Codes


ModelInput = Annotated[
    str | None,
    typer.Argument(help="model.safetensors, '-' or absent: a path on stdin.", show_default=False),
]


# Flags of the commands that take codes or models (models are encoded first).
ModelData = Annotated[str | None, typer.Option(help="Data for models (default: theirs).")]
EncodeBatch = Annotated[int, typer.Option(min=1, help="Encoding batch size.")]
EncodeDevice = Annotated[str, typer.Option(help="Encoding device.")]
NoTable = Annotated[bool, typer.Option("--quiet", "-q", help="No table on stderr.")]


def _stdin():
    return typer.get_binary_stream("stdin")


def _encode_model(
    path: Path,
    data: str | None,
    batch_size: int,
    device: str,
    quiet: bool,
    precision: Precision | None = None,
    every: float = 0.0,
) -> Codes:
    """Codes of the model at ``path``, in ``precision`` or else the one it was trained with;
    off a terminal, a progress line every ``every`` seconds (0: none)."""
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
    with progress_bar("encode", quiet, transient=True, every=every, noun="images") as bar:
        codes = encode(
            model, dataset, target, batch_size, on_batch=bar.callback, precision=precision
        )
    codes.metadata.update(model=str(path.resolve()), config=meta["config"], data_source=source)
    return codes


def _codes_or_model(
    path: Path, data: str | None, batch_size: int, device: str, quiet: bool
) -> Codes:
    """The codes in ``path`` (safetensors or .npz, any writer), or the codes of the isa model
    in ``path`` (encoded now)."""
    from isa_core import io
    from isa_core.codes import CODES_FORMAT, codes_of_bundle, load_codes, looks_like_codes

    check_path_text(path, "the input path")
    handle, kind = io.open_input(path)
    handle.close()
    if kind == "zip":
        return load_codes(path)
    bundle = io.load_bundle(path, require_metadata=False)
    if looks_like_codes(bundle.tensors, bundle.metadata):
        return codes_of_bundle(path, bundle)
    if "config" in bundle.metadata:
        return _encode_model(path, data, batch_size, device, quiet)
    raise IsaError(f"{path} is neither a codes file nor an isa model; {CODES_FORMAT}")


def _input_paths(inputs: list[str] | None) -> list[Path]:
    """The paths given, where '-' (or no path at all) stands for the paths on stdin."""
    from isa_core import io

    if not inputs:
        return io.read_paths(None, _stdin())
    return [path for arg in inputs for path in io.read_paths(arg, _stdin())]


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
    progress_every: ProgressEvery = DEFAULT_EVERY,
) -> None:
    """q(z|x) for every image as a codes file (mean, logvar, factors, logpx); prints its path."""
    from isa_core import io
    from isa_core.codes import save_codes

    path = io.read_paths(model, _stdin())[0]
    codes = _encode_model(path, data, batch_size, device, quiet, precision, progress_every)
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
        MiEstimator | None,
        typer.Option(
            help="quadrature (deterministic), sampling or histogram (posterior means only).",
            show_default="quadrature",
        ),
    ] = None,
    factors: Annotated[
        str | None,
        typer.Option(help="Factors to score, e.g. scale,orientation,x,y.", show_default="all"),
    ] = None,
    samples: Annotated[
        int | None,
        typer.Option(min=1, help="sampling: Monte-Carlo samples.", show_default="10000"),
    ] = None,
    bins: Annotated[
        int | None, typer.Option(min=2, help="histogram: bins per latent.", show_default="20")
    ] = None,
    seed: Annotated[int, seed_option("sampling and locatello2019's points: random seed")] = 0,
    protocol: Annotated[
        Protocol,
        typer.Option(
            help="isa (the flags above), chen2018 or locatello2019: presets that fix "
            "--estimator, --factors, --samples and --bins (see the README)."
        ),
    ] = Protocol.isa,
    group: Annotated[
        SubspaceGrouping,
        typer.Option(help="subspaces: also score each ISA subspace as one variable (Monte Carlo)."),
    ] = SubspaceGrouping.none,
    data: ModelData = None,
    batch_size: EncodeBatch = 2048,
    device: EncodeDevice = "auto",
    quiet: NoTable = False,
) -> None:
    """MIG (and mean log p(x|z)) of codes or models: one JSON object per input on stdout."""
    from isa_core import io
    from isa_core.scores import check_protocol_flags, protocol_mig

    given = {"estimator": estimator, "factors": factors, "samples": samples, "bins": bins}
    check_protocol_flags(protocol, **given, group=group)
    for path in io.read_paths(input, _stdin()):
        codes = _codes_or_model(path, data, batch_size, device, quiet)
        if not len(codes.mean):
            raise IsaError(f"{path} holds codes of 0 images; MIG of no images is undefined")
        report = _named(path, protocol_mig, codes, protocol, seed, **given, group=group)
        record = {"input": str(path), **report}
        typer.echo(json.dumps(record))
        if not quiet:
            _print_table(record)


def _named(path: Path, function, *args, **kwargs):
    """``function(*args, **kwargs)``, its errors about the codes naming ``path`` (those about a
    flag keep the flag first)."""
    try:
        return function(*args, **kwargs)
    except IsaError as error:
        if error.field is not None:
            raise
        raise IsaError(f"{path}: {error}") from None


def _print_table(record: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    how = record["estimator"]
    if record.get("protocol", Protocol.isa) != Protocol.isa:
        how += f", protocol {record['protocol']}"
    table = Table(title=f"MIG {record['mig']:.4f} ({how}) — {record['input']}")
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


@app.command("score")
def score_command(
    inputs: Annotated[
        list[str] | None,
        typer.Argument(
            help="Codes files (safetensors or .npz, any writer) or models; '-' or absent: "
            "paths on stdin, one result line each.",
            show_default=False,
        ),
    ] = None,
    metric: Annotated[
        str,
        typer.Option(
            "--metric",
            "--metrics",
            help=f"Scores, comma-separated: {', '.join(ScoreMetric)}.",
        ),
    ] = ",".join(ScoreMetric),
    seed: Annotated[int, seed_option("Random seed of every score's points and classifiers")] = 0,
    protocol: Annotated[
        Protocol,
        typer.Option(help="isa, chen2018 or locatello2019: MIG's preset and the factor set."),
    ] = Protocol.isa,
    data: ModelData = None,
    batch_size: EncodeBatch = 2048,
    device: EncodeDevice = "auto",
    quiet: NoTable = False,
) -> None:
    """Disentanglement scores (DCI, SAP, modularity, explicitness, FactorVAE, BetaVAE, MIG) of
    codes or models: one JSON object per input on stdout, with the protocol's settings."""
    from isa_core.scores import parse_metrics, score_codes

    metrics = parse_metrics(metric)
    for path in _input_paths(inputs):
        codes = _codes_or_model(path, data, batch_size, device, quiet)
        record = {"input": str(path), **_named(path, score_codes, codes, metrics, seed, protocol)}
        typer.echo(json.dumps(record))
        if not quiet:
            _print_scores(record)


def _print_scores(record: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"scores ({record['protocol']}, seed {record['seed']}) — {record['input']}")
    table.add_column("score")
    table.add_column("value", justify="right")
    for key, value in record.items():
        if key == "factorvae_active_latents":
            table.add_row(key, str(value))
        elif isinstance(value, float):
            table.add_row(key, f"{value:.4f}")
    table.caption = f"n = {record['n']}, factors: {', '.join(record['scored_factors'])}"
    Console(stderr=True).print(table)


@app.command("traverse")
def traverse_command(
    out: Annotated[
        Path, typer.Option("-o", "--out", help="PNG file to write, or GIF (--kind traversal).")
    ],
    model: ModelInput = None,
    kind: Annotated[
        TraverseKind,
        typer.Option(help="traversal, latent-vs-true, reconstructions or samples (of the prior)."),
    ] = TraverseKind.traversal,
    span: Annotated[
        TraversalSpan,
        typer.Option(
            help="traversal: values from the prior's quantiles, or the code ± --range "
            "aggregate-posterior stds."
        ),
    ] = TraversalSpan.prior,
    quantile: Annotated[
        float, typer.Option(help="--span prior: levels q .. 1-q of the prior, q in (0, 0.5).")
    ] = 0.02,
    steps: Annotated[int, typer.Option(min=2, max=30, help="Values per latent.")] = 8,
    range_: Annotated[
        float,
        typer.Option("--range", help="--span posterior: half-width in aggregate-posterior stds."),
    ] = 3.0,
    index: Annotated[int, typer.Option(help="Image whose code is traversed (or the first).")] = 0,
    max_rows: Annotated[
        int, typer.Option(min=1, help="traversal: show at most this many latents (by MI).")
    ] = 10,
    all_latents: Annotated[
        bool, typer.Option("--all-latents", help="traversal: the inactive latents too, last.")
    ] = False,
    count: Annotated[
        int,
        typer.Option(min=1, max=32, help="reconstructions: images; samples: a COUNT x COUNT grid."),
    ] = 8,
    seed: Annotated[int, seed_option("samples: seed of the prior draws")] = 0,
    codes: Annotated[
        Path | None, typer.Option(help="Codes file of this model (else the data is encoded).")
    ] = None,
    data: Annotated[str | None, typer.Option(help="Data (default: the model's).")] = None,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")] = "auto",
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Appendix A.5 figures: latent traversals (PNG or animated GIF), latents against the true
    factors, reconstructions, or samples of the model's own prior."""
    import numpy as np

    from isa_core import io, traverse
    from isa_core.checkpoint import load_model
    from isa_core.codes import load_codes
    from isa_core.plots import (
        image_grid,
        latent_traversal,
        latent_vs_true,
        save_gif,
        traversal_frames,
    )

    suffix = out.suffix.lower()
    if suffix == ".gif" and kind != TraverseKind.traversal:
        raise IsaError(f"{out}: only --kind traversal is animated; give a .png file for {kind}")
    if suffix not in (".png", ".gif"):
        raise IsaError(
            f"{out}: figures are written as PNG (or GIF for --kind traversal); give a file name "
            "ending in .png or .gif"
        )
    path = io.read_paths(model, _stdin())[0]
    trained, meta = load_model(path)
    if kind == TraverseKind.samples:
        images = traverse.prior_samples(trained, count * count, seed)
        grid = images.reshape(count, count, *images.shape[1:])
        title = f"decoded samples of the model's prior {trained.prior.current_tree()}"
        io.save_figure(image_grid(grid, [""] * count, title), out)
        typer.echo(str(out.resolve()))
        return
    if kind == TraverseKind.reconstructions:
        dataset = open_dataset(data or meta["config"]["data"])
        last = len(dataset) - 1
        if index < 0 or index + count - 1 > last:
            raise IsaError(
                f"--index {index} with --count {count} runs past the data's images (0..{last})"
            )
        inputs, outputs = traverse.reconstructions(trained, dataset, range(index, index + count))
        title = "inputs (top) and their reconstructions (decoder means at the posterior mean)"
        figure = image_grid(np.stack([inputs, outputs]), ["input", "reconstruction"], title)
        io.save_figure(figure, out)
        typer.echo(str(out.resolve()))
        return
    encoded = load_codes(codes) if codes else _encode_model(path, data, 2048, device, quiet)
    if encoded.logvar is None:
        raise IsaError(
            f"--codes {codes} has no 'logvar'; traversals rank the latents and set their range "
            "by the posterior, so give codes with logvar or leave out --codes"
        )
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
        io.save_figure(figure, out)
        typer.echo(str(out.resolve()))
        return
    # A valid model that learned nothing yet: draw its (inactive) latents, and say so.
    none_active = not all_latents and not traverse.active_latents(encoded, ranking)
    dataset = open_dataset(data or meta["config"]["data"])
    rows = traverse.traversal(
        trained,
        encoded,
        dataset,
        ranking,
        index,
        steps,
        span=span,
        quantile=quantile,
        half_width=range_,
        max_rows=max_rows,
        include_inactive=all_latents or none_active,
    )
    if none_active:
        sys.stderr.write(
            f"isa traverse: no active latent (variance of the posterior mean > "
            f"{traverse.ACTIVE_VARIANCE}): every latent is collapsed to the prior; drew the "
            "inactive ones\n"
        )
    if suffix == ".gif":
        save_gif(traversal_frames(rows), out)
    else:
        io.save_figure(latent_traversal(rows), out)
    typer.echo(str(out.resolve()))
