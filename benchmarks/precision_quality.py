"""bf16 against fp32 on quality: mean ± standard error of MIG and log p(x|z) per precision.

Reads the rows of `isa sweep collect` for pipelines/precision.toml (three seeds per precision)
and prints a table. The check of issue #12: the two precisions may differ by at most two
standard errors of the difference, sqrt(SE_fp32² + SE_bf16²).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
from pathlib import Path


def mean_and_se(values: list[float]) -> tuple[float, float]:
    """The mean and its standard error (sample standard deviation over sqrt(n))."""
    if len(values) < 2:
        return values[0], math.nan
    return statistics.fmean(values), statistics.stdev(values) / math.sqrt(len(values))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path, help="results.jsonl of `isa sweep collect`")
    args = parser.parse_args()
    rows = [json.loads(line) for line in args.results.read_text().splitlines() if line.strip()]
    groups: dict[str, list[dict]] = {}
    for row in rows:
        groups.setdefault(row["precision"], []).append(row)
    print("| precision | runs | MIG | log p(x\\|z) | images/s |")
    print("|---|---:|---:|---:|---:|")
    summary = {}
    for precision in sorted(groups):
        runs = groups[precision]
        stats = {key: mean_and_se([float(r[key]) for r in runs]) for key in ("mig", "logpx")}
        speed = statistics.fmean(float(r["images_per_s"]) for r in runs)
        summary[precision] = stats
        mig, logpx = stats["mig"], stats["logpx"]
        print(
            f"| {precision} | {len(runs)} | {mig[0]:.3f} ± {mig[1]:.3f} "
            f"| {logpx[0]:.2f} ± {logpx[1]:.2f} | {speed:,.0f} |"
        )
    if {"fp32", "bf16"} <= summary.keys():
        print()
        for key in ("mig", "logpx"):
            (a, se_a), (b, se_b) = summary["fp32"][key], summary["bf16"][key]
            se = math.hypot(se_a, se_b)
            verdict = "within" if abs(b - a) <= 2 * se else "OUTSIDE"
            print(
                f"{key}: bf16 - fp32 = {b - a:+.3f}, {abs(b - a) / se:.2f} standard errors "
                f"of the difference ({verdict} the 2-SE bound)"
            )


if __name__ == "__main__":
    main()
