"""Exact samplers for L^p-nested distributions (paper appendix A.1).

* :func:`sample_nested` is Algorithm 1 for any tree. Steps 1, 4 and 5 of the algorithm draw
  a Beta radius, normalize it away, and draw the target radius; since the Dirichlet
  construction already lands on the unit L^p-nested sphere (f(u) = 1), we draw the target
  radius v0 (v0^p0 / s ~ Gamma(n/p0), Eq. 11) directly: the same distribution.
* :func:`sample_isa` is the per-subspace route for ISA trees (Eq. 9): the subspaces are
  independent, r_i^p0 / s ~ Gamma(n_i/p0), and each direction is g / ||g||_{p_i} with g_j
  i.i.d. p_i-generalized normal.

The Dirichlet weights of leaf children come from generalized-normal draws: if g ~
gennorm(p) then |g|^p ~ Gamma(1/p), so (G_k / sum G)^(1/p) = |g_k| / (sum |g|^p)^(1/p), and
the sign of g is the random sign of step 6. A gennorm draw is V * W^(1/p) with
V ~ U(-1, 1) and W ~ Gamma(1 + 1/p) (Gamma(a) = Gamma(a + 1) U^(1/a)), which avoids the
slow Gamma(a < 1) generators.

On the CPU the draws come from NumPy generators filling fixed-size row chunks on a thread pool
(NumPy releases the GIL), seeded from the caller's ``torch.Generator``; the chunking does not
depend on the number of threads, so a seed gives the same numbers on any CPU. On other devices
they come from torch's samplers on that device.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from isa_core.priors.tree import LpTree

__all__ = ["sample_isa", "sample_nested", "standard_gamma", "standard_gennorm"]

_CHUNK_ROWS = 1 << 15

_Draw = Callable[[np.random.Generator, float, tuple[int, int]], np.ndarray]


def _runs(values: Sequence[float]) -> list[tuple[float, int, int]]:
    """Runs (value, start, stop) of adjacent equal values."""
    runs: list[tuple[float, int, int]] = []
    for j, v in enumerate(values):
        if runs and runs[-1][0] == v:
            runs[-1] = (v, runs[-1][1], j + 1)
        else:
            runs.append((v, j, j + 1))
    return runs


def _fill_on_cpu(
    params: Sequence[float], rows: int, generator: torch.Generator | None, draw: _Draw
) -> torch.Tensor:
    """(rows, len(params)) float64: column j drawn by ``draw(rng, params[j], shape)``."""
    out = np.empty((rows, len(params)), dtype=np.float64)
    runs = _runs([float(v) for v in params])
    starts = range(0, rows, _CHUNK_ROWS)
    seed = int(torch.randint(0, 2**63 - 1, (1,), generator=generator))
    seeds = np.random.SeedSequence(seed).spawn(len(starts))

    def fill(chunk: int) -> None:
        rng = np.random.Generator(np.random.PCG64(seeds[chunk]))
        lo = starts[chunk]
        hi = min(lo + _CHUNK_ROWS, rows)
        for value, a, b in runs:
            out[lo:hi, a:b] = draw(rng, value, (hi - lo, b - a))

    workers = max(1, min(len(starts), torch.get_num_threads(), os.cpu_count() or 1))
    if workers == 1:
        for chunk in range(len(starts)):
            fill(chunk)
    else:
        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(fill, range(len(starts))))
    return torch.from_numpy(out)


def _gamma_draw(rng: np.random.Generator, a: float, shape: tuple[int, int]) -> np.ndarray:
    return rng.standard_gamma(a, size=shape)


def _gennorm_draw(rng: np.random.Generator, p: float, shape: tuple[int, int]) -> np.ndarray:
    w = rng.standard_gamma(1.0 + 1.0 / p, size=shape)
    np.power(w, 1.0 / p, out=w)
    v = rng.random(size=shape)
    v *= 2.0
    v -= 1.0
    w *= v
    return w


def standard_gamma(
    concentrations: Sequence[float],
    rows: int,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """Independent Gamma(c_j, 1) draws, shape (rows, len(concentrations)), float64."""
    device = torch.device(device)
    if device.type == "cpu":
        return _fill_on_cpu(concentrations, rows, generator, _gamma_draw)
    alpha = torch.tensor(list(concentrations), dtype=torch.float64, device=device)
    return torch._standard_gamma(alpha.expand(rows, -1).contiguous(), generator=generator)


def standard_gennorm(
    exponents: Sequence[float],
    rows: int,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """Independent p_j-generalized normal draws, density exp(-|g|^p) / (2 Gamma(1 + 1/p)).

    Shape (rows, len(exponents)), float64; g = V * W^(1/p), V ~ U(-1, 1), W ~ Gamma(1 + 1/p).
    """
    device = torch.device(device)
    if device.type == "cpu":
        return _fill_on_cpu(exponents, rows, generator, _gennorm_draw)
    p = torch.tensor(list(exponents), dtype=torch.float64, device=device)
    w = torch._standard_gamma((1.0 + 1.0 / p).expand(rows, -1).contiguous(), generator=generator)
    v = torch.rand(w.shape, generator=generator, dtype=torch.float64, device=device)
    return w.pow_(1.0 / p).mul_(v.mul_(2.0).sub_(1.0))


def _gen_device(generator: torch.Generator | None, device: torch.device | str) -> torch.device:
    return generator.device if generator is not None else torch.device(device)


def sample_nested(
    tree: LpTree,
    scale: float,
    rows: int,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """Algorithm 1: exact draws (rows, n) in float64 for any L^p-nested tree.

    The radius v0 follows Eq. 11; every inner node I splits its value v_I among its children
    as v_I * D^(1/p_I) with D ~ Dir(n_{I,1}/p_I, ..., n_{I,l_I}/p_I); leaves get random signs.
    """
    at = _gen_device(generator, device)
    sizes = {len(sub) for sub in tree.subspaces}
    if tree.is_isa and len(sizes) == 1:
        return _sample_nested_uniform_isa(tree, scale, rows, generator, at, sizes.pop()).to(device)

    # Leaf draws: g_j ~ gennorm(p of j's parent); |g_j|^p is that child's Gamma(1/p) weight.
    concentrations = [tree.n / tree.p]  # v0^p0 / s, then the inner children of each node
    for node in tree.inner_nodes:
        concentrations.extend(c.n / node.p for c in node.children if isinstance(c, LpTree))
    parents = tree.leaf_exponents
    g = standard_gennorm(parents, rows, generator, at)
    gammas = standard_gamma(concentrations, rows, generator, at)
    z = torch.empty_like(g)

    def split(node: LpTree, value: torch.Tensor, first_leaf: int, column: int) -> int:
        """Hand node's value to its children; Gamma columns are consumed in pre-order."""
        width = sum(isinstance(c, LpTree) for c in node.children)
        inner = gammas[:, column : column + width]
        column += width
        total = inner.sum(-1)
        leaf = first_leaf
        for child in node.children:
            if isinstance(child, LpTree):
                leaf += child.n
            else:
                total = total + g[:, leaf : leaf + child].abs().pow(node.p).sum(-1)
                leaf += child
        unit = value / total.pow(1.0 / node.p)  # v_I / (sum_k G_k)^(1/p_I)
        k, leaf = 0, first_leaf
        for child in node.children:
            if isinstance(child, LpTree):
                column = split(child, unit * inner[:, k].pow(1.0 / node.p), leaf, column)
                k, leaf = k + 1, leaf + child.n
            else:
                z[:, leaf : leaf + child] = g[:, leaf : leaf + child] * unit[:, None]
                leaf += child
        return column

    radius0 = (scale * gammas[:, 0]).pow(1.0 / tree.p)
    split(tree, radius0, 0, 1)
    # A sign flip of an inner node's whole subtree is absorbed: only leaves carry signs.
    return z.to(device)


