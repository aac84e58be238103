"""MIG estimators on codes with known answers, and against each other."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import integrate, special, stats

from isa_core.codes import Codes
from isa_core.errors import IsaError
from isa_core.metrics import mig, mig_report, mutual_information, subspace_mig

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


# Chen et al. 2018's sampling scheme (rtqichen/beta-tcvae, estimate_entropies and
# mutual_info_metric_shapes), written plainly from its description: one draw per image; each
# group's entropy from its own draws (a random subset when over the budget), in batches of 10.


def chen_entropies(draws, mean, std, budget: int, rng) -> np.ndarray:
    """-mean over the group's draws of log q(z_j), q the group's mixture: (K,)."""
    n = len(mean)
    chosen = draws if n <= budget else draws[rng.permutation(n)[:budget]]
    total = np.zeros(mean.shape[1])
    for first in range(0, len(chosen), 10):
        batch = chosen[first : first + 10]  # (b, K)
        z = (batch[None, :, :] - mean[:, None, :]) / std[:, None, :]  # (n, b, K)
        log_density = -0.5 * z**2 - np.log(std[:, None, :]) - 0.5 * np.log(2 * np.pi)
        total -= (special.logsumexp(log_density, axis=0) - np.log(n)).sum(0)
    return total / len(chosen)


def chen_mi(mean, std, factors, seed: int, budget: int = 10_000) -> np.ndarray:
    """I(z_j; v_k) (F, K): marginal minus the p(v)-weighted conditional entropies."""
    rng = np.random.default_rng(seed)
    draws = mean + std * rng.standard_normal(mean.shape)
    mi = np.tile(chen_entropies(draws, mean, std, budget, rng), (factors.shape[1], 1))
    for i in range(factors.shape[1]):
        for value in np.unique(factors[:, i]):
            rows = factors[:, i] == value
            h = chen_entropies(draws[rows], mean[rows], std[rows], budget, rng)
            mi[i] -= rows.mean() * h
    return mi


@pytest.fixture(scope="module")
def trained_codes(tmp_path_factory) -> Codes:
    """dsprites-mini codes of a model trained 30 steps (batch 128): weakly informative latents."""
    from isa_core.checkpoint import load_model
    from isa_core.codes import encode
    from isa_core.config import TrainConfig
    from isa_core.data import open_dataset
    from isa_core.training import train

    config = TrainConfig(data="dsprites-mini", steps=30, batch_size=128, compile=False)
    result = train(config, tmp_path_factory.mktemp("run"), torch.device("cpu"))
    model, _ = load_model(result.model_path)
    return encode(model, open_dataset("dsprites-mini"), torch.device("cpu"))


def small_problem(codes: Codes) -> tuple[np.ndarray, ...]:
    """1,440 of the codes (x and y classes 0-3) on their 3 most and 2 least informative latents."""
    mean, std, factors = codes.mean.astype(np.float64), codes.std, codes.factors
    keep = (factors[:, 3] < 4) & (factors[:, 4] < 4)
    mean, std, factors = mean[keep], std[keep], factors[keep]
    total = mutual_information(mean, std, factors)[0].sum(0)
    latents = np.argsort(-total)[[0, 1, 2, -2, -1]]
    return mean[:, latents], std[:, latents], factors


def test_sampling_is_chens_scheme_draw_for_draw(trained_codes: Codes) -> None:
    """With the same seed the estimator is the reference to rounding: groups within the
    budget reuse their draws, larger ones a random subset of them."""
    mean, std, factors = small_problem(trained_codes)
    for budget in (10_000, 100):
        ours, _ = mutual_information(mean, std, factors, "sampling", samples=budget, seed=3)
        assert ours == pytest.approx(chen_mi(mean, std, factors, 3, budget), abs=1e-10)
    again, _ = mutual_information(mean, std, factors, "sampling", samples=100, seed=3)
    assert np.array_equal(again, ours)


def check_spread(mean, std, factors, seeds: int) -> None:
    """Over ``seeds`` seeds, against quadrature: the rms error on the large entries is no larger
    than the reference's (on other seeds), both agree in expectation, and the clamped
    near-zero entries are not biased upward (the old independent draws added +0.003 nats)."""
    exact, _ = mutual_information(mean, std, factors)
    ours = np.array(
        [mutual_information(mean, std, factors, "sampling", seed=s)[0] for s in range(seeds)]
    )
    theirs = np.array([chen_mi(mean, std, factors, 1000 + s) for s in range(seeds)])
    large, small = exact > 0.05, exact < 0.002
    assert large.sum() >= 4 and small.sum() >= 4
    rms = [float(np.sqrt(((x - exact)[:, large] ** 2).mean())) for x in (ours, theirs)]
    assert rms[0] <= 1.25 * rms[1]
    assert abs((ours - exact)[:, large].mean()) < 0.003
    assert abs((ours - theirs)[:, large].mean()) < 0.003
    assert (np.maximum(ours, 0) - exact)[:, small].mean() < 0.001


def test_sampling_spread_is_chens_on_a_trained_models_codes(trained_codes: Codes) -> None:
    check_spread(*small_problem(trained_codes), seeds=8)


@pytest.mark.slow
def test_sampling_spread_is_chens_on_all_the_codes(trained_codes: Codes) -> None:
    codes = trained_codes
    check_spread(codes.mean.astype(np.float64), codes.std, codes.factors, seeds=8)


def test_sampling_two_components_by_hand() -> None:
    """v uniform on {0, 1}, z | v ~ N(v d, sd^2): with every group within the budget the
    estimate is the mean over the draws of log q(z | v) / q(z), which scipy integrates."""
    d, sd, n = 1.3, 0.7, 4000
    v = np.repeat([0, 1], n // 2)
    mean, std = (v * d)[:, None].astype(float), np.full((n, 1), sd)
    z = mean[:, 0] + sd * np.random.default_rng(5).standard_normal((n, 1))[:, 0]
    log_own = stats.norm.logpdf(z, v * d, sd)
    log_q = np.logaddexp(stats.norm.logpdf(z, 0, sd), stats.norm.logpdf(z, d, sd)) - np.log(2)
    ratio = log_own - log_q
    estimate, _ = mutual_information(mean, std, v[:, None], "sampling", seed=5)
    assert estimate[0, 0] == pytest.approx(ratio.mean(), abs=1e-12)
    assert ratio.mean() == pytest.approx(two_component_mi(d, sd), abs=4 * ratio.std() / n**0.5)


def test_subspace_sampling_of_single_latents_is_the_per_latent_estimate() -> None:
    """One-latent subspaces see the same draws and mixtures as the per-latent estimator."""
    factors = grid_factors(copies=4)
    rng = np.random.default_rng(6)
    mean = factors[:, :2] / 6 + rng.normal(0, 0.2, (len(factors), 2))
    std = np.full(mean.shape, 0.1)
    per_latent, _ = mutual_information(mean, std, factors, "sampling", seed=2)
    grouped = subspace_mig(mean, std, factors, list("abc"), [[0], [1]], samples=10_000, seed=2)
    assert grouped.mi == pytest.approx(np.maximum(per_latent, 0), abs=1e-10)


def test_sampling_refuses_a_sample_budget_over_the_memory_limit() -> None:
    factors = grid_factors()[:10]
    with pytest.raises(IsaError, match="samples") as error:
        mutual_information(np.zeros((10, 2)), np.ones((10, 2)), factors, "sampling", 1 << 40)
    assert error.value.field == "samples"
    with pytest.raises(IsaError, match="must be >= 1"):
        mutual_information(np.zeros((10, 2)), np.ones((10, 2)), factors, "sampling", 0)
