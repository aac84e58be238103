"""`isa train`: β-VAE, β-TCVAE, FactorVAE, ISA-VAE and ISA-TCVAE from one command."""

from __future__ import annotations

import dataclasses
import signal
import sys
import threading
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from isa_cli.app import app
from isa_cli.options import P0, P1, PRECISION_HELP, Layout, Scale, Tree
from isa_cli.progress import DEFAULT_EVERY, ProgressEvery, progress_bar
from isa_core.choices import Arch, Objective, Precision, PriorKind, TcEstimator, TrainLog
from isa_core.errors import IsaError
from isa_core.locks import folder_lock
from isa_core.priors import LpTree, PriorSpec
from isa_core.priors.spec import DEFAULT_LATENT_DIM, DEFAULT_SCALE

if TYPE_CHECKING:  # torch and the training loop load only when a command runs (fast --help)
    import torch

    from isa_core.config import TrainConfig
    from isa_core.data import GroundTruthData
    from isa_core.tensorboard_log import TensorBoardLog
    from isa_core.training import TrainResult

# What --resume may change: the run's length, its bookkeeping, and where and how it runs. The
# precision changes the rounding, not the model; a run moved to a machine without fast bf16
# must be able to go on in fp32 (and back), so it is free to change like --device; so is
# --compile (the same values, computed by other kernels).
RESUMABLE = {"out", "resume", "force", "steps", "epochs", "checkpoint_every", "log_every"}
RESUMABLE |= {"device", "precision", "compile", "threads", "quiet", "progress_every"}
RESUMABLE |= {"log", "image_every"}  # where the run is mirrored for looking, not the run
PRIOR_FLAGS = ("prior", "layout", "p0", "p1", "tree", "latent_dim")
CHANGED_ON_RESUME = ("checkpoint_every", "log_every", "precision", "compile")


@app.command("train")
def train_command(
    ctx: typer.Context,
    out: Annotated[Path, typer.Option("-o", "--out", help="Run folder (created).")],
    data: Annotated[str, typer.Option(help="Data set name or path (see `isa data`).")] = "dsprites",
    prior: Annotated[PriorKind, typer.Option(help="Latent prior.")] = PriorKind.isa,
    layout: Layout = None,
    p0: P0 = None,
    p1: P1 = None,
    scale: Scale = None,
    tree: Tree = None,
    objective: Annotated[Objective, typer.Option(help="Training objective.")] = Objective.vae,
    beta: Annotated[float, typer.Option(help="Weight β of the KL (vae) or TC (tcvae).")] = 1.0,
    gamma: Annotated[float, typer.Option(help="FactorVAE's TC weight γ.")] = 1.0,
    tc_estimator: Annotated[
        TcEstimator, typer.Option(help="tcvae's q(z) estimator: mss (stratified) or mws.")
    ] = TcEstimator.mss,
    estimator: Annotated[
        TcEstimator | None,
        typer.Option(hidden=True, help="Deprecated name of --tc-estimator.", show_default=False),
    ] = None,
    learn_exponents: Annotated[
        bool, typer.Option(help="Learn the subspace exponents (p0 stays fixed).")
    ] = False,
    exponent_lr: Annotated[float, typer.Option(help="Learning rate of the exponents.")] = 1e-3,
    closed_form_kl: Annotated[
        bool, typer.Option(help="vae with the normal prior: closed-form KL instead of Monte Carlo.")
    ] = False,
    arch: Annotated[Arch, typer.Option(help="Encoder/decoder architecture.")] = Arch.mlp,
    latent_dim: Annotated[
        int | None,
        typer.Option(help="K; must match the prior's n.", show_default=str(DEFAULT_LATENT_DIM)),
    ] = None,
    epochs: Annotated[float | None, typer.Option(help="Epochs.", show_default="20")] = None,
    steps: Annotated[
        int | None, typer.Option(help="Optimizer steps (instead of --epochs).")
    ] = None,
    batch_size: Annotated[int, typer.Option(help="Images per step.")] = 2048,
    lr: Annotated[float, typer.Option(help="Adam learning rate.")] = 1e-3,
    anneal_steps: Annotated[
        int, typer.Option(help="Warm the KL/TC weight up from 0 over these steps (0: off).")
    ] = 0,
    seed: Annotated[int, typer.Option(help="Seed of every random stream.")] = 0,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")] = "auto",
    precision: Annotated[
        Precision,
        typer.Option(
            help=PRECISION_HELP + " May change on --resume (a run moved to another machine); "
            "the precision used is recorded in the model file and metrics.jsonl."
        ),
    ] = Precision.auto,
    threads: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="CPU threads for torch's intra-op parallelism (torch.set_num_threads); "
            "`isa sweep run --jobs N` gives each run its share of the cores. Not part of the "
            "run: may change on --resume.",
            show_default="torch's default: all cores, or OMP_NUM_THREADS",
        ),
    ] = None,
    compile: Annotated[
        bool,
        typer.Option(
            help="Compile the likelihood's and the TC estimator's elementwise work with "
            "TorchInductor: C++ on the CPU (needs a compiler), Triton on CUDA; where that fails, "
            "a warning, then the same results eagerly. Only large batches compile; may change "
            "on --resume."
        ),
    ] = True,
    resume: Annotated[
        bool,
        typer.Option(
            help="Continue the run in --out with its stored settings; only --steps/--epochs, "
            "--checkpoint-every, --log-every, --device, --precision, --compile, --threads, "
            "--log, --image-every and --quiet may change."
        ),
    ] = False,
    force: Annotated[bool, typer.Option(help="Overwrite a run already in --out.")] = False,
    checkpoint_every: Annotated[int, typer.Option(help="Checkpoint every N steps.")] = 1000,
    log_every: Annotated[int, typer.Option(help="Log a metrics line every N steps.")] = 50,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
    progress_every: ProgressEvery = DEFAULT_EVERY,
    log: Annotated[
        TrainLog,
        typer.Option(
            help="metrics: metrics.jsonl only; tensorboard: also a TensorBoard log in "
            "OUT/tensorboard (needs the extra: pip install 'isa[tensorboard]'). metrics.jsonl "
            "stays the record. May change on --resume."
        ),
    ] = TrainLog.metrics,
    image_every: Annotated[
        int,
        typer.Option(min=0, help="--log tensorboard: a traversal image every N steps (0: none)."),
    ] = 1000,
) -> None:
    """Train a VAE with an L^p-nested prior; prints the path of model.safetensors."""
    from isa_core.checkpoint import prepare_folder
    from isa_core.devices import resolve_device
    from isa_core.precision import resolve_precision
    from isa_core.training import open_run_data

    if steps is not None and epochs is not None:
        raise IsaError("give --steps or --epochs, not both")
    if steps is not None and steps < 1:
        raise IsaError(f"--steps must be >= 1, got {steps}")
    if resume and force:
        raise IsaError("--resume and --force contradict each other; pick one")
    params = _with_alias(ctx)
    target = resolve_device(device)
    resolve_precision(precision, target)  # bf16 on a GPU without it: refused here
    if threads is not None:
        import torch

        torch.set_num_threads(threads)
    if log == TrainLog.tensorboard:
        _check_tensorboard()  # before any folder is made
    if not resume:
        config = _new_config(params)
        run_data = open_run_data(config)  # a bad flag or --data fails before the folder
        _make_folder(out)
    elif not out.is_dir():
        prepare_folder(out, resume=True, force=False)  # names the problem
    # The lock comes before anything is read for a resume or deleted for --force.
    with folder_lock(out, "isa train"):
        prepare_folder(out, resume=resume, force=force)
        if resume:
            config = _resumed_config(ctx, params, out)
            run_data = open_run_data(config)
        sink = _tensorboard(out, run_data, config.seed) if log == TrainLog.tensorboard else None
        try:
            result, received = _train_with_signals(
                config, out, target, run_data, resume, quiet, progress_every, sink, image_every
            )
        finally:
            if sink is not None:
                sink.close()
    _finish(result, received)


