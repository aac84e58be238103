"""`isa encode`, `isa mig`, `isa traverse`: a trained model's numbers and pictures."""

from __future__ import annotations

import json
import math
import sys
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from isa_cli.app import app
from isa_cli.options import check_path_text, seed_option
from isa_cli.train import PRECISION_HELP, Precision, resolve_device
from isa_core.data import open_dataset
from isa_core.errors import IsaError

if TYPE_CHECKING:  # numpy, torch and the models load inside the commands (fast `isa --help`)
    from isa_core.codes import Codes


class Estimator(str, Enum):
    quadrature = "quadrature"
    sampling = "sampling"
    histogram = "histogram"


class Grouping(str, Enum):
    none = "none"
    subspaces = "subspaces"


class Kind(str, Enum):
    traversal = "traversal"
    latent_vs_true = "latent-vs-true"


ModelInput = Annotated[
    str | None,
    typer.Argument(help="model.safetensors, '-' or absent: a path on stdin.", show_default=False),
]


def _stdin():
    return typer.get_binary_stream("stdin")


def _progress(label: str, quiet: bool):
    """A rich progress callback on stderr (None when quiet or not a terminal)."""
    if quiet or not sys.stderr.isatty():
        return None, None
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    progress = Progress(
        TextColumn(f"[bold]{label}[/]"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=True,
    )
    task = progress.add_task(label, total=None)
    return progress, lambda done, total: progress.update(task, completed=done, total=total)


def _encode_model(
    path: Path,
    data: str | None,
    batch_size: int,
    device: str,
    quiet: bool,
    precision: str | None = None,
):
    """Codes of the model at ``path``, in ``precision`` or else the one it was trained with."""
    from isa_core.codes import encode
    from isa_core.training import config_from_metadata, load_model

    model, meta = load_model(path)
    # The requested precision it was trained with (auto resolves again for this device).
    precision = precision or config_from_metadata(meta["config"], str(path)).precision
    source = data or meta["config"]["data"]
    try:
        dataset = open_dataset(source)
    except IsaError as error:
        raise IsaError(
            f"the model's data {source!r} is not available ({error}); pass --data"
        ) from None
    progress, callback = _progress("encode", quiet)
    target = resolve_device(device)
    if progress is not None:
        with progress:
            codes = encode(
                model, dataset, target, batch_size, on_batch=callback, precision=precision
            )
    else:
        codes = encode(model, dataset, target, batch_size, precision=precision)
    codes.metadata.update(model=str(path.resolve()), config=meta["config"], data_source=source)
    return codes


def _codes_or_model(path: Path, data, batch_size, device, quiet) -> Codes:
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
    chosen = None if precision is None else precision.value
    codes = _encode_model(path, data, batch_size, device, quiet, chosen)
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
        Estimator, typer.Option(help="quadrature (deterministic), sampling or histogram.")
    ] = Estimator.quadrature,
    factors: Annotated[
        str | None,
        typer.Option(help="Factors to score, e.g. scale,orientation,x,y.", show_default="all"),
    ] = None,
    samples: Annotated[int, typer.Option(min=1, help="sampling: Monte-Carlo samples.")] = 10_000,
    bins: Annotated[int, typer.Option(min=2, help="histogram: bins per latent.")] = 20,
    seed: Annotated[int, seed_option("sampling: random seed")] = 0,
    group: Annotated[
        Grouping,
        typer.Option(help="subspaces: also score each ISA subspace as one variable (Monte Carlo)."),
    ] = Grouping.none,
    data: Annotated[str | None, typer.Option(help="Data for models (default: theirs).")] = None,
    batch_size: Annotated[int, typer.Option(min=1, help="Encoding batch size.")] = 2048,
    device: Annotated[str, typer.Option(help="Encoding device.")] = "auto",
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No table on stderr.")] = False,
) -> None:
    """MIG (and mean log p(x|z)) of codes or models: one JSON object per input on stdout."""
    import numpy as np

    from isa_core import io
    from isa_core.metrics import mig as compute_mig

    chosen = estimator.value
    for path in io.read_paths(input, _stdin()):
        codes = _codes_or_model(path, data, batch_size, device, quiet)
        if not len(codes.mean):
            raise IsaError(f"{path} holds codes of 0 images; MIG of no images is undefined")
        names = codes.factor_names
        keep = list(range(len(names)))
        if factors is not None:
            wanted = [f.strip() for f in factors.split(",") if f.strip()]
            unknown = [f for f in wanted if f not in names]
            if unknown or not wanted:
                raise IsaError(
                    f"--factors {factors!r}: unknown {', '.join(unknown) or 'list'}; "
                    f"this data has {', '.join(names)}"
                )
            keep = [names.index(f) for f in wanted]
        result = compute_mig(
            codes.mean,
            codes.std,
            codes.factors[:, keep],
            [names[i] for i in keep],
            chosen,
            samples,
            bins,
            seed,
        )
        record = {"input": str(path), **result.as_dict()}
        record["n"] = len(codes.mean)
        record["logpx"] = None if codes.logpx is None else float(np.mean(codes.logpx))
        record["scored_factors"] = [names[i] for i in keep]
        record["normalization"] = (
            "H(v_k), the factor's empirical entropy (log |V_k| on a full grid)"
        )
        if result.resolution is not None:
            record["resolution"] = result.resolution
        if group == Grouping.subspaces:
            record["subspaces"] = _subspace_record(codes, keep, samples, seed)
        typer.echo(json.dumps(record))
        if not quiet:
            _print_table(record)


