"""Flags shared by several commands (the prior flags of DESIGN.md) and their parsing."""

from __future__ import annotations

import math
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from isa_core.errors import IsaError
from isa_core.priors import LpTree, parse_layout

if TYPE_CHECKING:  # torch loads only when a prior is built, so that `isa --help` stays fast
    from isa_core.priors import LpNested

PRIOR_PANEL = "Prior (default: ISA 5x4, p0 2.1, p1 2.2, s 2)"

Layout = Annotated[
    str | None,
    typer.Option(
        "--layout",
        help="ISA layout: COUNTxSIZE like 5x4, or subspace sizes like 4,4,3.",
        show_default="5x4",
        rich_help_panel=PRIOR_PANEL,
    ),
]
P0 = Annotated[
    float | None,
    typer.Option(
        "--p0", help="Root exponent p0 (Eq. 9).", show_default="2.1", rich_help_panel=PRIOR_PANEL
    ),
]
P1 = Annotated[
    str | None,
    typer.Option(
        "--p1",
        help="Subspace exponent(s) p_i: one value, or one per subspace (2.2,1.9,...).",
        show_default="2.2",
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


class DType(str, Enum):
    float32 = "float32"
    float64 = "float64"


class SampleMethod(str, Enum):
    nested = "nested"
    isa = "isa"


def _positive(value: float, flag: str) -> float:
    if not (math.isfinite(value) and value > 0):
        raise IsaError(f"{flag} must be a positive finite number, got {value}")
    return value


def _parse_p1(text: str) -> float | list[float]:
    try:
        values = [float(part) for part in text.split(",")]
    except ValueError:
        raise IsaError(
            f"cannot parse --p1 {text!r}; give a number (2.2) or one per subspace (2.2,1.9)"
        ) from None
    for value in values:
        _positive(value, "--p1")
    return values[0] if len(values) == 1 else values


def build_tree(layout: str | None, p0: float | None, p1: str | None, tree: str | None) -> LpTree:
    """The prior's tree from ``--tree`` or from ``--layout/--p0/--p1`` (defaults 5x4/2.1/2.2)."""
    if tree is not None:
        given = [flag for flag, v in (("--layout", layout), ("--p0", p0), ("--p1", p1)) if v]
        if given:
            raise IsaError(f"--tree already fixes the prior; drop {', '.join(given)}")
        return LpTree.parse(tree)
    sizes = parse_layout(layout if layout is not None else "5x4")
    root = _positive(p0 if p0 is not None else 2.1, "--p0")
    sub = _parse_p1(p1) if p1 is not None else 2.2
    return LpTree.isa(sizes, root, sub)


def build_prior(
    layout: str | None,
    p0: float | None,
    p1: str | None,
    scale: float | None,
    tree: str | None,
    model: Path | None = None,
) -> LpNested:
    """The L^p-nested distribution named by the prior flags or stored in ``--model``."""
    import torch

    from isa_core.priors import LpNested

    if model is not None:
        check_path_text(model, "--model")
        given = [
            flag
            for flag, v in (
                ("--layout", layout),
                ("--p0", p0),
                ("--p1", p1),
                ("--tree", tree),
                ("--scale", scale),
            )
            if v is not None
        ]
        if given:
            raise IsaError(f"--model already fixes the prior; drop {', '.join(given)}")
        from isa_core.training import load_model

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
    scale = 2.0 if scale is None else scale
    return LpNested(build_tree(layout, p0, p1, tree), scale=_positive(scale, "--scale"))
