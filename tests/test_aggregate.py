"""Minibatch estimates of q(z) and its marginals against exact mixtures, brute force, autograd."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import scipy.stats as st
import torch

import isa_core.aggregate as aggregate
import isa_core.aggregate_fused as aggregate_fused
import isa_core.compiled as compiled
from isa_core.aggregate import aggregate_log_densities, log_importance_weights, log_weight_matrix
from isa_core.errors import IsaError
from isa_core.models import gaussian_log_density, reparameterize
from tests.conftest import needs_compiler


def posterior(n: int, k: int, seed: int = 0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    mean = torch.randn(n, k, generator=g, dtype=torch.float64)
    logvar = torch.randn(n, k, generator=g, dtype=torch.float64) * 0.5 - 1
    return mean.to(dtype), logvar.to(dtype)


def exact_aggregate(z: np.ndarray, mean: np.ndarray, logvar: np.ndarray):
    """log q(z) and log q(z_k) of the mixture (1/N) Σ_n N(z; μ_n, σ_n²), by scipy."""
    sd = np.exp(0.5 * logvar)
    dens = st.norm.pdf(z[:, None, :], mean[None], sd[None])  # (M, N, K)
    return np.log(dens.prod(-1).mean(1)), np.log(dens.mean(1))


def by_definition(z, mean, logvar, dataset_size, estimator="mss"):
    """The estimators written out with plain autograd-able torch ops on the (M, M, K) tensor."""
    batch = len(z)
    log_w = log_weight_matrix(
        range(batch), batch, log_importance_weights(batch, dataset_size, estimator), z
    )
    pairwise = gaussian_log_density(z[:, None, :], mean[None], logvar[None])  # (M, M, K)
    joint = torch.logsumexp(log_w + pairwise.sum(-1), dim=1)
    marginals = torch.logsumexp(log_w[:, :, None] + pairwise, dim=1)
    return joint, marginals


@pytest.mark.parametrize("estimator", ["mss", "mws"])
def test_estimators_are_exact_when_the_batch_is_the_whole_data_set(estimator: str) -> None:
    mean, logvar = posterior(6, 3)
    z = reparameterize(mean, logvar, torch.Generator().manual_seed(1))
    log_qz, log_marg = aggregate_log_densities(z, mean, logvar, dataset_size=6, estimator=estimator)
    joint, marginals = exact_aggregate(z.numpy(), mean.numpy(), logvar.numpy())
    np.testing.assert_allclose(log_qz.numpy(), joint, rtol=1e-12)
    np.testing.assert_allclose(log_marg.numpy(), marginals, rtol=1e-12)


def test_mss_weights_sit_on_the_diagonal_and_rows_sum_to_one() -> None:
    weights = log_weight_matrix(
        range(5), 5, log_importance_weights(5, 1000, "mss"), torch.zeros(1, dtype=torch.float64)
    ).exp()
    np.testing.assert_allclose(torch.diagonal(weights).numpy(), 1 / 1000)
    np.testing.assert_allclose(weights.sum(1).numpy(), 1.0)
    off = weights[~torch.eye(5, dtype=torch.bool)]
    np.testing.assert_allclose(off.numpy(), 999 / (1000 * 4))
    rows = log_weight_matrix(range(2, 4), 5, log_importance_weights(5, 1000, "mss"), weights)
    torch.testing.assert_close(rows, weights[2:4].log())


def test_mss_is_unbiased_over_every_possible_batch() -> None:
    """Brute force: average the estimate of q(z) over all batches that contain x_0."""
    n, batch, k = 5, 3, 2
    mean, logvar = posterior(n, k, seed=3)
    z0 = reparameterize(mean[:1], logvar[:1], torch.Generator().manual_seed(4))  # z ~ q(z|x_0)
    estimates, marginal_estimates = [], []
    for others in itertools.permutations(range(1, n), batch - 1):
        members = [0, *others]
        z = torch.cat([z0, mean[list(others)]])  # rows 1.. are other samples (unused for row 0)
        log_qz, log_marg = aggregate_log_densities(z, mean[members], logvar[members], n, "mss")
        estimates.append(log_qz[0].exp().item())
        marginal_estimates.append(log_marg[0].exp().numpy())
    joint, marginals = exact_aggregate(z0.numpy(), mean.numpy(), logvar.numpy())
    assert np.mean(estimates) == pytest.approx(math.exp(joint[0]), rel=1e-12)
    np.testing.assert_allclose(np.mean(marginal_estimates, 0), np.exp(marginals[0]), rtol=1e-12)


@pytest.mark.parametrize("estimator", ["mss", "mws"])
def test_eager_values_and_gradients_match_autograd_of_the_definition(estimator: str) -> None:
    mean, logvar = posterior(9, 3, seed=7)
    z = reparameterize(mean, logvar, torch.Generator().manual_seed(8))
    inputs = tuple(t.clone().requires_grad_() for t in (z, mean, logvar))
    assert torch.autograd.gradcheck(
        lambda a, b, c: aggregate_log_densities(a, b, c, 100, estimator, backend="eager"), inputs
    )
    for ours, direct in zip(
        aggregate_log_densities(z, mean, logvar, 100, estimator, backend="eager"),
        by_definition(z, mean, logvar, 100, estimator),
        strict=True,
    ):
        torch.testing.assert_close(ours, direct)


def test_eager_chunks_give_the_same_result_as_one_block() -> None:
    mean, logvar = posterior(11, 4, seed=9)
    z = reparameterize(mean, logvar, torch.Generator().manual_seed(10))
    precision, offset = torch.exp(-logvar), -0.5 * (math.log(2 * math.pi) + logvar)
    weights = log_importance_weights(11, 50, "mss")
    one = aggregate._eager_forward(z, mean, precision, offset, weights, chunk_terms=1 << 20)
    many = aggregate._eager_forward(z, mean, precision, offset, weights, chunk_terms=4 * 3)
    for a, b in zip(one, many, strict=True):
        torch.testing.assert_close(a, b)


def gradients(backend: str, z, mean, logvar, dataset_size: int):
    inputs = [t.clone().requires_grad_() for t in (z, mean, logvar)]
    joint, marginals = aggregate_log_densities(*inputs, dataset_size, backend=backend)
    weights = torch.linspace(-1, 2, marginals.numel(), dtype=z.dtype).reshape(marginals.shape)
    (0.7 * joint.sum() + (weights * marginals).sum()).backward()
    return [joint.detach(), marginals.detach(), *(t.grad for t in inputs)]


@needs_compiler
def test_fused_kernels_match_the_definition_in_float64() -> None:
    """The compiled CPU kernels (rolled layout, own term apart) against plain autograd."""
    mean, logvar = posterior(24, 5, seed=11)
    z = reparameterize(mean, logvar, torch.Generator().manual_seed(12))
    inputs = [t.clone().requires_grad_() for t in (z, mean, logvar)]
    joint, marginals = by_definition(*inputs, 500)
    weights = torch.linspace(-1, 2, marginals.numel(), dtype=z.dtype).reshape(marginals.shape)
    (0.7 * joint.sum() + (weights * marginals).sum()).backward()
    reference = [joint.detach(), marginals.detach(), *(t.grad for t in inputs)]
    for ours, expected in zip(gradients("fused", z, mean, logvar, 500), reference, strict=True):
        torch.testing.assert_close(ours, expected, rtol=1e-10, atol=1e-10)


@needs_compiler
def test_fused_float32_agrees_with_float64_on_trained_like_posteriors() -> None:
    """Narrow posteriors on a grid of near-duplicate means: where expanding (z - μ)² would lose
    digits. Float32 results stay as close to the float64 ones as rounding the inputs allows
    (eager and fused alike: about 1e-5 of the largest value)."""
    g = torch.Generator().manual_seed(13)
    batch, dims = 256, 8
    mean = torch.randn(batch, dims, generator=g, dtype=torch.float64)
    mean[:, :4] = torch.round(mean[:, :4] * 10) / 5
    logvar = torch.zeros(batch, dims, dtype=torch.float64)
    logvar[:, :4] = -8 + torch.randn(batch, 4, generator=g, dtype=torch.float64)
    z = reparameterize(mean, logvar, g)
    reference = gradients("eager", z, mean, logvar, 737_280)
    single = [t.float() for t in (z, mean, logvar)]
    for backend in ("eager", "fused"):
        for ours, expected in zip(gradients(backend, *single, 737_280), reference, strict=True):
            scale = expected.abs().max().item()
            assert (ours.double() - expected).abs().max().item() <= 5e-5 * scale


def test_auto_falls_back_to_eager_with_a_warning_when_compiling_fails(monkeypatch) -> None:
    from torch._inductor.exc import InvalidCxxCompiler

    def broken(*args):
        raise InvalidCxxCompiler()

    monkeypatch.setattr(aggregate_fused, "fused_forward", broken)
    monkeypatch.setattr(compiled, "_BROKEN", [])
    monkeypatch.setattr(compiled, "FUSED_MIN_VALUES", 1)
    mean, logvar = posterior(12, 3, seed=14)
    z = reparameterize(mean, logvar, torch.Generator().manual_seed(15))
    with pytest.warns(RuntimeWarning, match="No working C\\+\\+ compiler found"):
        got = gradients("auto", z, mean, logvar, 100)
    assert not compiled.fused_available()
    for ours, expected in zip(got, gradients("eager", z, mean, logvar, 100), strict=True):
        torch.testing.assert_close(ours, expected)
    with pytest.raises(InvalidCxxCompiler):
        aggregate_log_densities(z, mean, logvar, 100, backend="fused")


@pytest.mark.parametrize("direction", ["fused_forward", "fused_backward"])
def test_a_bug_in_the_fused_kernels_is_raised_not_hidden(monkeypatch, direction: str) -> None:
    """Only compile failures fall back; any other error in the fused path is a bug: raised."""

    def buggy(*args):
        raise IndexError("a kernel bug")

    if direction == "fused_backward":  # a working forward, so the backward is reached
        monkeypatch.setattr(aggregate_fused, "fused_forward", aggregate._eager_forward)
    monkeypatch.setattr(aggregate_fused, direction, buggy)
    monkeypatch.setattr(compiled, "_BROKEN", [])
    monkeypatch.setattr(compiled, "FUSED_MIN_VALUES", 1)
    mean, logvar = posterior(12, 3, seed=14)
    z = reparameterize(mean, logvar, torch.Generator().manual_seed(15))
    with pytest.raises(IndexError, match="a kernel bug"):
        gradients("auto", z, mean, logvar, 100)
    assert compiled.fused_available()  # no fallback was recorded


def test_bad_arguments_raise_isa_errors() -> None:
    z = torch.zeros(4, 2)
    with pytest.raises(IsaError, match="backend 'gpu' is unknown"):
        aggregate_log_densities(z, z, z, 10, backend="gpu")
    with pytest.raises(IsaError, match="tc_estimator 'iwae' is unknown"):
        aggregate_log_densities(z, z, z, 10, estimator="iwae")
    with pytest.raises(IsaError, match="larger than the data set"):
        aggregate_log_densities(z, z, z, 3)
    with pytest.raises(IsaError, match="at least 2"):
        aggregate_log_densities(z[:1], z[:1], z[:1], 10)
