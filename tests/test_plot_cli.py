"""`isa plot` figures from a results file, and the figure library (`isa_core.plots`) behind them."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from isa_core.errors import IsaError
from tests.conftest import isa_in_process


@pytest.fixture
def results(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    rows = []
    for method, learn in (("beta-vae", False), ("isa-vae", True)):
        for beta in (1.0, 2.0, 4.0):
            for seed in range(5):
                exponents = [2.1, *sorted(rng.normal(2.05, 0.08, 3))] if learn else None
                rows.append(
                    {
                        "id": f"{method}_beta{beta:g}_seed{seed}",
                        "method": method,
                        "beta": beta,
                        "seed": seed,
                        "mig": float(rng.uniform(0.05, 0.4)),
                        "logpx": float(-20 - 3 * beta + rng.normal(0, 1)),
                        "exponents": exponents,
                        "config": {"learn_exponents": learn},
                    }
                )
    path = tmp_path / "results.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.mark.parametrize(
    ("args", "width"),
    [
        (["scatter"], 600),
        (["mig-dist", "--beta", "1"], 500),
        (["exponents"], 900),
        (["prior-contours", "--tree", "1(2)", "--tree", "2.1(2.2(2))"], 500),
    ],
)
def test_plots_write_pngs(
    results: Path, tmp_path: Path, args: list[str], width: int, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "figure.png"
    command = ["plot", args[0]]
    if args[0] != "prior-contours":
        command.append(str(results))
    status, stdout, stderr = isa_in_process([*command, *args[1:], "-o", out], capsys)
    assert status == 0 and stdout == f"{out.resolve()}\n", stderr
    with Image.open(out) as image:
        image.load()
        assert image.format == "PNG" and image.size[0] >= width and image.size[1] >= 300


def test_plot_errors(results: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    png = str(tmp_path / "x.png")
    no_learning = tmp_path / "plain.jsonl"
    no_learning.write_text('{"id": "a", "mig": 0.1, "exponents": [2.1, 2.0]}\n')
    cases = [
        (["plot", "mig-dist", results, "--beta", "9", "-o", png], "beta = 9"),
        (["plot", "scatter", tmp_path / "none.jsonl", "-o", png], "no such results"),
        (["plot", "prior-contours", "--tree", "2(3)", "-o", png], "2-D priors"),
        (["plot", "exponents", no_learning, "-o", png], "train with --learn-exponents"),
    ]
    for args, message in cases:
        status, _, stderr = isa_in_process(args, capsys)
        assert status == 2 and message in stderr and len(stderr.splitlines()) == 1, stderr


def test_every_public_figure_is_exported() -> None:
    import isa_core.plots as plots

    for name in plots.__all__:
        assert getattr(plots, name) is not None
    from isa_core.plots import factor_sweeps, latent_traversal, latent_vs_true, prior_contours

    assert {f.__module__ for f in (factor_sweeps, latent_traversal)} == {
        "isa_core.plots.data",
        "isa_core.plots.model",
    }
    assert callable(latent_vs_true) and callable(prior_contours)


def test_sweep_figures_take_run_results() -> None:
    from isa_core.plots import exponent_histograms, mig_distribution, mig_logpx_scatter
    from isa_core.sweeps.results import RunResult

    runs = [
        RunResult.from_row({"method": m, "beta": b, "mig": 0.1 * i, "logpx": -i, "exponents": e})
        for i, (m, b, e) in enumerate([("a", 1, None), ("a", 1, None), ("b", 2, [2.1, 2.0])])
    ]
    assert mig_logpx_scatter(runs).axes[0].get_legend_handles_labels()[1] == ["a", "b"]
    assert mig_distribution(runs, 2).axes[0].get_title() == "MIG per method, β = 2 (1 runs)"
    with pytest.raises(IsaError, match="no run that learned its exponents"):
        exponent_histograms(runs)  # their configs do not say learn_exponents
    damaged = dataclasses.replace(runs[0], mig=5.0)  # built by hand, so never checked
    with pytest.raises(IsaError, match=r"mig = 5\.0"):
        mig_distribution([damaged])


def test_library_errors_name_their_arguments() -> None:
    from isa_core.plots import fa_curves, prior_contour_grid, prior_contours
    from isa_core.priors import LpNested, LpTree

    flat = LpNested(LpTree.parse("2(2)"))
    with pytest.raises(IsaError, match=r"^extent must be a positive number") as error:
        prior_contours(flat, np.zeros((1, 2)), extent=float("inf"))
    assert error.value.field == "extent"
    with pytest.raises(IsaError, match=r"^extent is needed: the samples reach 1\.1e\+308"):
        prior_contours(flat, np.full((3, 2), 1e308))  # too far out for an automatic extent
    with pytest.raises(IsaError, match=r"^prior 2\(3\) has n = 3"):
        prior_contours(LpNested(LpTree.parse("2(3)")), np.zeros((0, 3)))
    with pytest.raises(IsaError, match=r"^priors 2\(3\) has n = 3"):
        prior_contour_grid([flat, LpNested(LpTree.parse("2(3)"))])
    with pytest.raises(IsaError, match=r"^experiment 'ica' is unknown") as error:
        fa_curves("ica", np.zeros(2), np.zeros(2), {}, [])
    assert error.value.field == "experiment"


def test_latent_vs_true_labels_shapes_by_the_given_names() -> None:
    from isa_core.data.dsprites import FACTOR_NAMES, SHAPE_NAMES
    from isa_core.plots import latent_vs_true

    rng = np.random.default_rng(0)
    sizes = (4, 2, 3, 4, 4)  # a fourth shape class beyond dSprites' three
    factors = np.stack([rng.integers(0, s, 200) for s in sizes], 1)
    factors[:4, 0] = np.arange(4)
    values = [np.arange(s, dtype=float) for s in sizes]
    names = list(reversed(FACTOR_NAMES))  # found by name, in any order
    factors = factors[:, ::-1]
    mean = rng.normal(size=(200, 2))
    figure = latent_vs_true(mean, factors, names, values[::-1], [1], ["z1"])
    assert figure.axes[1].get_legend_handles_labels()[1] == [*SHAPE_NAMES, "shape 3"]
    assert figure.axes[1].get_title() == "mean vs scale"
    renamed = latent_vs_true(mean, factors, names, values[::-1], [1], ["z1"], shape_names="abcd")
    assert renamed.axes[1].get_legend_handles_labels()[1] == ["a", "b", "c", "d"]
    with pytest.raises(IsaError, match=r"^names lack the dSprites factor"):
        latent_vs_true(mean, factors[:, :4], names[:4], values[:4], [1], ["z1"])
