"""PriorSpec: a prior as a user names it (family, ISA layout, exponents, or a whole tree),
with the defaults of the paper, resolved once into an ``LpTree``."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from isa_core.choices import PriorKind, parse_choice
from isa_core.errors import IsaError, field_error
from isa_core.priors.tree import LpTree, parse_layout

__all__ = [
    "DEFAULT_LATENT_DIM",
    "DEFAULT_LAYOUT",
    "DEFAULT_P0",
    "DEFAULT_P1",
    "DEFAULT_SCALE",
    "LEARNED_P1_START",
    "PriorSpec",
]

DEFAULT_LAYOUT = "5x4"  # the paper's ISA-VAE: 5 subspaces of 4 latents (section 5)
DEFAULT_P0 = 2.1
DEFAULT_P1 = 2.2
LEARNED_P1_START = 2.0  # learned subspace exponents start at 2.0 (section 4, appendix A.2)
DEFAULT_LATENT_DIM = 20  # K of the normal and gennorm priors, as in the paper's β-VAE
DEFAULT_SCALE = 2.0  # s of Eq. 11; s = 2 with all p = 2 is N(0, I)


def _positive(value: float, field: str) -> float:
    if not (math.isfinite(value) and value > 0):
        raise field_error(field, f"must be a positive finite number, got {value}")
    return float(value)


def _subspace_exponents(value: float | Sequence[float] | str) -> float | tuple[float, ...]:
    """p1 as one exponent or one per subspace; text is ``2.2`` or ``2.2,1.9,...``."""
    if isinstance(value, str):
        try:
            parts = [float(part) for part in value.split(",")]
        except ValueError:
            raise field_error(
                "p1", f"{value!r} is not a number; give 2.2, or one per subspace: 2.2,1.9"
            ) from None
    elif isinstance(value, int | float) and not isinstance(value, bool):
        parts = [float(value)]
    else:
        parts = list(value)
    checked = tuple(_positive(p, "p1") for p in parts)
    return checked[0] if len(checked) == 1 else checked


@dataclass(frozen=True)
class PriorSpec:
    """The prior flags as given (None: not given); ``tree()`` applies the paper's defaults.

    ``tree`` replaces layout/p0/p1; ``latent_dim`` sizes the normal and gennorm priors and must
    agree with an ISA tree's n when both are given.
    """

    prior: PriorKind = PriorKind.isa
    layout: str | None = None
    p0: float | None = None
    p1: float | tuple[float, ...] | str | None = None
    tree: str | None = None
    latent_dim: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "prior", parse_choice(PriorKind, "prior", self.prior))
        if self.p1 is not None:
            object.__setattr__(self, "p1", _subspace_exponents(self.p1))
        if self.p0 is not None:
            object.__setattr__(self, "p0", _positive(self.p0, "p0"))
        if self.latent_dim is not None and self.latent_dim < 1:
            raise field_error("latent_dim", f"must be >= 1, got {self.latent_dim}")

    def resolve(self, learn_exponents: bool = False) -> LpTree:
        """The tree this spec names; learned subspace exponents start at 2.0 unless given."""
        if self.tree is not None:
            given = [name for name in ("layout", "p0", "p1") if getattr(self, name) is not None]
            if given:
                raise field_error("tree", f"already fixes the prior; drop {', '.join(given)}")
            result = LpTree.parse(self.tree)
        elif self.prior == PriorKind.isa:
            default_p1 = LEARNED_P1_START if learn_exponents else DEFAULT_P1
            result = LpTree.isa(
                parse_layout(self.layout if self.layout is not None else DEFAULT_LAYOUT),
                self.p0 if self.p0 is not None else DEFAULT_P0,
                self.p1 if self.p1 is not None else default_p1,
            )
        else:
            if self.layout is not None or self.p1 is not None:
                raise IsaError(
                    f"layout and p1 describe ISA subspaces; the {self.prior} prior has none"
                )
            n = self.latent_dim if self.latent_dim is not None else DEFAULT_LATENT_DIM
            if self.prior == PriorKind.normal:
                if self.p0 is not None:
                    raise field_error("p0", "is not an exponent of the normal prior; use gennorm")
                result = LpTree.normal(n)
            else:
                result = LpTree.gennorm(n, self.p0 if self.p0 is not None else DEFAULT_P0)
        if self.latent_dim is not None and self.latent_dim != result.n:
            raise field_error(
                "latent_dim",
                f"{self.latent_dim} disagrees with the prior, which has n = {result.n} "
                f"({result}); drop latent_dim or change the layout",
            )
        return result
