"""The L^p-nested / ISA prior family (paper section 3, appendix A.1).

``LpTree`` is the structure of f (Eqs. 6, 9), ``LpNested`` the distribution (Eqs. 7, 8, 11),
``LpNestedPrior`` the ``nn.Module`` that holds learnable exponents (section 4).
"""

from isa_core.priors.lpnested import LpNested, LpNestedPrior
from isa_core.priors.sampling import sample_isa, sample_nested, standard_gamma
from isa_core.priors.tree import LpTree, parse_layout

__all__ = [
    "LpNested",
    "LpNestedPrior",
    "LpTree",
    "parse_layout",
    "sample_isa",
    "sample_nested",
    "standard_gamma",
]
