"""Flags shared by several commands (the prior flags of DESIGN.md) and their parsing."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from isa_core.errors import IsaError, field_error
from isa_core.priors import PriorSpec
from isa_core.priors.spec import DEFAULT_LAYOUT, DEFAULT_P0, DEFAULT_P1, DEFAULT_SCALE

if TYPE_CHECKING:  # torch loads only when a prior is built, so that `isa --help` stays fast
    from isa_core.priors import LpNested

PRIOR_PANEL = (
    f"Prior (default: ISA {DEFAULT_LAYOUT}, p0 {DEFAULT_P0}, p1 {DEFAULT_P1}, s {DEFAULT_SCALE:g})"
)

Layout = Annotated[
    str | None,
    typer.Option(
        "--layout",
        help="ISA layout: COUNTxSIZE like 5x4, or subspace sizes like 4,4,3.",
        show_default=DEFAULT_LAYOUT,
        rich_help_panel=PRIOR_PANEL,
    ),
]
P0 = Annotated[
    float | None,
    typer.Option(
        "--p0",
        help="Root exponent p0 (Eq. 9).",
        show_default=str(DEFAULT_P0),
        rich_help_panel=PRIOR_PANEL,
    ),
]
P1 = Annotated[
    str | None,
    typer.Option(
        "--p1",
        help="Subspace exponent(s) p_i: one value, or one per subspace (2.2,1.9,...).",
        show_default=str(DEFAULT_P1),
        rich_help_panel=PRIOR_PANEL,
    ),
]
Scale = Annotated[
    float,
    typer.Option(
        "--scale",
        help="Scale s of the radial density (Eq. 11); s = 2 with all p = 2 is N(0, I).",
        rich_help_panel=PRIOR_PANEL,
    ),
]
Tree = Annotated[
    str | None,
    typer.Option(
        "--tree",
        help="A full L^p-nested tree, e.g. '2.1(2.2(4),2.2(4))' or '1.5(10)'; "
        "replaces --layout/--p0/--p1.",
        rich_help_panel=PRIOR_PANEL,
    ),
]
Model = Annotated[
    Path | None,
    typer.Option(
        "--model",
        help="Use the prior stored in a trained model.safetensors (learned exponents included); "
        "replaces the other prior flags.",
        rich_help_panel=PRIOR_PANEL,
        show_default=False,
    ),
]
Output = Annotated[
    Path | None,
    typer.Option(
        "-o",
        "--out",
        help="Output file (written atomically; its path is printed).",
        show_default="stdout",
    ),
]

PRECISION_HELP = (
    "fp32; bf16 (encoder and decoder under bf16 autocast; weights, optimizer, prior and losses "
    "stay fp32); or auto: bf16 on a CPU with AMX/AVX512-BF16 or a GPU with bf16, else fp32."
)

SEED_MAX = 2**63 - 1


def _check_seed(value: int) -> int:
    if not 0 <= value <= SEED_MAX:
        raise typer.BadParameter(f"{value} is outside 0..2^63-1 (0..{SEED_MAX}); give a seed in it")
    return value


def seed_option(help: str) -> typer.models.OptionInfo:
    """A ``--seed`` option limited to 0..2^63-1, the seeds every random stream here accepts."""
    return typer.Option(callback=_check_seed, help=f"{help} (0..2^63-1).")


def check_path_text(text: str | Path | None, what: str) -> None:
    """Refuse a path with a NUL byte, which no file name can hold (the OS would reject it)."""
    if text is not None and "\0" in str(text):
        raise IsaError(f"{what} {str(text)!r} contains a NUL byte, which no file name can; fix it")


def build_prior(
    layout: str | None,
    p0: float | None,
    p1: str | None,
    scale: float | None,
    tree: str | None,
    model: Path | None = None,
) -> LpNested:
    """The L^p-nested distribution named by the prior flags or stored in ``--model``."""
    from isa_core.priors import LpNested

    if model is not None:
        given = [
            _flag(name)
            for name, value in (("layout", layout), ("p0", p0), ("p1", p1), ("tree", tree))
            if value is not None
        ]
        if scale is not None:
            given.append("--scale")
        if given:
            raise IsaError(f"--model already fixes the prior; drop {', '.join(given)}")
        return _trained_prior(model)
    scale = DEFAULT_SCALE if scale is None else scale
    if not (math.isfinite(scale) and scale > 0):
        raise field_error("scale", f"must be a positive finite number, got {scale}")
    spec = PriorSpec(layout=layout, p0=p0, p1=p1, tree=tree)
    return LpNested(spec.resolve(), scale=scale)


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _trained_prior(model: Path) -> LpNested:
    """The prior of a trained model file, learned exponents included."""
    import torch

    from isa_core.checkpoint import load_model
    from isa_core.priors import LpNested

    check_path_text(model, "--model")
    trained, _ = load_model(model)
    with torch.no_grad():
        exponents = trained.prior.double().exponents.detach()
        scale = trained.prior.scale.detach().double()
    if not (torch.isfinite(exponents).all() and (exponents > 0).all()):
        raise IsaError(
            f"{model} stores prior exponents {exponents.tolist()}; they must be positive "
            "and finite (the file is damaged)"
        )
    if not (torch.isfinite(scale) and scale > 0):
        raise IsaError(f"{model} stores prior scale {float(scale)}; the file is damaged")
    return LpNested(trained.prior.tree, exponents, scale)
