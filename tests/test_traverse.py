"""isa_core.traverse on synthetic codes whose answers are known in advance."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from isa_core.codes import Codes
from isa_core.data.base import ArrayData
from isa_core.errors import IsaError
from isa_core.traverse import (
    active_latents,
    aggregate_spread,
    decode_rows,
    latents_vs_true,
    rank_latents,
    traversal,
    traversal_codes,
    traversal_grid,
)

SIZES = (3, 6)  # factors a and b
DSPRITES = ("shape", "scale", "orientation", "x", "y")


def synthetic_codes(names: tuple[str, ...] = ("a", "b")) -> Codes:
    """Latent 0 copies factor b sharply, latent 1 is a blurred copy of factor a, latent 2 is
    noise, latent 3 is collapsed (constant mean): MI ranks them 0, 1, 2 and 3 is inactive."""
    mesh = np.meshgrid(*[np.arange(k) for k in SIZES], indexing="ij")
    factors = np.tile(np.stack(mesh, -1).reshape(-1, 2), (20, 1))
    rng = np.random.default_rng(0)
    n = len(factors)
    mean = np.stack(
        [
            factors[:, 1] * 1.0,
            factors[:, 0] + 0.6 * rng.standard_normal(n),
            rng.standard_normal(n),
            np.zeros(n),
        ],
        1,
    )
    logvar = np.log(np.tile([1e-4, 0.3, 1.0, 1.0], (n, 1)))
    values = [list(np.linspace(0, 1, k)) for k in SIZES]
    metadata = {"factor_names": list(names), "factor_sizes": list(SIZES), "factor_values": values}
    return Codes(mean, logvar, factors, None, metadata)


def test_latents_are_ranked_by_mutual_information_with_their_best_factor() -> None:
    ranking = rank_latents(synthetic_codes())
    assert ranking.order[:3] == [0, 1, 2]
    assert ranking.factor[:2].tolist() == [1, 0]
    assert ranking.mi[0] == pytest.approx(np.log(6), rel=1e-3)  # a sharp copy of b: H(b)
    assert ranking.mi[3] == pytest.approx(0.0, abs=1e-6)
    assert ranking.labels[0] == f"z0 · b ({np.log(6):.2f})"
    assert ranking.labels[1].startswith("z1 · a (")


def test_a_collapsed_latent_is_not_active() -> None:
    codes = synthetic_codes()
    ranking = rank_latents(codes)
    assert active_latents(codes, ranking) == [0, 1, 2]
    assert active_latents(codes, ranking, threshold=2.0) == [0]  # Var(b) = 35/12 > 2


def test_aggregate_spread_adds_the_variance_of_the_means_and_the_mean_variance() -> None:
    mean = np.tile([[1.0, 0.0], [-1.0, 0.0]], (5, 1))  # variances 1 and 0
    logvar = np.log(np.tile([[3.0, 0.25], [3.0, 0.25]], (5, 1)))
    assert aggregate_spread(mean, logvar) == pytest.approx([2.0, 0.5])
    codes = synthetic_codes()
    expected = np.sqrt(codes.mean.var(0) + np.exp(codes.logvar).mean(0))
    assert aggregate_spread(codes.mean, codes.logvar) == pytest.approx(expected)


def test_a_traversal_row_moves_one_latent_from_minus_to_plus_range_spreads() -> None:
    grid = traversal_grid(5, 2.5)
    assert grid.tolist() == [-2.5, -1.25, 0.0, 1.25, 2.5]
    base = np.array([0.5, -1.0, 2.0])
    spread = np.array([1.0, 2.0, 4.0])
    row = traversal_codes(base, spread, 1, grid)
    assert row.dtype == np.float32 and row.shape == (5, 3)
    assert row[:, 1].tolist() == [-6.0, -3.5, -1.0, 1.5, 4.0]  # -1 ± 2.5 * 2
    assert (row[:, [0, 2]] == np.float32([0.5, 2.0])).all()


@pytest.mark.parametrize(
    ("steps", "half_width", "field"),
    [(1, 3.0, "steps"), (5, 0.0, "range"), (5, float("nan"), "range"), (5, -1.0, "range")],
)
def test_a_bad_grid_is_refused_naming_its_field(steps: int, half_width: float, field: str) -> None:
    with pytest.raises(IsaError) as error:
        traversal_grid(steps, half_width)
    assert error.value.field == field and str(error.value).startswith(field)


class FirstLatentDecoder:
    """A stand-in decoder: every pixel of a 2x3 grey image has logit z_0."""

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return z[:, :1, None, None].expand(-1, 1, 2, 3)


def test_decoded_rows_are_bernoulli_means_in_image_layout() -> None:
    codes = np.array([[0.0, 9.0], [np.log(3.0), 9.0]], dtype=np.float32)
    images = decode_rows(FirstLatentDecoder(), codes)
    assert images.shape == (2, 2, 3)
    assert images[0] == pytest.approx(np.full((2, 3), 0.5))
    assert images[1] == pytest.approx(np.full((2, 3), 0.75))


def test_traversal_gives_the_figure_arrays() -> None:
    codes = synthetic_codes()
    pixels = torch.arange(18 * 6, dtype=torch.uint8).reshape(18, 2, 3, 1)
    data = ArrayData("grid", pixels, ("a", "b"), [np.arange(k) for k in SIZES])
    ranking = rank_latents(codes)
    figure = traversal(FirstLatentDecoder(), codes, data, ranking, 4, 3, 2.0, max_rows=2)
    spread = aggregate_spread(codes.mean, codes.logvar)
    assert [row.shape for row in figure.rows] == [(3, 2, 3), (3, 2, 3)]
    assert figure.values.shape == (2, 3)
    offsets = np.array([-2.0, 0.0, 2.0])
    for r, j in enumerate(ranking.order[:2]):
        assert figure.values[r] == pytest.approx(codes.mean[4, j] + offsets * spread[j], rel=1e-6)
    assert figure.labels == ranking.labels[:2]
    assert figure.original == pytest.approx(pixels[4, ..., 0].numpy() / 255.0)
    # Row 0 moves z_0, which the stand-in decoder draws; row 1 keeps z_0 at the code's value.
    assert figure.rows[0][:, 0, 0] == pytest.approx(1 / (1 + np.exp(-figure.values[0])))
    assert figure.rows[1] == pytest.approx(np.full((3, 2, 3), 1 / (1 + np.exp(-codes.mean[4, 0]))))
    # The image must exist in both the data (18 images) and the codes (360).
    with pytest.raises(IsaError, match=r"index 18 is out of range \(0\.\.17\)") as error:
        traversal(FirstLatentDecoder(), codes, data, ranking, 18)
    assert error.value.field == "index"


def test_latent_vs_true_needs_dsprites_factors_values_and_an_active_latent() -> None:
    with pytest.raises(IsaError, match="this data lacks orientation, scale, shape, x, y"):
        latents_vs_true(synthetic_codes(), rank_latents(synthetic_codes()))
    two = synthetic_codes()
    values = [[0.0, 0.5, 1.0], list(range(6))]
    # Five dSprites-named factors: a, b, a, b, a again.
    codes = Codes(
        two.mean,
        two.logvar,
        two.factors[:, [0, 1, 0, 1, 0]],
        None,
        {"factor_names": list(DSPRITES), "factor_values": [values[k] for k in (0, 1, 0, 1, 0)]},
    )
    panel = latents_vs_true(codes, rank_latents(codes))
    assert panel.latents == [0, 1, 2]  # by MI; latent 3 is collapsed
    assert panel.labels[0].startswith("z0 · scale (")
    assert [v.tolist() for v in panel.values] == [values[k] for k in (0, 1, 0, 1, 0)]
    codes.metadata.pop("factor_values")
    with pytest.raises(IsaError, match="latent-vs-true needs the factor values"):
        latents_vs_true(codes, rank_latents(codes))
    collapsed = Codes(np.zeros_like(codes.mean), codes.logvar, codes.factors, None, codes.metadata)
    with pytest.raises(IsaError, match=r"no active latent \(variance of the posterior mean > 0.01"):
        latents_vs_true(collapsed, rank_latents(collapsed))