def _subspace_record(codes: Codes, keep: list[int], samples: int, seed: int) -> dict:
    from isa_core.metrics import subspace_mig
    from isa_core.priors import LpTree

    config = codes.metadata.get("config") or {}
    if not isinstance(config, dict) or not isinstance(config.get("tree"), str):
        raise IsaError("--group subspaces needs the model's prior; these codes do not record it")
    subspaces = [list(r) for r in LpTree.parse(config["tree"]).subspaces]
    if all(len(s) == 1 for s in subspaces):
        raise IsaError(
            "--group subspaces needs an ISA prior; this model's subspaces are single latents"
        )
    names = codes.factor_names
    result = subspace_mig(
        codes.mean,
        codes.std,
        codes.factors[:, keep],
        [names[i] for i in keep],
        subspaces,
        samples,
        seed,
    )
    return {"groups": subspaces, **result.as_dict()}


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
    kind: Annotated[Kind, typer.Option(help="traversal or latent-vs-true.")] = Kind.traversal,
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
    import numpy as np
    import torch

    from isa_core import io
    from isa_core.codes import load_codes
    from isa_core.metrics import mutual_information
    from isa_core.plots import latent_traversal, latent_vs_true
    from isa_core.training import load_model

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
    names = encoded.factor_names
    mi, _ = mutual_information(encoded.mean, encoded.std, encoded.factors)  # (F, K)
    best = mi.argmax(0)
    strength = mi.max(0)
    labels = [f"z{j} · {names[best[j]]} ({strength[j]:.2f})" for j in range(mi.shape[1])]
    if kind == Kind.latent_vs_true:
        missing = {"shape", "scale", "orientation", "x", "y"} - set(names)
        if missing:
            lacking = ", ".join(sorted(missing))
            raise IsaError(f"latent-vs-true needs dSprites factors; this data lacks {lacking}")
        active = [int(j) for j in np.argsort(-strength) if encoded.mean[:, j].var() > 0.01]
        if not active:
            raise IsaError("no active latent (variance of the posterior mean > 0.01)")
        if "factor_values" not in encoded.metadata:
            raise IsaError("latent-vs-true needs the factor values; these codes do not record them")
        values = [np.asarray(v) for v in encoded.metadata["factor_values"]]
        figure = latent_vs_true(
            encoded.mean, encoded.factors, names, values, active, [labels[j] for j in active]
        )
    else:
        dataset = open_dataset(data or meta["config"]["data"])
        if not 0 <= index < min(len(dataset), len(encoded.mean)):
            last = min(len(dataset), len(encoded.mean)) - 1
            raise IsaError(f"--index {index} is out of range (0..{last})")
        if not (math.isfinite(range_) and range_ > 0):
            raise IsaError(f"--range must be a positive finite number, got {range_}; e.g. 3")
        order = [int(j) for j in np.argsort(-strength)][:max_rows]
        spread = np.sqrt(encoded.mean.var(0) + np.exp(encoded.logvar).mean(0))  # aggregate std
        grid = np.linspace(-range_, range_, steps)
        base = torch.from_numpy(encoded.mean[index]).float()
        rows, values = [], []
        with torch.no_grad():
            for j in order:
                z = base.repeat(steps, 1)
                z[:, j] = base[j] + torch.from_numpy(grid * spread[j]).float()
                images = torch.sigmoid(trained.decode(z)).permute(0, 2, 3, 1).numpy()
                rows.append(images[..., 0] if images.shape[-1] == 1 else images)
                values.append(z[:, j].numpy())
        original = dataset.images([index])[0].permute(1, 2, 0).numpy()
        original = original[..., 0] if original.shape[-1] == 1 else original
        figure = latent_traversal(rows, original, np.array(values), [labels[j] for j in order])
    io.save_figure(figure, out)
    typer.echo(str(out.resolve()))