def _check_tensorboard() -> None:
    """Refuse --log tensorboard in one line when the package is missing."""
    import importlib.util

    from isa_core.tensorboard_log import INSTALL_HINT

    if importlib.util.find_spec("tensorboard") is None:
        raise IsaError(f"--log tensorboard: {INSTALL_HINT}")


def _tensorboard(out: Path, data: GroundTruthData, seed: int) -> TensorBoardLog:
    from isa_core.tensorboard_log import TensorBoardLog

    return TensorBoardLog(out, data, seed)


def _with_alias(ctx: typer.Context) -> dict:
    """The flags' values, ``--estimator`` (deprecated, with a warning) read as --tc-estimator."""
    params = dict(ctx.params)
    alias = params.pop("estimator")
    if alias is None:
        return params
    warnings.warn("--estimator is deprecated; use --tc-estimator", FutureWarning, stacklevel=2)
    if "tc_estimator" in _given(ctx) and params["tc_estimator"] != alias:
        raise IsaError("--estimator and --tc-estimator disagree; give only --tc-estimator")
    params["tc_estimator"] = alias
    return params


def _given(ctx: typer.Context) -> set[str]:
    """The flags typed on the command line (or set through the environment), not defaults."""
    names = set()
    for name in ctx.params:
        source = getattr(ctx.get_parameter_source(name), "name", "DEFAULT")
        if source not in ("DEFAULT", "DEFAULT_MAP"):
            names.add(name)
    return names


def _prior_tree(params: dict, learn_exponents: bool) -> LpTree:
    """The prior's tree named by the prior flags (the paper's defaults where not given)."""
    spec = PriorSpec(**{name: params[name] for name in PRIOR_FLAGS})
    return spec.resolve(learn_exponents=learn_exponents)


