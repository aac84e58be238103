"""`isa train`: β-VAE, β-TCVAE, FactorVAE, ISA-VAE and ISA-TCVAE from one command."""

from __future__ import annotations

import signal
import sys
import threading
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from isa_cli.app import app
from isa_cli.options import P0, P1, Layout, Scale, Tree, build_tree
from isa_core.errors import IsaError
from isa_core.locks import folder_lock
from isa_core.precision import PRECISIONS
from isa_core.priors import LpTree

if TYPE_CHECKING:  # torch and the training loop load only when a command runs (fast --help)
    import torch

    from isa_core.training import TrainConfig


class PriorKind(str, Enum):
    normal = "normal"
    gennorm = "gennorm"
    isa = "isa"


class Objective(str, Enum):
    vae = "vae"
    tcvae = "tcvae"
    factorvae = "factorvae"


class Estimator(str, Enum):
    mss = "mss"
    mws = "mws"


class Arch(str, Enum):
    mlp = "mlp"
    conv = "conv"


# The choices come from the library (isa_core.precision), the one place that defines them.
Precision = Enum("Precision", {name: name for name in PRECISIONS}, type=str)
PRECISION_HELP = (
    "fp32; bf16 (encoder and decoder under bf16 autocast; weights, optimizer, prior and losses "
    "stay fp32); or auto: bf16 on a CPU with AMX/AVX512-BF16 or a GPU with bf16, else fp32."
)


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when present; ``cpu``, ``cuda`` and ``cuda:N`` are taken as given."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise IsaError(f"unknown --device {name!r}; use auto, cpu, cuda or cuda:N") from None
    if device.type not in ("cpu", "cuda"):
        raise IsaError(f"unknown --device {name!r}; use auto, cpu, cuda or cuda:N")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise IsaError("--device cuda was asked for but no CUDA GPU is available; use --device cpu")
    return device


