"""The L^p-nested / ISA prior family (paper section 3, appendix A.1).

``LpTree`` is the structure of f (Eqs. 6, 9), ``LpNested`` the distribution (Eqs. 7, 8, 11),
``LpNestedPrior`` the ``nn.Module`` that holds learnable exponents (section 4), ``PriorSpec``
a prior as the user names it (family, layout, exponents), resolved with the paper's defaults.

The torch-backed names load on first use (PEP 562), so that code needing only trees (the CLI
building its commands, `isa --help`) does not import torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from isa_core.lazy import lazy_attributes
from isa_core.priors.spec import PriorSpec
from isa_core.priors.tree import LpTree, parse_layout

if TYPE_CHECKING:
    from isa_core.priors.lpnested import LpNested, LpNestedPrior
    from isa_core.priors.sampling import sample_isa, sample_nested, standard_gamma

__all__ = [
    "LpNested",
    "LpNestedPrior",
    "LpTree",
    "PriorSpec",
    "parse_layout",
    "sample_isa",
    "sample_nested",
    "standard_gamma",
]

# name -> submodule that defines it, imported when the name is first looked up
_LAZY = {
    "LpNested": "lpnested",
    "LpNestedPrior": "lpnested",
    "sample_isa": "sampling",
    "sample_nested": "sampling",
    "standard_gamma": "sampling",
}


__getattr__, __dir__ = lazy_attributes(__name__, _LAZY, globals())
