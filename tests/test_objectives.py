"""Objectives against independent computations on small cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.special as sc
import scipy.stats as st
import torch

from isa_core.choices import Objective
from isa_core.models import gaussian_log_density, reparameterize
from isa_core.objectives import (
    OBJECTIVES,
    Discriminator,
    DiscriminatorTrainer,
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
        a = vae_loss(x, logits, z, mean, logvar, isa, beta=beta)
        b = vae_loss(x, logits, z, mean, logvar, normal, beta=beta)
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


def reference_tc_parts(z, mean, logvar, p: float, scale: float) -> dict[str, float]:
    """MI, TC and DW with scipy, q(z) = (1/N) Σ_n q(z|x_n) over a data set that is the batch,
    and the prior p(z) = Π_j gennorm(z_j; p, s^(1/p)) (the ISA tree with p0 = p_i = p)."""
    z, mean, std = z.numpy(), mean.numpy(), np.exp(0.5 * logvar.numpy())
    n = len(z)
    # log q(z_ik | x_n) for every sample i, data point n and dimension k: (i, n, k)
    pairs = st.norm.logpdf(z[:, None, :], loc=mean[None], scale=std[None])
    log_qzx = np.diagonal(pairs.sum(-1))
    log_qz = sc.logsumexp(pairs.sum(-1), axis=1) - math.log(n)
    log_marginals = (sc.logsumexp(pairs, axis=1) - math.log(n)).sum(-1)
    log_pz = st.gennorm.logpdf(z, p, scale=scale ** (1 / p)).sum(-1)
    return {
        "mi": float(np.mean(log_qzx - log_qz)),
        "tc": float(np.mean(log_qz - log_marginals)),
        "dwkl": float(np.mean(log_marginals - log_pz)),
        "kl": float(np.mean(log_qzx - log_pz)),
    }


@pytest.mark.parametrize("estimator", ["mss", "mws"])
def test_tc_parts_match_scipy_when_the_batch_is_the_data_set(estimator: str) -> None:
    """Both estimators are exact for a batch that is the whole data set, so every part and the
    loss must equal a scipy computation of the aggregate posterior from its definition."""
    x, logits, z, mean, logvar = batch_case(k=3, b=24)
    prior = LpNested(LpTree.isa((1, 2), 1.6, 1.6), scale=1.5)
    beta = 3.0
    parts = tcvae_loss(
        x, logits, z, mean, logvar, prior, dataset_size=len(z), beta=beta, tc_estimator=estimator
    )
    reference = reference_tc_parts(z, mean, logvar, 1.6, 1.5)
    for name, value in reference.items():
        assert float(parts[name]) == pytest.approx(value, rel=1e-9, abs=1e-9), name
    log_px = (
        (x.numpy() * sc.log_expit(logits.numpy()) + (1 - x.numpy()) * sc.log_expit(-logits.numpy()))
        .reshape(len(x), -1)
        .sum(-1)
        .mean()
    )
    penalty = reference["mi"] + beta * reference["tc"] + reference["dwkl"]
    assert float(parts["loss"]) == pytest.approx(-(log_px - penalty), rel=1e-9)


def test_the_registry_calls_every_objective_the_same_way() -> None:
    x, logits, z, mean, logvar = batch_case()
    prior = LpNested(LpTree.normal(4))
    hyper = dict(beta=2.0, gamma=3.0, tc_estimator="mss", dataset_size=1000, kl_warmup=0.5)
    disc = Discriminator(4).double()
    for objective, loss in OBJECTIVES.items():
        parts = loss(x, logits, z, mean, logvar, prior, discriminator=disc, **hyper)
        assert objective in Objective and torch.isfinite(parts["loss"])
    vae = OBJECTIVES[Objective.vae](x, logits, z, mean, logvar, prior, **hyper)
    half_kl = -(vae["logpx"] - 0.5 * 2.0 * vae["kl"])  # the warm-up scales β KL
    torch.testing.assert_close(vae["loss"], half_kl)
    with pytest.raises(TypeError):  # hyperparameters are keyword-only
        vae_loss(x, logits, z, mean, logvar, prior, 2.0)


def _constant_discriminator(a: float, b: float) -> Discriminator:
    """A discriminator whose scores are (a, b) for every z: its last layer is a bias only."""
    disc = Discriminator(4).double()
    last = disc.net[-1]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.copy_(torch.tensor([a, b], dtype=torch.float64))
    return disc


@pytest.mark.parametrize(("a", "b", "gamma", "warmup"), [(0.7, -0.2, 10.0, 1.0), (2, 3, 4, 0.25)])
def test_factorvae_tc_is_the_discriminators_logit_difference(a, b, gamma, warmup) -> None:
    """With scores (a, b) at every z the density-ratio estimate of TC is a - b exactly, and the
    loss is the β = 1 VAE loss plus γ (a - b), both scaled by the warm-up."""
    x, logits, z, mean, logvar = batch_case()
    prior = LpNested(LpTree.normal(4))
    disc = _constant_discriminator(a, b)
    parts = factorvae_loss(
        x, logits, z, mean, logvar, prior, discriminator=disc, gamma=gamma, kl_warmup=warmup
    )
    assert float(parts["tc"].detach()) == pytest.approx(a - b, abs=1e-12)
    base = vae_loss(x, logits, z, mean, logvar, prior, kl_warmup=warmup)["loss"]
    expected = float(base.detach()) + warmup * gamma * (a - b)
    assert float(parts["loss"].detach()) == pytest.approx(expected)


def test_discriminator_loss_and_permutation() -> None:
    z = batch_case()[2]
    # Scores (a, b) everywhere: cross-entropy -log softmax, of class 0 and of class 1, averaged.
    disc = _constant_discriminator(1.0, -1.0)
    loss = discriminator_loss(disc, z, z.flip(0), torch.Generator().manual_seed(0))
    expected = 0.5 * (-sc.log_softmax([1.0, -1.0])[0] - sc.log_softmax([1.0, -1.0])[1])
    assert float(loss.detach()) == pytest.approx(expected)
    permuted = permute_dims(z, torch.Generator().manual_seed(1))
    for k in range(4):  # each column is a permutation of the original column
        torch.testing.assert_close(permuted[:, k].sort().values, z[:, k].sort().values)
    assert not torch.equal(permuted, z)


def test_the_discriminator_learns_to_tell_q_z_from_its_permutation() -> None:
    """Two strongly correlated latents: a few updates lower the discriminator's loss."""
    g = torch.Generator().manual_seed(3)
    trainer = DiscriminatorTrainer(2, torch.device("cpu"))
    base = torch.randn(256, 1, generator=g)
    z = torch.cat([base, base + 0.05 * torch.randn(256, 1, generator=g)], 1)
    losses = [float(trainer.step(z, z, g)) for _ in range(60)]
    assert losses[-1] < losses[0] - 0.1
