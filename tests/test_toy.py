"""Factor-analysis toy experiments (appendix B) against independent computations."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import scipy.stats as st
from PIL import Image

from isa_core.errors import IsaError
from isa_core.toy_fa import (
    FaExperiment,
    FaModel,
    fa_ellipses,
    fa_free_energy,
    fa_log_likelihood,
    fa_mean_field,
    fa_sweep,
    prune_model,
    rotation_model,
)
from tests.conftest import isa_in_process


def test_log_likelihood_matches_scipy_on_data() -> None:
    rng = np.random.default_rng(0)
    w = rng.standard_normal((3, 2))
    x = rng.standard_normal((500, 3)) * [1.0, 2.0, 0.5]
    model = FaModel(w, 0.3, x.T @ x / len(x))
    reference = st.multivariate_normal(np.zeros(3), w @ w.T + 0.3 * np.eye(3)).logpdf(x).mean()
    assert fa_log_likelihood(model) == pytest.approx(reference, rel=1e-12)


def test_free_energy_is_a_bound_tight_when_the_posterior_factorizes() -> None:
    rng = np.random.default_rng(1)
    for _ in range(20):
        w = rng.standard_normal((3, 2))
        x = rng.standard_normal((50, 3))
        model = FaModel(w, 0.5, x.T @ x / len(x))
        assert fa_free_energy(model, 1.0) <= fa_log_likelihood(model) + 1e-12
    # orthogonal columns and isotropic noise: W^T D^-1 W is diagonal, the posterior factorizes
    q, _ = np.linalg.qr(rng.standard_normal((3, 3)))
    w = q[:, :2] * [2.0, 0.7]
    model = FaModel(w, 0.5, w @ w.T + 0.5 * np.eye(3))
    assert fa_free_energy(model, 1.0) == pytest.approx(fa_log_likelihood(model), abs=1e-12)


def gaussian_kl(mean_q, cov_q, mean_p, cov_p) -> float:
    k = len(mean_q)
    inv = np.linalg.inv(cov_p)
    diff = mean_p - mean_q
    return 0.5 * (
        np.trace(inv @ cov_q)
        + diff @ inv @ diff
        - k
        + np.log(np.linalg.det(cov_p) / np.linalg.det(cov_q))
    )


@pytest.mark.parametrize("beta", [1.0, 3.0])
def test_mean_field_q_is_the_closed_form_optimum(beta: float) -> None:
    model = rotation_model(math.pi / 5)
    posterior, recognition, mean_field = fa_mean_field(model, beta)
    w, noise = model.weights, model.noise
    x = np.array([0.7, -1.1])
    # the tempered posterior: likelihood raised to 1/beta, prior N(0, I)
    precision = w.T @ w / (beta * noise) + np.eye(2)
    mean = np.linalg.solve(precision, w.T @ x / (beta * noise))
    np.testing.assert_allclose(posterior, np.linalg.inv(precision), rtol=1e-12)
    np.testing.assert_allclose(recognition @ x, mean, rtol=1e-12)
    # among diagonal Gaussians with that mean, KL(q || posterior) is smallest at mean_field
    best = gaussian_kl(mean, mean_field, mean, posterior)
    for scale in ([1.1, 1.0], [0.9, 1.0], [1.0, 1.2], [1.0, 0.8], [1.05, 0.95]):
        other = mean_field * np.diag(scale)
        assert gaussian_kl(mean, other, mean, posterior) > best


def test_rotation_and_prune_shapes() -> None:
    thetas = np.linspace(0, math.pi, 9)
    loglik = [fa_log_likelihood(rotation_model(t)) for t in thetas]
    assert np.ptp(loglik) < 1e-12
    free = [fa_free_energy(rotation_model(t), 1.0) for t in thetas]
    for t, f, ll in zip(thetas, free, loglik, strict=True):
        if abs(math.sin(2 * t)) < 1e-9:  # theta = m pi / 2
            assert f == pytest.approx(ll, abs=1e-12)
        else:
            assert f < ll - 1e-3
    alphas = np.linspace(0, 0.5, 11)
    pruned = [fa_free_energy(prune_model(a), b) for a in alphas for b in (1.0,)]
    assert (
        np.argmax(pruned) == 0
        and np.ptp([fa_log_likelihood(prune_model(a)) for a in alphas]) < 1e-12
    )


def test_sweep_and_ellipses_follow_the_models() -> None:
    sweep = fa_sweep("prune", [1.0, 2.0], 3)
    assert sweep.experiment == FaExperiment.prune and sweep.parameter == "alpha"
    np.testing.assert_array_equal(sweep.grid, [0.0, 0.25, 0.5])
    assert sweep.loglik[1] == fa_log_likelihood(prune_model(0.25))
    assert sweep.free_energy[2.0][2] == fa_free_energy(prune_model(0.5), 2.0)
    rotation = fa_sweep(FaExperiment.rotation, [1.0], 2)
    assert rotation.parameter == "theta" and rotation.grid[-1] == math.pi
    (label, posterior, mean_field), *_ = fa_ellipses("rotation", 2.0)
    assert label == "θ = 0π, β = 2" and len(fa_ellipses("prune", 1.0)) == 3
    expected = fa_mean_field(rotation_model(0.0), 2.0)
    np.testing.assert_array_equal(posterior, expected[0])
    np.testing.assert_array_equal(mean_field, expected[2])


@pytest.mark.parametrize(
    ("call", "field"),
    [
        (lambda: fa_sweep("ica", [1.0]), "experiment"),
        (lambda: fa_sweep("rotation", [0.0]), "beta"),
        (lambda: fa_sweep("rotation", [1.0], 1), "points"),
        (lambda: fa_sweep("rotation", [1.0], 100_001), "points"),
        (lambda: prune_model(2.0), "alpha"),
        (lambda: fa_ellipses("rotation", float("nan")), "beta"),
    ],
)
def test_bad_arguments_name_the_library_fields(call, field: str) -> None:
    with pytest.raises(IsaError, match=f"^{field} ") as error:
        call()
    assert error.value.field == field


def test_cli_json_and_png(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "fa.png"
    args = ["toy-fa", "--beta", "1", "--beta", "2", "--points", "5", "-o", out]
    status, stdout, stderr = isa_in_process(args, capsys)
    assert status == 0, stderr
    lines = [json.loads(line) for line in stdout.splitlines()]
    assert len(lines) == 10 and {line["beta"] for line in lines} == {1.0, 2.0}
    assert set(lines[0]) == {"experiment", "beta", "theta", "loglik", "free_energy"}
    with Image.open(out) as image:
        assert image.format == "PNG" and image.size[0] > 600
    _, prune, _ = isa_in_process(["toy-fa", "--experiment", "prune", "--points", "3"], capsys)
    assert [json.loads(line)["alpha"] for line in prune.splitlines()] == [
        0,
        0.25,
        0.5,
    ]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--beta", "0"], "positive"),
        (["--beta", "-2"], "positive"),
        (["--points", "1"], "--points must be at least 2"),
        (["--points", "100001"], "--points 100,001 is more than a curve can show"),
        (["--experiment", "ica"], "Invalid value"),
        (["-o", "x.pdf"], "PNG"),
    ],
)
def test_cli_bad_flags(args: list[str], message: str, capsys: pytest.CaptureFixture) -> None:
    status, _, stderr = isa_in_process(["toy-fa", *args], capsys)
    assert status == 2 and stderr.startswith("isa toy-fa: error:") and message in stderr, stderr