def prior_tree(
    kind: PriorKind,
    layout: str | None,
    p0: float | None,
    p1: str | None,
    tree: str | None,
    latent_dim: int | None,
    learn_exponents: bool,
) -> LpTree:
    """The prior's tree from --prior and the prior flags; checks --latent-dim against it."""
    if tree is not None or kind == PriorKind.isa:
        if learn_exponents and p1 is None and tree is None:
            p1 = "2.0"  # the paper starts learned exponents at 2.0 (section 4, A.2)
        result = build_tree(layout, p0, p1, tree)
    else:
        if layout is not None or p1 is not None:
            raise IsaError(
                f"--layout and --p1 describe ISA subspaces; --prior {kind.value} has none"
            )
        n = latent_dim if latent_dim is not None else 20
        if n < 1:
            raise IsaError(f"--latent-dim must be >= 1, got {n}")
        if kind == PriorKind.normal:
            if p0 is not None:
                raise IsaError("--prior normal has no exponent; use --prior gennorm --p0 P")
            result = LpTree.normal(n)
        else:
            result = LpTree.gennorm(n, build_tree(None, p0, None, None).p0)
    if latent_dim is not None and latent_dim != result.n:
        raise IsaError(
            f"--latent-dim {latent_dim} disagrees with the prior, which has n = {result.n} "
            f"({result}); drop --latent-dim or change --layout"
        )
    return result


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
    estimator: Annotated[
        Estimator, typer.Option(help="tcvae's q(z) estimator: mss (stratified) or mws.")
    ] = Estimator.mss,
    learn_exponents: Annotated[
        bool, typer.Option(help="Learn the subspace exponents (p0 stays fixed).")
    ] = False,
    exponent_lr: Annotated[float, typer.Option(help="Learning rate of the exponents.")] = 1e-3,
    closed_form_kl: Annotated[
        bool, typer.Option(help="vae with the normal prior: closed-form KL instead of Monte Carlo.")
    ] = False,
    arch: Annotated[Arch, typer.Option(help="Encoder/decoder architecture.")] = Arch.mlp,
    latent_dim: Annotated[
        int | None, typer.Option(help="K; must match the prior's n.", show_default="20")
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
            "TorchInductor on the CPU (needs a C++ compiler; without one a warning, then the "
            "same results eagerly). Only large batches compile; may change on --resume."
        ),
    ] = True,
    resume: Annotated[
        bool,
        typer.Option(
            help="Continue the run in --out with its stored settings; only --steps/--epochs, "
            "--checkpoint-every, --log-every, --device, --precision, --compile, --threads and "
            "--quiet may change."
        ),
    ] = False,
    force: Annotated[bool, typer.Option(help="Overwrite a run already in --out.")] = False,
    checkpoint_every: Annotated[int, typer.Option(help="Checkpoint every N steps.")] = 1000,
    log_every: Annotated[int, typer.Option(help="Log a metrics line every N steps.")] = 50,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Train a VAE with an L^p-nested prior; prints the path of model.safetensors."""
    from isa_core.precision import resolve_precision
    from isa_core.training import TrainConfig, preflight, prepare_folder

    if steps is not None and epochs is not None:
        raise IsaError("give --steps or --epochs, not both")
    if steps is not None and steps < 1:
        raise IsaError(f"--steps must be >= 1, got {steps}")
    if resume and force:
        raise IsaError("--resume and --force contradict each other; pick one")
    target = resolve_device(device)
    resolve_precision(precision.value, target)  # bf16 on a GPU without it: refused here
    if threads is not None:
        import torch

        torch.set_num_threads(threads)
    if resume:
        if not out.is_dir():
            prepare_folder(out, resume=True, force=False)  # names the problem
    else:
        tree_spec = prior_tree(prior, layout, p0, p1, tree, latent_dim, learn_exponents)
        config = TrainConfig(
            data=data,
            tree=str(tree_spec),
            scale=2.0 if scale is None else scale,
            prior=prior.value if tree is None else "tree",
            learn_exponents=learn_exponents,
            exponent_lr=exponent_lr,
            objective=objective.value,
            beta=beta,
            gamma=gamma,
            estimator=estimator.value,
            closed_form_kl=closed_form_kl,
            arch=arch.value,
            steps=steps or 0,
            epochs=None if steps is not None else 20.0 if epochs is None else epochs,
            batch_size=batch_size,
            lr=lr,
            seed=seed,
            anneal_steps=anneal_steps,
            checkpoint_every=checkpoint_every,
            log_every=log_every,
            precision=precision.value,
            compile=compile,
        )
        preflight(config)  # fail on a bad flag or --data before touching the folder
        if out.exists() and not out.is_dir():
            raise IsaError(f"--out {out} is a file; give a folder for the run")
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise IsaError(f"cannot create the run folder {out}: {error.strerror}") from None

    # The lock comes before anything is read for a resume or deleted for --force.
    with folder_lock(out, "isa train"):
        if resume:
            prepare_folder(out, resume=True, force=False)
            config = _resumed_config(ctx, out, steps, epochs)
        else:
            prepare_folder(out, resume=False, force=force)
        result, received = _train_with_signals(config, out, target, resume, quiet)
    typer.echo(str(result.model_path))
    if result.interrupted:
        code = 143 if received and received[0] == signal.SIGTERM else 130
        sys.stderr.write(
            f"isa train: interrupted at step {result.step}; checkpoint saved, continue with "
            f"--resume\n"
        )
        raise typer.Exit(code)


def _train_with_signals(config, out, device, resume, quiet):
    """Train; SIGINT/SIGTERM stop it at the next step, after a checkpoint."""
    stop = threading.Event()
    received: list[int] = []

    def on_signal(number: int, _frame: object) -> None:
        received.append(number)
        stop.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        result = _run_with_progress(config, out, device, resume, stop, quiet)
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
    return result, received


# What --resume may change: the run's length, its bookkeeping, and where and how it runs. The
# precision changes the rounding, not the model; a run moved to a machine without fast bf16
# must be able to go on in fp32 (and back), so it is free to change like --device; so is
# --compile (the same values, computed by other kernels).
RESUMABLE = {"out", "resume", "force", "steps", "epochs", "checkpoint_every", "log_every"}
RESUMABLE |= {"device", "precision", "compile", "threads", "quiet"}
PRIOR_FLAGS = ("prior", "layout", "p0", "p1", "tree", "latent_dim")


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _shown(name: str, value: object) -> str:
    """A flag as the user would type it: ``--beta 100.0``, ``--no-learn-exponents``."""
    if isinstance(value, bool):
        return _flag(name) if value else "--no-" + name.replace("_", "-")
    return f"{_flag(name)} {value}"


def _resumed_config(
    ctx: typer.Context, out: Path, steps: int | None, epochs: float | None
) -> TrainConfig:
    """The stored config, with the new length; refuses a given flag that would change the run."""
    from isa_core.training import read_run_config

    config = read_run_config(out)
    # Given explicitly: typed on the command line (or set through the environment).
    given = {
        name
        for name in ctx.params
        if getattr(ctx.get_parameter_source(name), "name", "DEFAULT")
        not in ("DEFAULT", "DEFAULT_MAP")
    }
    for name in sorted(given - RESUMABLE - set(PRIOR_FLAGS)):
        if not hasattr(config, name):
            continue  # a flag of this process only (not part of the run), free to change
        value = ctx.params[name]
        value = value.value if isinstance(value, Enum) else value
        stored = getattr(config, name)
        if value != stored:
            shown = _shown(name, stored) if isinstance(stored, bool) else str(stored)
            raise IsaError(
                f"{_shown(name, value)} differs from the run's {shown}; drop it or start a new "
                "run (--resume keeps the run's settings)"
            )
    prior_given = [name for name in PRIOR_FLAGS if name in given]
    if prior_given:
        _check_prior_flags(ctx.params, config, prior_given, "learn_exponents" in given)
    for name in ("checkpoint_every", "log_every", "precision", "compile"):
        if name in given:
            value = ctx.params[name]
            setattr(config, name, value.value if isinstance(value, Enum) else value)
    if steps is not None:
        config.steps, config.epochs = steps, None
    elif epochs is not None:
        config.steps, config.epochs = 0, epochs
    return config


def _check_prior_flags(
    params: dict, config: TrainConfig, given: list[str], learn_given: bool
) -> None:
    """Refuse prior flags that, read as a new run would read them, give another prior."""
    kind = params["prior"]
    if "prior" in given and config.prior != "tree" and kind.value != config.prior:
        raise IsaError(
            f"--prior {kind.value} differs from the run's {config.prior}; drop it or start a new "
            "run (--resume keeps the run's settings)"
        )
    learn = params["learn_exponents"] if learn_given else config.learn_exponents
    built = prior_tree(
        kind,
        params["layout"],
        params["p0"],
        params["p1"],
        params["tree"],
        params["latent_dim"],
        learn,
    )
    stored = LpTree.parse(config.tree)
    if built != stored:
        flags = " ".join(
            _shown(name, params[name].value if isinstance(params[name], Enum) else params[name])
            for name in given
        )
        raise IsaError(
            f"{flags} gives the prior {built}, which differs from the run's {stored}; drop it or "
            "start a new run (--resume keeps the run's settings)"
        )


def _run_with_progress(config, out, device, resume, stop, quiet):
    from isa_core.training import train

    show = not quiet and sys.stderr.isatty()
    if not show:
        return train(config, out, device, resume=resume, stop=stop)
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    columns = (
        TextColumn("[bold]train[/]"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TextColumn("loss {task.fields[loss]}  logpx {task.fields[logpx]}  {task.fields[rate]}"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=Console(stderr=True), transient=False) as progress:
        task = progress.add_task("train", total=None, loss="-", logpx="-", rate="")

        def on_step(step: int, total: int) -> None:
            progress.update(task, completed=step, total=total)

        def on_log(metrics: dict[str, float]) -> None:
            progress.update(
                task,
                loss=f"{metrics.get('loss', float('nan')):.2f}",
                logpx=f"{metrics.get('logpx', float('nan')):.2f}",
                rate=f"{metrics.get('images_per_s', 0):,.0f} img/s",
            )

        return train(config, out, device, resume, stop, on_log, on_step)
