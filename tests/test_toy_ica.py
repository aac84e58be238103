"""Over-complete ICA toy experiment (appendix B.7-B.8) against independent computations."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import scipy.integrate
import scipy.stats as st
import torch
from PIL import Image

from isa_core.errors import IsaError
from isa_core.toy_ica import (
    describe_components,
    directions_to_matrix,
    fit_ica,
    ica_free_energy,
    make_ica_problem,
    student_t_log_density,
)
from tests.conftest import isa_in_process


def test_student_t_log_density_matches_scipy() -> None:
    z = torch.linspace(-30, 30, 101, dtype=torch.float64)
    for nu in (1.0, 3.5, 30.0):
        np.testing.assert_allclose(
            student_t_log_density(z, nu).numpy(), st.t(nu).logpdf(z.numpy()), rtol=1e-12
        )


def test_free_energy_matches_direct_integration_and_monte_carlo() -> None:
    """F_β = E_q[log p(x|z)] + β (H(q) + E_q[log p(z)]): the cross-entropy against scipy's
    adaptive quadrature of each 1-D integral, the reconstruction term against Monte Carlo."""
    rng = np.random.default_rng(1)
    nu, noise_var, beta = 3.5, 0.2, 2.5
    w = directions_to_matrix((10.0, 70.0, 135.0)) * [1.0, 0.7, 1.3]
    x = rng.standard_normal((4, 2)) * 2
    mean = rng.standard_normal((4, 3))
    logvar = rng.standard_normal((4, 3)) * 0.5 - 1
    ours = ica_free_energy(*(torch.as_tensor(a) for a in (x, w, mean, logvar)), noise_var, nu, beta)

    cross = 0.0
    for m, lv in zip(mean.ravel(), logvar.ravel(), strict=True):
        s = math.exp(0.5 * lv)
        cross += scipy.integrate.quad(
            lambda z, m=m, s=s: st.norm(m, s).pdf(z) * st.t(nu).logpdf(z), m - 40 * s, m + 40 * s
        )[0]
    entropy = st.norm(0, np.exp(0.5 * logvar)).entropy().sum()
    samples = mean + np.exp(0.5 * logvar) * rng.standard_normal((400_000, 4, 3))
    residual = x - samples @ w.T  # (S, 4, 2)
    log_lik = (-0.5 * math.log(2 * math.pi * noise_var) - residual**2 / (2 * noise_var)).sum((1, 2))
    reference = log_lik.mean() + beta * (entropy + cross)
    standard_error = log_lik.std() / math.sqrt(len(log_lik))
    assert ours.item() == pytest.approx(reference, abs=5 * standard_error)
    assert standard_error < 0.05
    # With W = 0 the reconstruction term is a constant: the KL part alone, to quadrature accuracy.
    zero = torch.zeros(2, 3, dtype=torch.float64)
    tensors = [torch.as_tensor(a) for a in (mean, logvar)]
    kl_only = ica_free_energy(torch.as_tensor(x), zero, *tensors, noise_var, nu, beta).item()
    constant = (-0.5 * math.log(2 * math.pi * noise_var) - x**2 / (2 * noise_var)).sum()
    assert kl_only == pytest.approx(constant + beta * (entropy + cross), abs=1e-8)


def test_free_energy_is_below_the_log_likelihood() -> None:
    """At β = 1, F ≤ log p(x) for any q; log p(x) by quadrature over the three sources."""
    nu, noise_var = 3.5, 0.3
    w = directions_to_matrix((0.0, 60.0, 120.0))
    x = np.array([[0.7, -0.4]])
    rng = np.random.default_rng(2)
    # p(x) = E_{z1, z2 ~ t} [ ∫ t(z3) N(x; W z, σ²) dz3 ]: the inner integral by quadrature,
    # the outer two by Monte Carlo on many draws.
    z12 = rng.standard_t(nu, size=(4_000, 2))
    nodes = np.linspace(-30, 30, 2001)
    weights = st.t(nu).pdf(nodes) * (nodes[1] - nodes[0])
    means = z12 @ w[:, :2].T  # (S, 2)
    dens = st.norm(means[:, None, :] + nodes[None, :, None] * w[:, 2], math.sqrt(noise_var))
    inner = (dens.pdf(x[0]).prod(-1) * weights).sum(-1)
    log_px = math.log(inner.mean())
    args = [torch.as_tensor(a) for a in (x, w)]
    best = -math.inf
    for start in (np.zeros((1, 3)), np.array([[0.5, -0.3, 0.2]])):
        mean = torch.as_tensor(start, dtype=torch.float64).requires_grad_()
        logvar = torch.full((1, 3), -1.0, dtype=torch.float64, requires_grad=True)
        optimizer = torch.optim.Adam([mean, logvar], lr=0.05)
        for _ in range(600):
            optimizer.zero_grad()
            (-ica_free_energy(*args, mean, logvar, noise_var, nu, 1.0)).backward()
            optimizer.step()
        best = max(best, ica_free_energy(*args, mean, logvar, noise_var, nu, 1.0).item())
    assert best < log_px
    assert best > log_px - 1.0  # and not absurdly loose for this well-posed point


def test_describe_components_angles_norms_and_pruning() -> None:
    w = directions_to_matrix((10.0, 100.0, 170.0)) * [2.0, 0.05, 1.0]
    info = describe_components(w)
    np.testing.assert_allclose(info["directions"], [10.0, 100.0, 170.0])
    np.testing.assert_allclose(info["norms"], [2.0, 0.05, 1.0])
    assert info["pairwise_angles"] == pytest.approx({"0-1": 90.0, "0-2": 20.0, "1-2": 70.0})
    assert info["pruned"] == [1]


def test_beta_five_prunes_one_component_and_sets_the_others_orthogonal() -> None:
    problem = make_ica_problem()
    one, five = fit_ica(problem, 1.0, iterations=2000), fit_ica(problem, 5.0, iterations=2000)
    truth = describe_components(problem.w_true)
    vi, beta_vi = describe_components(one.w), describe_components(five.w)
    # β = 1 after the same steps: all three components still there, the widest pair (0-2)
    # turned towards orthogonal, the middle one shrinking.
    assert vi["pruned"] == []
    assert truth["pairwise_angles"]["0-2"] < vi["pairwise_angles"]["0-2"] < 90
    assert max(vi["pairwise_angles"].values()) > max(truth["pairwise_angles"].values())
    # β = 5: the middle component is pruned and the other two are orthogonal.
    assert beta_vi["pruned"] == [1]
    assert beta_vi["norms"][1] < 0.01
    assert beta_vi["pairwise_angles"]["0-2"] == pytest.approx(90, abs=5)
    # only improving steps are taken: both end above F_β of the true model
    assert one.free_energy > one.start_free_energy and five.free_energy > five.start_free_energy
    assert five.accepted <= five.iterations and one.accepted <= one.iterations


@pytest.mark.slow
def test_beta_one_prunes_too_when_run_long_enough() -> None:
    """What we found: VI's pull continues; after 20,000 steps β = 1 has pruned as well."""
    fit = fit_ica(make_ica_problem(), 1.0, iterations=20_000)
    info = describe_components(fit.w)
    assert info["pruned"] == [1]
    assert info["pairwise_angles"]["0-2"] == pytest.approx(90, abs=5)