def _new_config(params: dict) -> TrainConfig:
    """The config of a new run from the flags; TrainConfig checks every value."""
    from isa_core.config import TrainConfig

    fields = {f.name for f in dataclasses.fields(TrainConfig)} - {"tree", "scale", "steps"}
    values = {name: params[name] for name in fields - {"epochs"}}
    if params["steps"] is not None:
        values["steps"] = params["steps"]
    elif params["epochs"] is not None:
        values["epochs"] = params["epochs"]
    scale = DEFAULT_SCALE if params["scale"] is None else params["scale"]
    tree = _prior_tree(params, params["learn_exponents"])
    return TrainConfig(tree=tree, scale=scale, **values)


def _make_folder(out: Path) -> None:
    """Create the run folder (its lock lives inside it)."""
    if out.exists() and not out.is_dir():
        raise IsaError(f"--out {out} is a file; give a folder for the run")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise IsaError(f"cannot create the run folder {out}: {error.strerror}") from None


def _finish(result: TrainResult, received: list[int]) -> None:
    """Print the model's path; after a signal, say how to go on and exit 130 or 143."""
    typer.echo(str(result.model_path))
    if result.interrupted:
        code = 143 if received and received[0] == signal.SIGTERM else 130
        sys.stderr.write(
            f"isa train: interrupted at step {result.step}; checkpoint saved, continue with "
            "--resume\n"
        )
        raise typer.Exit(code)


def _train_with_signals(
    config: TrainConfig,
    out: Path,
    device: torch.device,
    data: GroundTruthData,
    resume: bool,
    quiet: bool,
    every: float,
    sink: TensorBoardLog | None = None,
    image_every: int = 0,
) -> tuple[TrainResult, list[int]]:
    """Train with a progress bar; SIGINT/SIGTERM stop it at the next step, after a checkpoint."""
    from isa_core.training import train

    stop = threading.Event()
    received: list[int] = []

    def on_signal(number: int, _frame: object) -> None:
        received.append(number)
        stop.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        # Off a terminal, a line every `every` s; its pace counts from the first step of
        # this process (a resumed run starts past 0).
        lines = {"every": every, "scale": config.batch_size, "start": None}
        with progress_bar("train", quiet, **lines) as bar:

            def on_log(metrics: dict) -> None:
                loss, logpx = metrics.get("loss", float("nan")), metrics.get("logpx", float("nan"))
                rate = metrics.get("images_per_s", 0)
                bar.update(detail=f"loss {loss:.2f}  logpx {logpx:.2f}  {rate:,.0f} img/s")
                if sink is not None:
                    sink.scalars(metrics)

            result = train(
                config,
                out,
                device,
                data=data,
                resume=resume,
                stop=stop,
                on_log=on_log,
                on_step=bar.callback,
                on_model=sink and sink.traversal_image,
                model_every=image_every if sink is not None else 0,
            )
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
    return result, received


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _shown(name: str, value: object) -> str:
    """A flag as the user would type it: ``--beta 100.0``, ``--no-learn-exponents``."""
    if isinstance(value, bool):
        return _flag(name) if value else "--no-" + name.replace("_", "-")
    return f"{_flag(name)} {value}"


def _resumed_config(ctx: typer.Context, params: dict, out: Path) -> TrainConfig:
    """The stored config, with the new length; refuses a given flag that would change the run."""
    from isa_core.checkpoint import read_run_config

    config = read_run_config(out)
    given = _given(ctx) | ({"tc_estimator"} if ctx.params["estimator"] is not None else set())
    for name in sorted(given - RESUMABLE - set(PRIOR_FLAGS)):
        if not hasattr(config, name):
            continue  # a flag of this process only (not part of the run), free to change
        value, stored = params[name], getattr(config, name)
        if value != stored:
            shown = _shown(name, stored) if isinstance(stored, bool) else str(stored)
            raise IsaError(
                f"{_shown(name, value)} differs from the run's {shown}; drop it or start a new "
                "run (--resume keeps the run's settings)"
            )
    prior_given = [name for name in PRIOR_FLAGS if name in given]
    if prior_given:
        learn = params["learn_exponents"] if "learn_exponents" in given else None
        _check_prior_flags(params, config, prior_given, learn)
    changes = {name: params[name] for name in CHANGED_ON_RESUME if name in given}
    if params["steps"] is not None:
        changes.update(steps=params["steps"], epochs=None)
    elif params["epochs"] is not None:
        changes.update(steps=0, epochs=params["epochs"])
    return dataclasses.replace(config, **changes)


def _check_prior_flags(
    params: dict, config: TrainConfig, given: list[str], learn: bool | None
) -> None:
    """Refuse prior flags that, read as a new run would read them, give another prior."""
    built = _prior_tree(params, config.learn_exponents if learn is None else learn)
    if built != config.tree:
        flags = " ".join(_shown(name, params[name]) for name in given)
        raise IsaError(
            f"{flags} gives the prior {built}, which differs from the run's {config.tree}; drop "
            "it or start a new run (--resume keeps the run's settings)"
        )
