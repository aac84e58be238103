"""Two methods' MIG and log p(x|z) from a sweep's results, with two-sided tests (Markdown out).

``python tools/compare_methods.py results.jsonl [--beta 1] [--methods beta-vae isa-vae]``

Reads the rows of ``isa sweep collect``. MIG is reported over all five dSprites factors (the
sweep's own score) and over Chen et al.'s four (scale, orientation, x, y: their protocol),
the latter as the mean of those factors' normalised gaps, which is exactly the MIG that
``isa mig --factors scale,orientation,x,y`` computes from the same codes. For each method:
mean ± standard error, median, max; then Welch's t-test and the Mann-Whitney U test of the
MIG difference (two-sided, scipy.stats), Cohen's d, and the seeds per method a two-sided test
at level 0.05 would need for 80% power at the observed effect (normal approximation).
"""

from __future__ import annotations

import argparse
import math
import statistics
from pathlib import Path

import scipy.stats as st

from isa_core.errors import IsaError
from isa_core.sweeps.results import RunResult, read_results

CHEN_FACTORS = ("scale", "orientation", "x", "y")


def mig_over(run: RunResult, factors: tuple[str, ...] | None) -> float:
    """MIG over ``factors`` (None: the sweep's own score over every factor)."""
    if factors is None:
        return float(run.mig)
    return statistics.fmean(float(run.gaps[name]) for name in factors)


def describe(values: list[float]) -> str:
    """``mean ± SE`` (median, max) of a sample."""
    mean = statistics.fmean(values)
    se = statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else math.nan
    return f"{mean:.3f} ± {se:.3f} | {statistics.median(values):.3f} | {max(values):.3f}"


def seeds_for_power(a: list[float], b: list[float], alpha: float = 0.05, power: float = 0.8):
    """Seeds per method for a two-sided test to detect the observed mean difference."""
    difference = statistics.fmean(b) - statistics.fmean(a)
    pooled = (statistics.variance(a) + statistics.variance(b)) / 2
    if difference == 0:
        return math.inf
    z = st.norm.ppf(1 - alpha / 2) + st.norm.ppf(power)
    return math.ceil(2 * z**2 * pooled / difference**2)


def compare(a: list[float], b: list[float]) -> str:
    """One Markdown table row of tests: difference, Welch t, Mann-Whitney U, d, seeds needed."""
    welch = st.ttest_ind(b, a, equal_var=False)
    mann = st.mannwhitneyu(b, a, alternative="two-sided")
    difference = statistics.fmean(b) - statistics.fmean(a)
    pooled = math.sqrt((statistics.variance(a) + statistics.variance(b)) / 2)
    d = difference / pooled if pooled > 0 else math.nan
    return (
        f"{difference:+.3f} | t = {welch.statistic:.2f}, p = {welch.pvalue:.3f} "
        f"| U = {mann.statistic:.0f}, p = {mann.pvalue:.3f} | {d:+.2f} | {seeds_for_power(a, b)}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path, help="results.jsonl of `isa sweep collect`")
    parser.add_argument("--beta", type=float, default=None, help="only rows with this β")
    parser.add_argument("--methods", nargs=2, default=("beta-vae", "isa-vae"))
    args = parser.parse_args()
    try:
        runs = read_results(args.results, ("mig", "logpx", "gaps"))
    except IsaError as error:
        raise SystemExit(str(error)) from None
    if args.beta is not None:
        runs = [r for r in runs if r.beta is not None and float(r.beta) == args.beta]
    groups = {m: [r for r in runs if r.method == m] for m in args.methods}
    for method, group in groups.items():
        if len(group) < 2:
            raise SystemExit(f"{args.results}: {len(group)} finished runs of {method}; need 2")
    first, second = args.methods
    print("| method | runs | MIG, 5 factors: mean ± SE | median | max "
          "| MIG, Chen's 4: mean ± SE | median | max | log p(x\\|z): mean ± SE |")  # fmt: skip
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for method, group in groups.items():
        five = [mig_over(r, None) for r in group]
        four = [mig_over(r, CHEN_FACTORS) for r in group]
        logpx = [float(r.logpx) for r in group]
        mean, se = statistics.fmean(logpx), statistics.stdev(logpx) / math.sqrt(len(logpx))
        print(
            f"| {method} | {len(group)} | {describe(five)} | {describe(four)} "
            f"| {mean:.2f} ± {se:.2f} |"
        )
    print()
    print(f"Two-sided tests of {second} minus {first}:")
    print()
    print("| MIG over | difference | Welch's t | Mann-Whitney U | Cohen's d | seeds per method "
          "for 80% power |")  # fmt: skip
    print("|---|---:|---|---|---:|---:|")
    for label, factors in (("5 factors", None), ("Chen's 4", CHEN_FACTORS)):
        a = [mig_over(r, factors) for r in groups[first]]
        b = [mig_over(r, factors) for r in groups[second]]
        print(f"| {label} | {compare(a, b)} |")


if __name__ == "__main__":
    main()