def test_fits_are_deterministic() -> None:
    problem = make_ica_problem(n=40, seed=3)
    a, b = fit_ica(problem, 2.0, iterations=50), fit_ica(problem, 2.0, iterations=50)
    np.testing.assert_array_equal(a.w, b.w)
    assert a.free_energy == b.free_energy


def test_bad_arguments_name_the_library_fields() -> None:
    problem = make_ica_problem(n=4)
    calls = {
        "n": lambda: make_ica_problem(n=0),
        "nu": lambda: make_ica_problem(nu=0.0),
        "noise": lambda: make_ica_problem(noise=0.0),
        "seed": lambda: make_ica_problem(seed=-1),
        "beta": lambda: fit_ica(problem, 0.0),
        "iterations": lambda: fit_ica(problem, 1.0, iterations=-1),
    }
    for field, call in calls.items():
        with pytest.raises(IsaError) as error:
            call()
        assert error.value.field == field and str(error.value).startswith(f"{field} must")


def test_cli_json_and_png(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "ica.png"
    args = ["toy-ica", "--n", "60", "--iterations", "30", "--beta", "1", "--beta", "3"]
    status, stdout, stderr = isa_in_process([*args, "-o", out], capsys)
    assert status == 0, stderr
    lines = [json.loads(line) for line in stdout.splitlines()]
    assert [line["beta"] for line in lines] == [1.0, 3.0]
    for key in (
        "true_directions",
        "learned_directions",
        "norms",
        "pairwise_angles",
        "free_energy",
        "iterations",
    ):
        assert key in lines[0]
    assert lines[0]["true_directions"] == pytest.approx([0.0, 50.0, 120.0])
    assert lines[0]["iterations"] == 30
    with Image.open(out) as image:
        assert image.format == "PNG" and image.size[0] > 600
    _, again, _ = isa_in_process(args, capsys)
    assert again == stdout  # deterministic for a seed


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--beta", "0"], "positive"),
        (["--beta", "nan"], "positive"),
        (["--nu", "0"], "--nu must be a positive"),
        (["--nu", "-1"], "--nu must be a positive"),
        (["--n", "0"], "at least 2"),
        (["--noise", "0"], "--noise"),
        (["--noise", "1e-200"], "--noise must lie in 1e-150..1e150"),  # the library's check
        (["--iterations", "-1"], "0 or more"),
        (["--directions", "a,b"], "comma-separated"),
        (["--directions", "10"], "at least two"),
        (["-o", "x.jpg"], "PNG"),
    ],
)
def test_cli_bad_flags(args: list[str], message: str, capsys: pytest.CaptureFixture) -> None:
    status, _, stderr = isa_in_process(["toy-ica", "--iterations", "1", *args], capsys)
    assert status == 2 and stderr.startswith("isa toy-ica: error:"), stderr
    assert message in stderr and len(stderr.strip().splitlines()) == 1
