"""isa_core.traverse and the figures drawn from it (PNG grids, GIF frames) on synthetic
codes and stand-in decoders whose answers are known in advance; prior quantiles against
scipy.stats."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageSequence
from scipy import stats

from isa_core.choices import TraversalSpan
from isa_core.codes import Codes
from isa_core.data.base import ArrayData
from isa_core.errors import IsaError
from isa_core.plots import image_grid, latent_traversal, save_gif, traversal_frames
from isa_core.priors import LpNestedPrior
from isa_core.priors.tree import LpTree
from isa_core.traverse import (
    active_latents,
    aggregate_spread,
    decode_rows,
    latents_vs_true,
    prior_quantiles,
    prior_samples,
    rank_latents,
    reconstructions,
    traversal,
    traversal_codes,
    traversal_grid,
    traversal_levels,
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
    assert ranking.labels[3] == "z3 · inactive"  # collapsed: never named by a factor


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
    figure = traversal(
        FirstLatentDecoder(),
        codes,
        data,
        ranking,
        4,
        3,
        span=TraversalSpan.posterior,
        half_width=2.0,
        max_rows=2,
    )
    spread = aggregate_spread(codes.mean, codes.logvar)
    assert [row.shape for row in figure.rows] == [(3, 2, 3), (3, 2, 3)]
    assert figure.values.shape == (2, 3)
    offsets = np.array([-2.0, 0.0, 2.0])
    for r, j in enumerate(ranking.order[:2]):
        assert figure.values[r] == pytest.approx(codes.mean[4, j] + offsets * spread[j], rel=1e-6)
    assert figure.labels == ranking.labels[:2]
    assert figure.original == pytest.approx(pixels[4, ..., 0].numpy() / 255.0)
    sigmoid_code = 1 / (1 + np.exp(-codes.mean[4, 0]))
    assert figure.reconstruction == pytest.approx(np.full((2, 3), sigmoid_code))
    assert "aggregate-posterior" in figure.caption and "mutual information" in figure.caption
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


class StandInModel(FirstLatentDecoder):
    """The stand-in decoder with a prior over 4 latents and an encoder whose mean is the
    image's mean brightness in every latent (so reconstructions are checkable by hand)."""

    def __init__(self, tree: LpTree | None = None) -> None:
        self.prior = LpNestedPrior(tree or LpTree.normal(4))

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean = x.mean((1, 2, 3))[:, None].expand(-1, 4)
        return mean, torch.zeros_like(mean)


def grid_data() -> tuple[ArrayData, torch.Tensor]:
    pixels = torch.arange(18 * 6, dtype=torch.uint8).reshape(18, 2, 3, 1)
    return ArrayData("grid", pixels, ("a", "b"), [np.arange(k) for k in SIZES]), pixels


def test_the_prior_span_uses_the_priors_quantiles_and_shows_active_latents_first() -> None:
    codes = synthetic_codes()
    data, _ = grid_data()
    ranking = rank_latents(codes)
    model = StandInModel()
    figure = traversal(model, codes, data, ranking, 4, 5, quantile=0.1)
    assert figure.labels == ranking.labels[:3]  # the active latents 0, 1, 2; not 3
    expected = prior_quantiles(model.prior, np.linspace(0.1, 0.9, 5))  # same seed, same draws
    for r, j in enumerate(ranking.order[:3]):
        assert figure.values[r] == pytest.approx(expected[:, j], rel=1e-6)
    assert "quantiles 0.1 to 0.9" in figure.caption
    every = traversal(model, codes, data, ranking, 4, 5, include_inactive=True, max_rows=4)
    assert every.labels[-1] == "z3 · inactive"
    assert len(traversal(model, codes, data, ranking, include_inactive=True, max_rows=2).rows) == 2


@pytest.mark.parametrize("quantile", [0.0, 0.5, -0.1, float("nan")])
def test_a_quantile_outside_the_open_interval_is_refused_naming_its_field(quantile) -> None:
    with pytest.raises(IsaError) as error:
        traversal_levels(8, quantile)
    assert error.value.field == "quantile" and str(error.value).startswith("quantile must be in")


def test_no_active_latent_is_refused_unless_the_inactive_ones_are_asked_for() -> None:
    codes = synthetic_codes()
    collapsed = Codes(np.zeros_like(codes.mean), codes.logvar, codes.factors, None, codes.metadata)
    ranking = rank_latents(collapsed)
    assert all(label.endswith("· inactive") for label in ranking.labels)
    data, _ = grid_data()
    with pytest.raises(IsaError, match="no active latent"):
        traversal(StandInModel(), collapsed, data, ranking)
    assert len(traversal(StandInModel(), collapsed, data, ranking, include_inactive=True).rows) == 4


