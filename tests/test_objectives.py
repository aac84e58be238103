"""Objectives against independent computations on small cases."""

from __future__ import annotations

import math

import pytest
import scipy.stats as st
import torch

from isa_core.models import gaussian_log_density, reparameterize
from isa_core.objectives import (
    Discriminator,
    discriminator_loss,
    factorvae_loss,
    permute_dims,
    tcvae_loss,
    vae_loss,
)
from isa_core.priors import LpNested, LpTree


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
