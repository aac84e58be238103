r"""The L^p-nested symmetric distribution with the radial density of Eq. 11.

For an L^p-nested function f over n leaves with root exponent p0 and scale s, Eqs. 7, 8 and
11 give

.. math::

    \log p(z) = \log p_0 - \log\Gamma(n/p_0) - (n/p_0)\log s - f(z)^{p_0}/s - \log S_f(1),

    S_f(1) = 2^n \prod_I \frac{\prod_k \Gamma(n_{I,k}/p_I)}{p_I^{l_I-1}\,\Gamma(n_I/p_I)}.

With this radial density the root's subspaces are independent, ``p(z) = prod_i p(z_{V_i})``.
The ISA prior (Eq. 9), the p-generalized normal (Eq. 5; a single node) and N(0, I) (``2(n)``
with s = 2) are all trees of this one class.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from functools import cached_property, lru_cache
from typing import ClassVar

import torch
from torch import Tensor, nn
from torch.distributions import Distribution, constraints, transform_to

from isa_core.errors import IsaError
from isa_core.priors.sampling import sample_isa, sample_nested
from isa_core.priors.tree import EXPONENT_RANGE, LpTree

__all__ = ["LpNested", "LpNestedPrior"]

_CHUNK_ROWS = 1 << 14
# Drawing holds the leaf draws, the Gamma draws and the result at once, and a caller writing
# NPY copies the result about twice more: about 4x the float64 output. Bound that.
MAX_SAMPLE_BYTES = 4 << 30
_WORKING_COPIES = 4


@dataclass(frozen=True)
class _NodePlan:
    """What evaluating one inner node needs: leaf runs and inner children (by pre-order id)."""

    index: int
    leaf_runs: tuple[tuple[int, int], ...]
    inner_children: tuple[_NodePlan, ...]
    size_counts: tuple[tuple[int, int], ...]  # (n_{I,k}, how many children have it)
    num_children: int
    num_leaves: int


@dataclass(frozen=True)
class _TreePlan:
    root: _NodePlan
    leaf_parent: tuple[int, ...]  # pre-order id of each leaf's parent
    uniform_isa: tuple[int, int] | None  # (l0, k) when the tree is ISA with equal subspaces


@lru_cache(maxsize=256)
def _plan(tree: LpTree) -> _TreePlan:
    counter = iter(range(tree.num_inner))
    leaf_parent: list[int] = []

    def visit(node: LpTree) -> _NodePlan:
        index = next(counter)
        runs: list[tuple[int, int]] = []
        inner: list[_NodePlan] = []
        for child in node.children:
            if isinstance(child, LpTree):
                inner.append(visit(child))
            else:
                runs.append((len(leaf_parent), len(leaf_parent) + child))
                leaf_parent.extend([index] * child)
        sizes = tuple(sorted(Counter(node.child_sizes).items()))
        return _NodePlan(index, tuple(runs), tuple(inner), sizes, len(node.child_sizes), node.n)

    root = visit(tree)
    sizes = {len(sub) for sub in tree.subspaces}
    uniform = None
    if tree.is_isa and len(sizes) == 1:
        uniform = (len(tree.subspaces), sizes.pop())
    return _TreePlan(root, tuple(leaf_parent), uniform)


def _power_sum(node: _NodePlan, w: Tensor, exponents: Tensor) -> Tensor:
    """sum_k v_k^{p_I} over the children of node, where w = |z_j|^{p(parent of j)}."""
    terms = [w[..., a:b].sum(-1) for a, b in node.leaf_runs]
    p = exponents[node.index]
    tiny = torch.finfo(w.dtype).tiny
    for child in node.inner_children:
        # v_c^{p_I} = (sum over c's children)^{p_I / p_c}; the clamp keeps the gradient
        # finite (zero) when a whole subspace is exactly zero.
        inner = _power_sum(child, w, exponents).clamp_min(tiny)
        terms.append(inner.pow(p / exponents[child.index]))
    total = terms[0]
    for term in terms[1:]:
        total = total + term
    return total


class LpNested(Distribution):
    """L^p-nested symmetric distribution (Eqs. 7, 8, 11) over z in R^n.

    Arguments:
        tree: the structure of f (its own exponents are used unless ``exponents`` is given).
        exponents: tensor (num_inner,) of exponents in pre-order, p0 first; may carry
            gradients (learnable exponents, paper section 4).
        scale: s > 0 of the radial density (Eq. 11); s = 2 with all p = 2 is N(0, I).

    Example:
        >>> d = LpNested(LpTree.parse("2(3)"), scale=2.0)
        >>> torch.allclose(d.log_prob(torch.zeros(3)), torch.tensor(-1.5 * math.log(2 * math.pi)))
        True
    """

    arg_constraints: ClassVar[dict[str, constraints.Constraint]] = {
        "exponents": constraints.independent(constraints.positive, 1),
        "scale": constraints.positive,
    }
    support = constraints.real_vector
    has_rsample = False

    def __init__(
        self,
        tree: LpTree,
        exponents: Tensor | None = None,
        scale: float | Tensor = 2.0,
        validate_args: bool | None = None,
    ) -> None:
        if exponents is None:
            exponents = torch.tensor(tree.exponents, dtype=torch.float64)
        if exponents.shape != (tree.num_inner,):
            raise IsaError(
                f"expected {tree.num_inner} exponents for tree {tree}, got shape "
                f"{tuple(exponents.shape)}"
            )
        if isinstance(scale, Tensor):
            scale_value = scale.to(exponents)
        else:
            if not (math.isfinite(scale) and scale > 0):
                raise IsaError(f"scale s must be a positive finite number, got {scale}")
            scale_value = torch.tensor(float(scale), dtype=exponents.dtype, device=exponents.device)
        self.tree = tree
        self.exponents = exponents
        self.scale = scale_value
        self._plan = _plan(tree)
        super().__init__(torch.Size(), torch.Size([tree.n]), validate_args=validate_args)

    @property
    def p0(self) -> Tensor:
        return self.exponents[0]

    def power_f(self, z: Tensor) -> Tensor:
        """f(z)^{p0}, computed directly as nested power sums (never f, then a power).

        Large CPU batches without autograd are processed in row chunks that stay in cache.
        """
        exponents = self.exponents.to(z.dtype)
        rows = z.shape[:-1].numel()
        needs_grad = torch.is_grad_enabled() and (z.requires_grad or exponents.requires_grad)
        if z.device.type != "cpu" or rows <= _CHUNK_ROWS or needs_grad:
            return self._power_f(z, exponents)
        flat = z.reshape(rows, z.shape[-1])
        out = torch.empty(rows, dtype=z.dtype)
        for start in range(0, rows, _CHUNK_ROWS):
            out[start : start + _CHUNK_ROWS] = self._power_f(
                flat[start : start + _CHUNK_ROWS], exponents
            )
        return out.reshape(z.shape[:-1])

    def _power_f(self, z: Tensor, exponents: Tensor) -> Tensor:
        plan = self._plan
        tiny = torch.finfo(z.dtype).tiny
        if plan.uniform_isa is not None:
            l0, k = plan.uniform_isa
            blocks = z.reshape(*z.shape[:-1], l0, k)
            shared = self._shared_subspace_exponent
            if shared is not None:  # one scalar exponent: a faster kernel than a broadcast one
                inner = blocks.abs().pow_(shared).sum(-1).clamp_min_(tiny)
                return inner.pow_(self.tree.p0 / shared).sum(-1)
            # (..., l0, k): |z_j|^{p_i} summed within each subspace, then ^(p0/p_i), summed.
            sub_p = exponents[1:]
            inner = blocks.abs().pow(sub_p[:, None]).sum(-1).clamp_min(tiny)
            return inner.pow(exponents[0] / sub_p).sum(-1)
        leaf_p = exponents[list(plan.leaf_parent)]
        return _power_sum(plan.root, z.abs().pow(leaf_p), exponents)

    @cached_property
    def _shared_subspace_exponent(self) -> float | None:
        """The common p_i of a fixed-exponent CPU ISA prior, else None (use tensors)."""
        exps = self.exponents
        if exps.requires_grad or exps.device.type != "cpu":
            return None
        values = exps[1:].tolist()
        return values[0] if values and all(v == values[0] for v in values) else None

    def log_normalizer(self, dtype: torch.dtype | None = None) -> Tensor:
        """log p0 - lgamma(n/p0) - (n/p0) log s - log S_f(1): log p(z) + f(z)^{p0}/s."""
        exps = self.exponents if dtype is None else self.exponents.to(dtype)
        scale = self.scale.to(exps.dtype)
        n = self.tree.n
        p0 = exps[0]
        log_surface = exps.new_tensor(n * math.log(2.0))
        stack = [self._plan.root]
        while stack:
            node = stack.pop()
            stack.extend(node.inner_children)
            p = exps[node.index]
            for size, count in node.size_counts:
                log_surface = log_surface + count * torch.lgamma(size / p)
            log_surface = log_surface - (node.num_children - 1) * torch.log(p)
            log_surface = log_surface - torch.lgamma(node.num_leaves / p)
        return torch.log(p0) - torch.lgamma(n / p0) - (n / p0) * torch.log(scale) - log_surface

    def log_prob(self, value: Tensor) -> Tensor:
        """Log-density of Eq. 7, batched over leading dimensions."""
        if value.shape[:-1].numel() == 0:  # torch's support check fails on empty batches
            if value.shape[-1:] != (self.tree.n,):
                raise IsaError(f"points must have {self.tree.n} columns, got {tuple(value.shape)}")
            return value.new_empty(value.shape[:-1])
        if self._validate_args:
            self._validate_sample(value)
        normalizer = self.log_normalizer(value.dtype)
        return normalizer - self.power_f(value) / self.scale.to(value.dtype)

    @torch.no_grad()
    def sample(
        self,
        sample_shape: torch.Size | tuple[int, ...] = torch.Size(),
        generator: torch.Generator | None = None,
        method: str = "nested",
    ) -> Tensor:
        """Exact draws of shape ``sample_shape + (n,)`` in the exponents' dtype.

        ``method="nested"`` is Algorithm 1 (any tree); ``"isa"`` the per-subspace route.
        Raises IsaError when the draws would need more than ``MAX_SAMPLE_BYTES`` of memory, or
        when they are not finite (exponents or a scale so extreme that float64 overflows).
        """
        rows = math.prod(int(d) for d in sample_shape)  # Python ints: no overflow here
        need = rows * self.tree.n * 8 * _WORKING_COPIES
        if need > MAX_SAMPLE_BYTES:
            most = MAX_SAMPLE_BYTES // (self.tree.n * 8 * _WORKING_COPIES)
            raise IsaError(
                f"{rows:,} samples of n = {self.tree.n} dimensions need about "
                f"{need / 2**30:,.1f} GiB of memory, over the {MAX_SAMPLE_BYTES >> 30} GiB "
                f"limit; draw at most {most:,} per call (e.g. several calls with different seeds)"
            )
        shape = torch.Size(sample_shape)
        tree = self.tree.with_exponents(self.exponents.detach().cpu().tolist())
        scale = float(self.scale)
        device = self.exponents.device
        if method == "nested":
            z = sample_nested(tree, scale, rows, generator, device)
        elif method == "isa":
            if not tree.is_isa:
                raise IsaError(f"method 'isa' needs an ISA tree (depth two), got {tree}")
            z = sample_isa(tree, scale, rows, generator, device)
        else:
            raise IsaError(f"unknown sampling method {method!r}; use 'nested' or 'isa'")
        if not bool(torch.isfinite(z).all()):
            bad = int((~torch.isfinite(z)).any(-1).sum())
            raise IsaError(
                f"{bad:,} of {rows:,} samples of {tree} with scale s = {scale:g} are inf or NaN: "
                "float64 overflows or underflows for these exponents and this scale; keep the "
                f"exponents within {EXPONENT_RANGE[0]:g}..{EXPONENT_RANGE[1]:g} and s moderate "
                "(e.g. 2)"
            )
        return z.to(self.exponents.dtype).reshape(*shape, self.tree.n)


class LpNestedPrior(nn.Module):
    """A learnable L^p-nested prior: holds the exponents, returns an :class:`LpNested`.

    p0 (the root exponent) and s are fixed buffers, as in the paper (section 4); the other
    exponents are buffers too, or, with ``learn_exponents=True``, parameters optimised in an
    unconstrained space and mapped through ``transform_to(positive)`` so they stay > 0.
    """

    def __init__(self, tree: LpTree, scale: float = 2.0, learn_exponents: bool = False) -> None:
        super().__init__()
        if not (math.isfinite(scale) and scale > 0):
            raise IsaError(f"scale s must be a positive finite number, got {scale}")
        self.tree = tree
        self.learn_exponents = learn_exponents
        self.register_buffer("scale", torch.tensor(float(scale), dtype=torch.float64))
        self.register_buffer("p0", torch.tensor([tree.p0], dtype=torch.float64))
        inner = torch.tensor(tree.exponents[1:], dtype=torch.float64)
        unconstrained = transform_to(constraints.positive).inv(inner)
        if learn_exponents:
            self.exponents_unconstrained = nn.Parameter(unconstrained)
        else:
            self.register_buffer("exponents_unconstrained", unconstrained)

    @property
    def exponents(self) -> Tensor:
        """All exponents in pre-order, p0 first: (num_inner,)."""
        inner = transform_to(constraints.positive)(self.exponents_unconstrained)
        return torch.cat([self.p0.to(inner.dtype), inner])

    def current_tree(self) -> LpTree:
        """The tree with the exponents' current values (for logs and metadata)."""
        return self.tree.with_exponents(self.exponents.detach().cpu().tolist())

    def forward(self) -> LpNested:
        return LpNested(self.tree, self.exponents, self.scale, validate_args=False)

    def log_prob(self, z: Tensor) -> Tensor:
        return self().log_prob(z)

    def sample(
        self, n: int, generator: torch.Generator | None = None, method: str = "nested"
    ) -> Tensor:
        return self().sample((n,), generator=generator, method=method)

    def extra_repr(self) -> str:
        return f"tree={self.current_tree()}, scale={float(self.scale)}"
