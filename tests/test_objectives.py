"""Objectives against independent computations on small cases."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import scipy.stats as st
import torch

from isa_core.models import gaussian_log_density, reparameterize
from isa_core.objectives import (
    Discriminator,
    aggregate_log_densities,
    discriminator_loss,
    factorvae_loss,
    log_importance_weights,
    permute_dims,
    tcvae_loss,
    vae_loss,
)
from isa_core.priors import LpNested, LpTree


def posterior(n: int, k: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    mean = torch.randn(n, k, generator=g, dtype=torch.float64)
    logvar = torch.randn(n, k, generator=g, dtype=torch.float64) * 0.5 - 1
    return mean, logvar


def exact_aggregate(z: np.ndarray, mean: np.ndarray, logvar: np.ndarray):
    """log q(z) and log q(z_k) of the mixture (1/N) Σ_n N(z; μ_n, σ_n²), by scipy."""
    sd = np.exp(0.5 * logvar)
    dens = st.norm.pdf(z[:, None, :], mean[None], sd[None])  # (M, N, K)
    joint = np.log(dens.prod(-1).mean(1))
    marginals = np.log(dens.mean(1))
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
    weights = log_importance_weights(5, 1000, "mss").exp()
    np.testing.assert_allclose(torch.diagonal(weights).numpy(), 1 / 1000)
    np.testing.assert_allclose(weights.sum(1).numpy(), 1.0)
    off = weights[~torch.eye(5, dtype=torch.bool)]
    np.testing.assert_allclose(off.numpy(), 999 / (1000 * 4))


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


def batch_case(k: int = 4, b: int = 64):
    g = torch.Generator().manual_seed(5)
    mean = torch.randn(b, k, generator=g, dtype=torch.float64) * 0.7
    logvar = torch.randn(b, k, generator=g, dtype=torch.float64) * 0.3 - 0.5
    z = reparameterize(mean, logvar, g)
    x = (torch.rand(b, 1, 4, 4, generator=g) < 0.3).double()
    logits = torch.randn(b, 1, 4, 4, generator=g, dtype=torch.float64)
    return x, logits, z, mean, logvar


def test_isa_with_all_exponents_2_equals_the_normal_prior() -> None:
    x, logits, z, mean, logvar = batch_case()
    isa = LpNested(LpTree.isa((2, 2), 2.0, 2.0), scale=2.0)
    normal = LpNested(LpTree.normal(4), scale=2.0)
    for beta in (1.0, 4.0):
        a = vae_loss(x, logits, z, mean, logvar, isa, beta)
        b = vae_loss(x, logits, z, mean, logvar, normal, beta)
        for key in a:
            torch.testing.assert_close(a[key], b[key])
        reference = (
            gaussian_log_density(z, mean, logvar).sum(-1)
            - torch.from_numpy(st.norm.logpdf(z.numpy()).sum(-1))
        ).mean()
        torch.testing.assert_close(a["kl"], reference)


def test_monte_carlo_kl_matches_closed_form_in_expectation() -> None:
    x, logits, _, mean, logvar = batch_case()
    normal = LpNested(LpTree.normal(4), scale=2.0)
    closed = vae_loss(x, logits, mean, mean, logvar, normal, closed_form_kl=True)["kl"]
    g = torch.Generator().manual_seed(6)
    draws = [
        vae_loss(x, logits, reparameterize(mean, logvar, g), mean, logvar, normal)["kl"]
        for _ in range(400)
    ]
    draws = torch.stack(draws)
    assert abs(draws.mean() - closed) < 4 * draws.std() / math.sqrt(len(draws))


@pytest.mark.parametrize("estimator", ["mss", "mws"])
def test_tc_parts_sum_to_the_kl_term(estimator: str) -> None:
    x, logits, z, mean, logvar = batch_case()
    prior = LpNested(LpTree.isa((2, 2), 2.1, 1.6))
    parts = tcvae_loss(x, logits, z, mean, logvar, prior, 1000, 3.0, estimator)
    torch.testing.assert_close(parts["mi"] + parts["tc"] + parts["dwkl"], parts["kl"])
    vae = vae_loss(x, logits, z, mean, logvar, prior, 1.0)
    torch.testing.assert_close(parts["kl"], vae["kl"])
    torch.testing.assert_close(parts["logpx"], vae["logpx"])
    # β = 1 with the TC decomposition is the plain VAE loss
    one = tcvae_loss(x, logits, z, mean, logvar, prior, 1000, 1.0, estimator)
    torch.testing.assert_close(one["loss"], vae["loss"])


def test_factorvae_parts_and_discriminator() -> None:
    x, logits, z, mean, logvar = batch_case()
    prior = LpNested(LpTree.normal(4))
    disc = Discriminator(4).double()
    parts = factorvae_loss(x, logits, z, mean, logvar, prior, disc, gamma=10.0)
    scores = disc(z)
    torch.testing.assert_close(parts["tc"], (scores[:, 0] - scores[:, 1]).mean())
    base = vae_loss(x, logits, z, mean, logvar, prior)["loss"]
    torch.testing.assert_close(parts["loss"], base + 10.0 * parts["tc"])
    loss = discriminator_loss(disc, z, z.flip(0), torch.Generator().manual_seed(0))
    assert loss.ndim == 0 and torch.isfinite(loss)
    permuted = permute_dims(z, torch.Generator().manual_seed(1))
    for k in range(4):  # each column is a permutation of the original column
        torch.testing.assert_close(permuted[:, k].sort().values, z[:, k].sort().values)
    assert not torch.equal(permuted, z)


def test_marginal_mixture_gradients_match_autograd_of_the_definition() -> None:
    from isa_core.objectives import _MarginalLogMixture

    mean, logvar = posterior(9, 3, seed=7)
    z = reparameterize(mean, logvar, torch.Generator().manual_seed(8)).requires_grad_()
    mean.requires_grad_()
    logvar.requires_grad_()
    log_w = log_importance_weights(9, 100, "mss")
    assert torch.autograd.gradcheck(
        lambda a, b, c: _MarginalLogMixture.apply(a, b, c, log_w, 4), (z, mean, logvar)
    )
    pairwise = gaussian_log_density(z[:, None, :], mean[None], logvar[None])
    direct = torch.logsumexp(log_w[:, :, None] + pairwise, dim=1)
    torch.testing.assert_close(_MarginalLogMixture.apply(z, mean, logvar, log_w, 4), direct)
