r"""Training objectives: β-VAE, β-TCVAE, FactorVAE, with any L^p-nested prior (ISA-VAE, ISA-TCVAE).

Every objective is a pure function returning a dict of named scalars; ``loss`` is minimised and
the other entries (nats per image, averaged over the batch) are its parts.

* ``vae`` (Eq. 2 with the Monte-Carlo KL of Eq. 12):
  loss = -[log p(x|z) - β (log q(z|x) - log p(z))].
* ``tcvae`` (Eq. 3): the KL term splits into index-code mutual information, total correlation and
  dimension-wise KL, MI + β TC + DW with

      MI = log q(z|x) - log q(z),  TC = log q(z) - Σ_j log q(z_j),  DW = Σ_j log q(z_j) - log p(z),

  all at z ~ q(z|x). DW uses the joint log p(z), so an ISA prior (not factorised) is handled
  exactly; the three parts telescope to the KL term of ``vae``.
* ``factorvae``: the β = 1 VAE loss plus γ TC, TC estimated by a discriminator's logit difference
  (Kim & Mnih 2018); the discriminator learns to tell q(z) from its dimension-permuted version.

The aggregate posterior and its marginals are estimated on the minibatch (``aggregate``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from isa_core.aggregate import aggregate_log_densities
from isa_core.models import gaussian_log_density
from isa_core.priors import LpNested

__all__ = [
    "Discriminator",
    "bernoulli_log_likelihood",
    "discriminator_loss",
    "factorvae_loss",
    "permute_dims",
    "tcvae_loss",
    "vae_loss",
]


def bernoulli_log_likelihood(logits: Tensor, x: Tensor) -> Tensor:
    """log p(x|z) per image (B,), summed over pixels: Bernoulli with logits."""
    per_pixel = F.binary_cross_entropy_with_logits(logits, x, reduction="none")
    return -per_pixel.flatten(1).sum(-1)


def _standard_normal_kl(mean: Tensor, logvar: Tensor) -> Tensor:
    return 0.5 * (mean**2 + logvar.exp() - 1 - logvar).sum(-1)


def vae_loss(
    x: Tensor,
    logits: Tensor,
    z: Tensor,
    mean: Tensor,
    logvar: Tensor,
    prior: LpNested,
    beta: float = 1.0,
    weight: float = 1.0,
    closed_form_kl: bool = False,
) -> dict[str, Tensor]:
    """β-VAE (Eq. 2); KL by Monte Carlo, log q(z|x) - log p(z) (Eq. 12), or in closed form.

    ``weight`` multiplies the regulariser (the KL warm-up); ``closed_form_kl`` needs N(0, I).
    """
    logpx = bernoulli_log_likelihood(logits, x)
    if closed_form_kl:
        kl = _standard_normal_kl(mean, logvar)
    else:
        kl = gaussian_log_density(z, mean, logvar).sum(-1) - prior.log_prob(z)
    loss = -(logpx - weight * beta * kl).mean()
    return {"loss": loss, "logpx": logpx.mean(), "kl": kl.mean()}


def tcvae_loss(
    x: Tensor,
    logits: Tensor,
    z: Tensor,
    mean: Tensor,
    logvar: Tensor,
    prior: LpNested,
    dataset_size: int,
    beta: float = 1.0,
    estimator: str = "mss",
    weight: float = 1.0,
) -> dict[str, Tensor]:
    """β-TCVAE (Eq. 3): -[log p(x|z) - (MI + β TC + DW)], parts estimated on the minibatch."""
    logpx = bernoulli_log_likelihood(logits, x)
    log_qzx = gaussian_log_density(z, mean, logvar).sum(-1)
    log_pz = prior.log_prob(z)
    log_qz, log_qz_marginals = aggregate_log_densities(z, mean, logvar, dataset_size, estimator)
    log_prod = log_qz_marginals.sum(-1)
    mi = log_qzx - log_qz
    tc = log_qz - log_prod
    dw = log_prod - log_pz
    loss = -(logpx - weight * (mi + beta * tc + dw)).mean()
    return {
        "loss": loss,
        "logpx": logpx.mean(),
        "kl": (log_qzx - log_pz).mean(),
        "mi": mi.mean(),
        "tc": tc.mean(),
        "dwkl": dw.mean(),
    }


class Discriminator(nn.Module):
    """FactorVAE's discriminator as printed in the paper's A.4: K -> 1000 -> 2, LeakyReLU(0.2)."""

    def __init__(self, latent_dim: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(latent_dim, 1000), nn.LeakyReLU(0.2, True), nn.Linear(1000, 2)
        )

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z)


def permute_dims(z: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Shuffle each latent dimension independently across the batch: samples of prod_j q(z_j)."""
    batch, dims = z.shape
    order = torch.stack(
        [torch.randperm(batch, generator=generator) for _ in range(dims)], dim=1
    ).to(z.device)
    return torch.gather(z, 0, order)


def factorvae_loss(
    x: Tensor,
    logits: Tensor,
    z: Tensor,
    mean: Tensor,
    logvar: Tensor,
    prior: LpNested,
    discriminator: Discriminator,
    gamma: float,
    weight: float = 1.0,
) -> dict[str, Tensor]:
    """FactorVAE: -[log p(x|z) - KL] + γ TC, TC ≈ mean(D(z)_0 - D(z)_1)."""
    parts = vae_loss(x, logits, z, mean, logvar, prior, beta=1.0, weight=weight)
    scores = discriminator(z)
    tc = (scores[:, 0] - scores[:, 1]).mean()
    parts["loss"] = parts["loss"] + weight * gamma * tc
    parts["tc"] = tc
    return parts


def discriminator_loss(
    discriminator: Discriminator, z: Tensor, z_other: Tensor, generator=None
) -> Tensor:
    """Cross-entropy of telling q(z) (class 0) from permuted samples of another batch (class 1)."""
    real = discriminator(z.detach())
    fake = discriminator(permute_dims(z_other.detach(), generator))
    zeros = torch.zeros(len(real), dtype=torch.long, device=real.device)
    ones = torch.ones(len(fake), dtype=torch.long, device=fake.device)
    return 0.5 * (F.cross_entropy(real, zeros) + F.cross_entropy(fake, ones))
