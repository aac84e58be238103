"""Prior throughput vs scipy.stats.gennorm on the same number of values, side by side.

Measures, for N = 10^6 draws of the paper's ISA 5x4 prior (p0 = 2.1, p_i = 2.2, s = 2), i.e.
2 x 10^7 values:
  * log_prob: ``LpNested.log_prob`` on an (N, 20) float64 array vs ``gennorm.logpdf`` on the
    same 2 x 10^7 values (beta = 2.2), targets ratio >= 2;
  * sample:   ``LpNested.sample((N,))`` (Algorithm 1) vs ``gennorm.rvs(size=2 x 10^7)``,
    target ratio >= 1.
Each timing is the best of ``--repeats`` runs, alternating ours and scipy's so both see the
same machine noise. Prints a markdown table (values/s and ratios) for the README.
"""

from __future__ import annotations

import argparse
import platform
import time

import numpy as np
import scipy
import scipy.stats as st
import torch

from isa_core.priors import LpNested, LpTree


def best_of(repeats: int, *functions):
    """Best wall time of each function over ``repeats`` interleaved rounds."""
    best = [float("inf")] * len(functions)
    for _ in range(repeats):
        for i, function in enumerate(functions):
            start = time.perf_counter()
            function()
            best[i] = min(best[i], time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=10**6, help="draws N (each 20 values)")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    tree = LpTree.isa((4,) * 5, 2.1, 2.2)
    prior = LpNested(tree, scale=2.0)
    values = args.n * tree.n
    rng = np.random.default_rng(0)
    z_np = rng.standard_normal((args.n, tree.n))
    z = torch.from_numpy(z_np)
    generator = torch.Generator().manual_seed(0)
    scipy_scale = 2.0 ** (1 / 2.2)

    ours_lp, scipy_lp = best_of(
        args.repeats,
        lambda: prior.log_prob(z),
        lambda: st.gennorm.logpdf(z_np, 2.2, scale=scipy_scale),
    )
    ours_rv, scipy_rv = best_of(
        args.repeats,
        lambda: prior.sample((args.n,), generator=generator),
        lambda: st.gennorm.rvs(2.2, scale=scipy_scale, size=values, random_state=rng),
    )

    print(
        f"N = {args.n:,} draws x 20 dims = {values:,} values, best of {args.repeats}; "
        f"torch {torch.__version__} ({torch.get_num_threads()} threads), "
        f"scipy {scipy.__version__}, numpy {np.__version__}, {platform.machine()}"
    )
    print()
    print("| operation | isa (values/s) | scipy.stats.gennorm (values/s) | ratio | target |")
    print("|---|---:|---:|---:|---:|")
    for name, ours, ref, target in (
        ("log_prob vs logpdf", ours_lp, scipy_lp, 2.0),
        ("sample vs rvs", ours_rv, scipy_rv, 1.0),
    ):
        ratio = ref / ours
        print(
            f"| {name} | {values / ours:.3g} | {values / ref:.3g} | {ratio:.2f}x | "
            f">= {target:g}x {'(met)' if ratio >= target else '(MISSED)'} |"
        )


if __name__ == "__main__":
    main()