def _sample_nested_uniform_isa(
    tree: LpTree, scale: float, rows: int, generator, device: torch.device, k: int
) -> torch.Tensor:
    """Algorithm 1 for an ISA tree of l0 subspaces of k leaves each, vectorized."""
    l0 = len(tree.children)
    sub_p = [child.p for child in tree.children]
    top = standard_gamma([tree.n / tree.p] + [k / tree.p] * l0, rows, generator, device)
    g = standard_gennorm(tree.leaf_exponents, rows, generator, device)
    p = torch.tensor(sub_p, dtype=torch.float64, device=device)[:, None]  # (l0, 1)
    radius0 = (scale * top[:, :1]).pow_(1.0 / tree.p)  # (rows, 1)
    split = top[:, 1:]
    radii = (split / split.sum(-1, keepdim=True)).pow_(1.0 / tree.p).mul_(radius0)  # (rows, l0)
    z = g.view(rows, l0, k)
    norms = z.abs().pow_(p).sum(-1).pow_(1.0 / p[:, 0])  # ||g_i||_{p_i}: (rows, l0)
    z.mul_(radii.div_(norms)[:, :, None])
    return z.view(rows, tree.n)


def sample_isa(
    tree: LpTree,
    scale: float,
    rows: int,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """The ISA route: independent subspaces, each a radius times a p_i-normalized direction.

    r_i^p0 / s ~ Gamma(n_i/p0) and z_{V_i} = r_i * g / ||g||_{p_i} with g_j ~ gennorm(p_i).
    """
    if not tree.is_isa:
        raise ValueError(f"the ISA route needs a depth-two ISA tree, got {tree}")
    at = _gen_device(generator, device)
    subspaces = [child for child in tree.children if isinstance(child, LpTree)]
    radii = standard_gamma([sub.n / tree.p for sub in subspaces], rows, generator, at)
    radii = (scale * radii).pow_(1.0 / tree.p)
    g = standard_gennorm(tree.leaf_exponents, rows, generator, at)
    leaf = 0
    for i, sub in enumerate(subspaces):
        block = g[:, leaf : leaf + sub.n]
        norm = block.abs().pow(sub.p).sum(-1, keepdim=True).pow(1.0 / sub.p)
        block.mul_(radii[:, i : i + 1] / norm)
        leaf += sub.n
    return g.to(device)
