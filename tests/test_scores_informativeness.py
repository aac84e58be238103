"""DCI, SAP, modularity and explicitness on synthetic codes with known answers."""

from __future__ import annotations

import functools

import numpy as np
import pytest
from scipy.stats import entropy

from isa_core.errors import IsaError
from isa_core.scores.dci import dci, disentanglement_completeness
from isa_core.scores.modularity import modularity, modularity_explicitness
from isa_core.scores.sap import sap

SIZES = (2, 3, 4)
NUM_TRAIN, NUM_TEST = 2000, 1000


def draw_factors(num: int, sizes: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """Factor values drawn uniformly and independently, (num, F) integers."""
    return np.stack([rng.integers(0, size, num) for size in sizes], axis=1)


def axis_aligned(factors: np.ndarray, sizes: tuple[int, ...], extra: int = 0) -> np.ndarray:
    """Latent j = factor j mapped monotonically to [-1, 1], plus ``extra`` constant latents."""
    scale = np.array(sizes, dtype=np.float64) - 1
    codes = 2 * factors / scale - 1
    return np.concatenate([codes, np.zeros((len(factors), extra))], axis=1)


def rotation(size: int, seed: int = 1) -> np.ndarray:
    """A random orthogonal matrix (QR of a Gaussian one)."""
    q, _ = np.linalg.qr(np.random.default_rng(seed).standard_normal((size, size)))
    return q


@functools.cache
def split(kind: str, extra: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Train/test codes and factors: ``perfect``, ``rotated`` or ``noise`` (independent)."""
    rng = np.random.default_rng(0)
    train_factors = draw_factors(NUM_TRAIN, SIZES, rng)
    test_factors = draw_factors(NUM_TEST, SIZES, rng)
    train_codes = axis_aligned(train_factors, SIZES, extra)
    test_codes = axis_aligned(test_factors, SIZES, extra)
    if kind == "rotated":
        q = rotation(train_codes.shape[1])
        train_codes, test_codes = train_codes @ q, test_codes @ q
    elif kind == "noise":
        train_codes = rng.standard_normal(train_codes.shape)
        test_codes = rng.standard_normal(test_codes.shape)
    return train_codes, train_factors, test_codes, test_factors


@functools.cache
def dci_of(kind: str) -> dict:
    return dci(*split(kind, extra=2), seed=0)


@functools.cache
def modularity_of(kind: str) -> dict:
    return modularity_explicitness(*split(kind))


# DCI


def test_disentanglement_completeness_by_hand():
    importance = np.array([[2.0, 0.0], [1.0, 1.0], [0.0, 0.0]])
    # latent 0 only explains factor 0 (D_0 = 1), latent 1 both equally (D_1 = 0), latent 2 nothing
    expected_d = 0.5 * 1.0 + 0.5 * 0.0
    completeness_0 = 1 - entropy([2, 1, 0], base=3)
    expected_c = 0.75 * completeness_0 + 0.25 * 1.0
    d, c = disentanglement_completeness(importance)
    assert d == pytest.approx(expected_d, abs=1e-12)
    assert c == pytest.approx(expected_c, abs=1e-12)


def test_disentanglement_completeness_against_scipy_on_a_random_matrix():
    importance = np.random.default_rng(3).random((5, 3))
    rho = importance.sum(axis=1) / importance.sum()
    w = importance.sum(axis=0) / importance.sum()
    expected_d = np.sum(rho * (1 - entropy(importance.T, base=3)))
    expected_c = np.sum(w * (1 - entropy(importance, base=5)))
    d, c = disentanglement_completeness(importance)
    assert d == pytest.approx(expected_d, abs=1e-12)
    assert c == pytest.approx(expected_c, abs=1e-12)


def test_disentanglement_completeness_extremes():
    assert disentanglement_completeness(np.eye(3)) == pytest.approx((1.0, 1.0))
    assert disentanglement_completeness(np.ones((4, 4))) == pytest.approx((0.0, 0.0), abs=1e-12)
    assert disentanglement_completeness(np.zeros((2, 2))) == (0.0, 0.0)
    with pytest.raises(IsaError, match="importance"):
        disentanglement_completeness(np.ones(3))


def test_dci_perfect_code_scores_the_maximum_with_diagonal_importances():
    result = dci_of("perfect")
    assert result["dci_disentanglement"] > 0.99
    assert result["dci_completeness"] > 0.99
    assert result["dci_informativeness_train"] == pytest.approx(1.0)
    assert result["dci_informativeness_test"] == pytest.approx(1.0)
    importance = np.array(result["dci_importance"])
    assert importance.shape == (5, 3)
    np.testing.assert_allclose(importance[:3], np.eye(3), atol=1e-2)
    np.testing.assert_allclose(importance[3:], 0.0, atol=1e-12)  # the constant latents


def test_dci_rotation_scores_lower_and_noise_near_the_minimum():
    perfect, rotated, noise = dci_of("perfect"), dci_of("rotated"), dci_of("noise")
    for key in ("dci_disentanglement", "dci_completeness"):
        assert rotated[key] < perfect[key] - 0.2
        assert noise[key] < 0.1
    chance = np.mean([1 / size for size in SIZES])
    assert noise["dci_informativeness_test"] < chance + 0.05


def test_dci_is_deterministic_with_a_seed_and_threads():
    assert dci(*split("rotated", extra=2), seed=0, n_jobs=2) == dci_of("rotated")
    with pytest.raises(IsaError, match="n_estimators"):
        dci(*split("rotated"), seed=0, n_estimators=0)


# SAP


def test_sap_perfect_binary_code_scores_the_maximum():
    # binary factors: the informative latent is exactly right, any other is at chance (1/2),
    # so the largest possible gap is 1/2 per factor
    sizes = (2, 2, 2)
    rng = np.random.default_rng(4)
    train_factors, test_factors = draw_factors(2000, sizes, rng), draw_factors(1000, sizes, rng)
    result = sap(
        axis_aligned(train_factors, sizes),
        train_factors,
        axis_aligned(test_factors, sizes),
        test_factors,
    )
    matrix = np.array(result["sap_matrix"])
    np.testing.assert_allclose(np.diag(matrix), 1.0)
    np.testing.assert_allclose(matrix[~np.eye(3, dtype=bool)], 0.5, atol=0.06)
    assert result["sap"] == pytest.approx(0.5, abs=0.06)


def test_sap_rotation_scores_lower_and_noise_near_zero():
    perfect, rotated, noise = (sap(*split(kind)) for kind in ("perfect", "rotated", "noise"))
    assert np.array(perfect["sap_matrix"]).shape == (3, 3)
    assert rotated["sap"] < perfect["sap"] - 0.1
    assert noise["sap"] < 0.05


def test_sap_is_deterministic_and_needs_two_latents():
    assert sap(*split("rotated")) == sap(*split("rotated"))
    train_codes, train_factors, test_codes, test_factors = split("perfect")
    with pytest.raises(IsaError, match="train_codes"):
        sap(train_codes[:, :1], train_factors, test_codes[:, :1], test_factors)


# modularity and explicitness


def test_modularity_of_hand_made_information_matrices():
    assert modularity(np.eye(3)) == pytest.approx(1.0)
    assert modularity(np.ones((3, 3))) == pytest.approx(0.0)
    # row 0: theta = 2, others 1 and 0 -> 1 - 1 / (4 * 2); row 1 carries nothing -> 0
    assert modularity(np.array([[2.0, 1.0, 0.0], [0.0, 0.0, 0.0]])) == pytest.approx(7 / 16)


def test_modularity_explicitness_perfect_code_scores_the_maximum():
    result = modularity_of("perfect")
    assert result["modularity"] > 0.99
    assert result["explicitness_train"] > 0.99
    assert result["explicitness_test"] > 0.99


def test_modularity_rotation_scores_lower_and_noise_is_not_explicit():
    perfect, rotated, noise = (modularity_of(kind) for kind in ("perfect", "rotated", "noise"))
    assert rotated["modularity"] < perfect["modularity"] - 0.05
    # explicitness is linear decodability: a rotation keeps it, independent codes are at chance
    assert rotated["explicitness_test"] > 0.99
    assert noise["explicitness_test"] == pytest.approx(0.5, abs=0.05)
    # modularity ignores how much is known: on noise it sits between the two
    assert noise["modularity"] < perfect["modularity"] - 0.2


def test_modularity_explicitness_is_deterministic():
    assert modularity_explicitness(*split("rotated")) == modularity_of("rotated")


# bad input


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda a, b, c, d: (a[:-1], b, c, d), "train_factors"),
        (lambda a, b, c, d: (a, b + 0.5, c, d), "train_factors"),
        (lambda a, b, c, d: (a, b * 0, c, d), "train_factors"),
        (lambda a, b, c, d: (a, b, c[:, :2], d), "test_codes"),
        (lambda a, b, c, d: (a, b, c, d[:, :2]), "test_factors"),
        (lambda a, b, c, d: (a[:, 0], b, c, d), "train_codes"),
        (lambda a, b, c, d: (a * np.nan, b, c, d), "train_codes"),
    ],
)
def test_bad_points_are_refused_naming_the_field(change, field):
    points = change(*split("perfect"))
    for metric in (lambda *p: dci(*p, seed=0), sap, modularity_explicitness):
        with pytest.raises(IsaError, match=field) as caught:
            metric(*points)
        assert caught.value.field == field
