"""FactorVAE and BetaVAE scores and the factor grid they read, on codes with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from isa_core.errors import IsaError
from isa_core.scores.classifier import betavae_score, factorvae_score
from isa_core.scores.grid import FactorGrid

SIZES = (3, 4, 5, 6)
SMALL = {"num_train": 500, "num_eval": 500}  # the tests' sample counts (defaults: 10,000/5,000)


def all_factors(sizes=SIZES) -> np.ndarray:
    """Every factor tuple once, (prod(sizes), F), in a shuffled order."""
    flat = np.random.default_rng(7).permutation(int(np.prod(sizes)))
    return np.stack(np.unravel_index(flat, sizes), axis=1)


def axis_aligned(factors: np.ndarray) -> np.ndarray:
    """A perfectly disentangled code: latent i is factor i, standardised."""
    return (factors - factors.mean(0)) / factors.std(0)


def grid_of(codes: np.ndarray, factors: np.ndarray) -> FactorGrid:
    return FactorGrid.from_codes(codes, factors, SIZES)


def test_grid_looks_up_each_factor_tuple_in_any_row_order() -> None:
    factors = all_factors()
    codes = np.random.default_rng(0).normal(size=(len(factors), 3))
    grid = grid_of(codes, factors)
    assert (grid.num_factors, grid.num_latents) == (4, 3)
    np.testing.assert_array_equal(grid.codes_of(factors[::-1]), codes[::-1])
    drawn = grid.sample_factors(1000, np.random.default_rng(1))
    assert drawn.shape == (1000, 4) and drawn.dtype == np.int64
    assert [set(drawn[:, f]) for f in range(4)] == [set(range(s)) for s in SIZES]


def test_perfect_code_scores_one() -> None:
    grid = grid_of(axis_aligned(all_factors()), all_factors())
    factorvae = factorvae_score(grid, seed=0, **SMALL)
    assert factorvae == {
        "factorvae_train": 1.0,
        "factorvae_eval": 1.0,
        "factorvae_active_latents": 4,
    }
    betavae = betavae_score(grid, seed=0, **SMALL)
    assert betavae["betavae_train"] >= 0.99 and betavae["betavae_eval"] >= 0.99


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_noise_independent_of_factors_scores_near_chance(seed: int) -> None:
    factors = all_factors()
    noise = np.random.default_rng(seed).normal(size=(len(factors), 6))
    grid = grid_of(noise, factors)
    chance = 1 / len(SIZES)
    # a finite grid leaves a little signal in noise (each value of a factor picks 60-120 rows)
    assert factorvae_score(grid, seed, **SMALL)["factorvae_eval"] < chance + 0.15
    assert betavae_score(grid, seed, **SMALL)["betavae_eval"] < chance + 0.15


def test_rotation_scores_lower_for_factorvae() -> None:
    factors = all_factors()
    code = axis_aligned(factors)
    # 45 degrees in the planes (0, 1) and (2, 3): fixing factor 0 shrinks latents 0 and 1
    # alike, so each pair's votes split evenly and the score is about 1/2.
    c = np.sqrt(0.5)
    pairs = np.array([[c, -c, 0, 0], [c, c, 0, 0], [0, 0, c, -c], [0, 0, c, c]])
    paired = factorvae_score(grid_of(code @ pairs.T, factors), 0, **SMALL)["factorvae_eval"]
    assert 0.4 < paired < 0.65
    # A rotation keeping every factor's argmin latent distinct still scores 1, so random
    # rotations score lower on average, never higher.
    rotated = []
    for seed in range(5):
        rotation, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(4, 4)))
        rotated.append(factorvae_score(grid_of(code @ rotation, factors), 0, **SMALL))
    evals = [r["factorvae_eval"] for r in rotated]
    assert max(evals) <= 1.0 and np.mean(evals) < 0.95


def test_scores_are_deterministic_with_a_seed() -> None:
    factors = all_factors()
    grid = grid_of(np.random.default_rng(3).normal(size=(len(factors), 5)), factors)
    for score in (factorvae_score, betavae_score):
        assert score(grid, 4, **SMALL) == score(grid, 4, **SMALL)
        assert score(grid, 4, **SMALL) != score(grid, 5, **SMALL)


def test_collapsed_latents_are_pruned() -> None:
    factors = all_factors()
    code = np.concatenate([axis_aligned(factors), np.zeros((len(factors), 2))], axis=1)
    code[:, 5] = 0.01 * np.random.default_rng(0).normal(size=len(factors))  # std below 0.05
    result = factorvae_score(grid_of(code, factors), 0, **SMALL)
    assert result == {"factorvae_train": 1.0, "factorvae_eval": 1.0, "factorvae_active_latents": 4}
    assert (
        factorvae_score(grid_of(code, factors), 0, prune_threshold=0.0, **SMALL)[
            "factorvae_active_latents"
        ]
        == 5
    )
    constant = grid_of(np.zeros((len(factors), 3)), factors)
    assert factorvae_score(constant, 0, **SMALL) == {
        "factorvae_train": 0.0,
        "factorvae_eval": 0.0,
        "factorvae_active_latents": 0,
    }


def bad_grids() -> list:
    factors = all_factors()
    codes = np.zeros((len(factors), 2))
    repeated = factors.copy()
    repeated[1] = repeated[0]
    out_of_range = factors.copy()
    out_of_range[5, 2] = 5
    nan_codes = codes.copy()
    nan_codes[3, 1] = np.nan
    return [
        ((codes[1:], factors[1:], SIZES), "cover 359 of the 360 factor combinations"),
        ((np.zeros((361, 2)), np.concatenate([factors, factors[:1]]), SIZES), "repeat"),
        ((codes, repeated, SIZES), "repeat the combination"),
        ((codes, out_of_range, SIZES), "column 2 holds 5"),
        ((codes, factors + 0.5, SIZES), "whole-number"),
        ((codes, factors[:, :3], SIZES), "one column per factor"),
        ((codes[:10], factors, SIZES), "has 360 rows but codes has 10"),
        ((nan_codes, factors, SIZES), "NaN"),
        ((codes[:, 0], factors, SIZES), "(N, K)"),
        ((codes, factors, (3, 4, 0, 6)), "positive integers"),
        ((codes, factors.astype(str), SIZES), "integer class indices"),
    ]


@pytest.mark.parametrize(("arguments", "expected"), bad_grids())
def test_bad_grid_is_refused_in_one_line(arguments, expected: str) -> None:
    with pytest.raises(IsaError) as refused:
        FactorGrid.from_codes(*arguments)
    message = str(refused.value)
    assert expected in message and "\n" not in message


def test_partial_grid_refusal_says_why() -> None:
    factors = all_factors()
    with pytest.raises(IsaError, match="fix one factor and draw the others") as refused:
        FactorGrid.from_codes(np.zeros((300, 2)), factors[:300], SIZES)
    assert refused.value.field == "codes"


def test_bad_score_arguments_are_refused() -> None:
    factors = all_factors()
    grid = grid_of(axis_aligned(factors), factors)
    cases = [
        (factorvae_score, {"batch_size": 1}, "batch_size"),
        (factorvae_score, {"num_train": 0}, "num_train"),
        (factorvae_score, {"num_variance_estimate": 1}, "num_variance_estimate"),
        (factorvae_score, {"prune_threshold": -1.0}, "prune_threshold"),
        (factorvae_score, {"seed": -1}, "seed"),
        (betavae_score, {"num_eval": 0}, "num_eval"),
        (betavae_score, {"num_train": 1}, "num_train"),
        (betavae_score, {"seed": 1.5}, "seed"),
    ]
    for score, change, field in cases:
        with pytest.raises(IsaError) as refused:
            score(grid, **{"seed": 0, **SMALL, **change})
        assert refused.value.field == field
    with pytest.raises(IsaError, match="must be a FactorGrid"):
        factorvae_score(axis_aligned(factors), 0)
    one_factor = FactorGrid.from_codes(np.arange(3.0)[:, None], np.arange(3)[:, None], (3,))
    with pytest.raises(IsaError, match="one factor"):
        betavae_score(one_factor, 0)
    with pytest.raises(IsaError, match="column 0 holds 3"):
        grid.codes_of(np.array([[3, 0, 0, 0]]))
    with pytest.raises(IsaError, match="non-negative"):
        grid.sample_factors(-1, np.random.default_rng(0))