def _quantile_error(distribution, levels: np.ndarray, samples: int) -> np.ndarray:
    """The standard error of a sample quantile: sqrt(q (1 - q) / n) / pdf(x_q)."""
    return np.sqrt(levels * (1 - levels) / samples) / distribution.pdf(distribution.ppf(levels))


@pytest.mark.parametrize(
    ("tree", "scale", "reference"),
    [
        (LpTree.normal(3), 2.0, stats.norm()),
        # Each z_j of the one-node tree p(n) is gennorm(beta=p, scale=s^(1/p)) (Eq. 5).
        (LpTree.gennorm(3, 1.5), 3.0, stats.gennorm(1.5, scale=3.0 ** (1 / 1.5))),
        (LpTree.gennorm(3, 0.8), 2.0, stats.gennorm(0.8, scale=2.0 ** (1 / 0.8))),
    ],
)
def test_prior_quantiles_match_scipy_within_monte_carlo_error(tree, scale, reference) -> None:
    levels = np.linspace(0.02, 0.98, 8)
    quantiles = prior_quantiles(LpNestedPrior(tree, scale=scale), levels)
    assert quantiles.shape == (8, 3)
    error = _quantile_error(reference, levels, 100_000)
    deviation = np.abs(quantiles - reference.ppf(levels)[:, None])  # (levels, latents)
    assert (deviation < 5 * error[:, None]).all(), deviation / error[:, None]


def test_reconstructions_and_prior_samples_have_image_shapes() -> None:
    data, pixels = grid_data()
    inputs, outputs = reconstructions(StandInModel(), data, [2, 3, 4])
    assert inputs.shape == outputs.shape == (3, 2, 3)
    assert inputs == pytest.approx(pixels[2:5, ..., 0].numpy() / 255.0)
    brightness = pixels[2:5].double().mean((1, 2, 3)).numpy() / 255.0
    assert outputs[:, 0, 0] == pytest.approx(1 / (1 + np.exp(-brightness)), rel=1e-6)
    with pytest.raises(IsaError, match=r"indices 18 is out of range \(0\.\.17\)"):
        reconstructions(StandInModel(), data, [17, 18])
    model = StandInModel(LpTree.isa([2, 2], 2.1, 0.9))
    samples = prior_samples(model, 6, seed=3)
    assert samples.shape == (6, 2, 3)
    z = model.prior.sample(6, generator=torch.Generator().manual_seed(3))  # the exact sampler
    assert samples[:, 0, 0] == pytest.approx(torch.sigmoid(z[:, 0]).numpy(), rel=1e-6)
    assert (prior_samples(model, 6, seed=3) == samples).all()


def _figure_traversal(steps: int = 4, rows: int = 3, colour: bool = False):
    codes = synthetic_codes()
    data, _ = grid_data()
    figure = traversal(StandInModel(), codes, data, rank_latents(codes), 4, steps, max_rows=rows)
    if colour:
        figure = type(figure)(
            [np.repeat(row[..., None], 3, -1) for row in figure.rows],
            np.repeat(figure.original[..., None], 3, -1),
            np.repeat(figure.reconstruction[..., None], 3, -1),
            figure.values,
            figure.labels,
            figure.caption,
        )
    return figure


@pytest.mark.parametrize("colour", [False, True])
def test_a_gif_has_one_frame_per_step_all_the_same_size(tmp_path: Path, colour: bool) -> None:
    figure = _figure_traversal(steps=5, colour=colour)
    frames = traversal_frames(figure, scale=4)
    assert len(frames) == 5 and len({frame.size for frame in frames}) == 1
    # wide enough for the input, its reconstruction and three latents at 4x (3 pixels wide)
    assert frames[0].size[0] >= 5 * 3 * 4
    path = tmp_path / "t.gif"
    save_gif(frames, path)
    with Image.open(path) as gif:
        assert gif.format == "GIF" and gif.info.get("loop") == 0
        sizes = [frame.size for frame in ImageSequence.Iterator(gif)]
    assert len(sizes) == 5 and set(sizes) == {frames[0].size}
    with pytest.raises(IsaError, match="GIF"):
        save_gif(frames, tmp_path / "t.png")


def test_the_png_figures_draw_input_reconstruction_and_grids() -> None:
    figure = latent_traversal(_figure_traversal(steps=4, rows=2))
    assert len(figure.axes) == 2 * (4 + 2)
    assert figure.axes[0].get_title() == "input" and figure.axes[1].get_title() == "reconstruction"
    assert any("mutual information" in text.get_text() for text in figure.texts)
    grid = image_grid(np.zeros((2, 5, 3, 4)), ["input", "reconstruction"], "t")
    assert len(grid.axes) == 10
    with pytest.raises(IsaError, match="row_labels has 1 labels for 2 rows"):
        image_grid(np.zeros((2, 5, 3, 4)), ["input"], "t")
