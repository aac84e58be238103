"""MIG estimators on codes with known answers, and against each other."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import integrate, stats

from isa_core.codes import Codes
from isa_core.errors import IsaError
from isa_core.metrics import mig, mig_report, mutual_information

ESTIMATORS = ["quadrature", "sampling", "histogram"]
SIZES = (3, 6, 8)


def grid_factors(sizes=SIZES, copies: int = 30) -> np.ndarray:
    """The full factor grid, each cell ``copies`` times (the plug-in histogram MI has a bias
    of about (bins - 1)(classes - 1) / 2N nats, so N must not be tiny)."""
    mesh = np.meshgrid(*[np.arange(k) for k in sizes], indexing="ij")
    return np.tile(np.stack(mesh, -1).reshape(-1, len(sizes)), (copies, 1))


def run(mean, std, factors, estimator, names=("a", "b", "c")):
    return mig(
        mean, std, factors, list(names)[: factors.shape[1]], estimator, samples=3000, bins=20
    )


@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_one_latent_per_factor_gives_mig_one(estimator: str) -> None:
    factors = grid_factors()
    rng = np.random.default_rng(0)
    informative = factors / np.array(SIZES)  # class k of factor i at k / size
    noise = rng.standard_normal((len(factors), 2))
    mean = np.concatenate([informative, noise], 1)
    std = np.concatenate([np.full(informative.shape, 1e-3), np.ones(noise.shape)], 1)
    result = run(mean, std, factors, estimator)
    assert result.score == pytest.approx(1.0, abs=0.03)
    assert result.top[:, 0].tolist() == [0, 1, 2]


@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_codes_independent_of_the_factors_give_mig_zero(estimator: str) -> None:
    factors = grid_factors()
    rng = np.random.default_rng(1)
    mean = rng.standard_normal((len(factors), 4))
    std = np.full(mean.shape, 0.3)
    result = run(mean, std, factors, estimator)
    assert result.score == pytest.approx(0.0, abs=0.05)


@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_a_factor_copied_into_two_latents_has_gap_zero(estimator: str) -> None:
    factors = grid_factors()
    code = factors[:, 1] / 6.0
    rng = np.random.default_rng(2)
    mean = np.stack([code, code, rng.standard_normal(len(code))], 1)
    std = np.stack([np.full(len(code), 1e-3)] * 2 + [np.ones(len(code))], 1)
    result = run(mean, std, factors, estimator)
    assert result.gaps[1] == pytest.approx(0.0, abs=0.03)
    assert result.mi[1, 0] == pytest.approx(np.log(6), rel=0.03)


def two_component_mi(distance: float, sd: float) -> float:
    """I(z; v) for v uniform on {0, 1}, z | v ~ N(v * distance, sd^2), by numerical integration."""

    def integrand(z):
        q = 0.5 * stats.norm.pdf(z, 0, sd) + 0.5 * stats.norm.pdf(z, distance, sd)
        return -q * np.log(q) if q > 0 else 0.0

    h, _ = integrate.quad(integrand, -12 * sd, distance + 12 * sd, points=[0, distance], limit=400)
    return h - 0.5 * np.log(2 * np.pi * np.e * sd**2)


@pytest.mark.parametrize(("distance", "sd"), [(1.3, 0.7), (0.5, 1.0), (2.0, 0.25)])
def test_partially_informative_latent_matches_integration(distance: float, sd: float) -> None:
    v = np.repeat([0, 1], 2000)
    mean = (v * distance)[:, None]
    std = np.full(mean.shape, sd)
    exact = two_component_mi(distance, sd)
    quad, _ = mutual_information(mean, std, v[:, None], "quadrature")
    assert quad[0, 0] == pytest.approx(exact, abs=1e-6)
    sampled, _ = mutual_information(mean, std, v[:, None], "sampling", samples=20000)
    assert sampled[0, 0] == pytest.approx(exact, abs=0.02)


def test_quadrature_with_widths_spread_over_two_decades_matches_brute_force() -> None:
    rng = np.random.default_rng(3)
    n = 300
    mean = rng.standard_normal((n, 1))
    std = np.exp(rng.uniform(np.log(0.01), np.log(1.0), (n, 1)))
    v = rng.integers(0, 3, n)
    z = np.linspace(mean.min() - 9, mean.max() + 9, 200001)
    dz = z[1] - z[0]

    def entropy(rows):
        q = stats.norm.pdf(z[:, None], mean[rows, 0], std[rows, 0]).mean(1)
        q = np.clip(q, 1e-300, None)
        return -(q * np.log(q)).sum() * dz

    exact = entropy(np.arange(n)) - sum(
        (v == c).mean() * entropy(np.flatnonzero(v == c)) for c in range(3)
    )
    quad, _ = mutual_information(mean, std, v[:, None], "quadrature")
    assert quad[0, 0] == pytest.approx(exact, abs=1e-4)


def test_bad_codes() -> None:
    factors = grid_factors()[:10]
    with pytest.raises(IsaError, match="NaN"):
        mig(np.full((10, 2), np.nan), np.ones((10, 2)), factors, ["a", "b", "c"])
    with pytest.raises(IsaError, match="single value"):
        mig(np.zeros((10, 2)), np.ones((10, 2)), np.zeros((10, 1), int), ["a"])
    with pytest.raises(IsaError, match="estimator 'kde' is unknown"):
        mig(np.zeros((10, 2)), np.ones((10, 2)), factors, ["a", "b", "c"], "kde")


def test_subspace_scoring_credits_a_factor_spread_over_a_subspace() -> None:
    from isa_core.metrics import subspace_mig

    v = np.tile(np.arange(8), 200)
    angle = 2 * np.pi * v / 8
    rng = np.random.default_rng(4)
    mean = np.stack([np.cos(angle), np.sin(angle), rng.standard_normal(len(v))], 1)
    std = np.stack([np.full(len(v), 0.01)] * 2 + [np.ones(len(v))], 1)
    factors = v[:, None]
    single = mig(mean, std, factors, ["angle"])
    assert single.mi[0, 0] < 0.8 * np.log(8)  # cos alone cannot tell ±angle apart
    grouped = subspace_mig(mean, std, factors, ["angle"], [[0, 1], [2]], samples=2000)
    assert grouped.mi[0, 0] == pytest.approx(np.log(8), rel=0.02)
    assert grouped.score == pytest.approx(1.0, abs=0.03)


def circle_codes(tree: str | None) -> Codes:
    """Codes whose latents 0 and 1 carry an 8-valued angle on a circle, latent 2 noise."""
    v = np.tile(np.arange(8), 200)
    angle = 2 * np.pi * v / 8
    rng = np.random.default_rng(5)
    mean = np.stack([np.cos(angle), np.sin(angle), rng.standard_normal(len(v))], 1)
    logvar = np.log(np.stack([np.full(len(v), 1e-4)] * 2 + [np.ones(len(v))], 1))
    factors = np.stack([v, v % 2], 1)
    metadata = {"factor_names": ["angle", "parity"], "config": {"tree": tree}}
    return Codes(mean, logvar, factors, np.full(len(v), -3.0), metadata)


def test_mig_report_is_the_mig_result_with_the_record_fields() -> None:
    codes = circle_codes(None)
    report = mig_report(codes, "quadrature", ["parity"])
    result = mig(codes.mean, codes.std, codes.factors[:, [1]], ["parity"], "quadrature")
    assert list(report) == [
        "mig",
        "estimator",
        "factors",
        "n",
        "logpx",
        "scored_factors",
        "normalization",
        "resolution",
    ]
    assert {k: report[k] for k in ("mig", "estimator", "factors")} == result.as_dict()
    assert report["n"] == 1600 and report["logpx"] == -3.0
    assert report["scored_factors"] == ["parity"] and report["resolution"] == result.resolution
    histogram = mig_report(codes, "histogram", bins=8)
    assert histogram["estimator"] == "histogram" and "resolution" not in histogram
    assert histogram["scored_factors"] == ["angle", "parity"]


def test_mig_report_refusals_name_their_field() -> None:
    codes = circle_codes(None)
    with pytest.raises(IsaError, match="unknown colour; this data has angle, parity") as error:
        mig_report(codes, factors=["angle", "colour"])
    assert error.value.field == "factors"
    empty = Codes(codes.mean[:0], codes.logvar[:0], codes.factors[:0], None, codes.metadata)
    with pytest.raises(IsaError, match="0 images"):
        mig_report(empty)
    with pytest.raises(IsaError, match="needs the model's prior"):
        mig_report(codes, group="subspaces")
    with pytest.raises(IsaError, match="needs an ISA prior"):
        mig_report(circle_codes("2.0(3)"), group="subspaces")


def test_mig_report_with_subspaces_scores_the_isa_subspaces() -> None:
    report = mig_report(circle_codes("2.0(2.0(2),2.0(1))"), group="subspaces", samples=2000)
    assert report["subspaces"]["groups"] == [[0, 1], [2]]
    angle = report["subspaces"]["factors"][0]
    assert angle["name"] == "angle" and angle["mi"][0] == pytest.approx(np.log(8), rel=0.02)
