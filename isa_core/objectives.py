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
``OBJECTIVES`` maps each ``Objective`` to its loss; the losses take their hyperparameters as
keywords (``beta``, ``gamma``, ``tc_estimator``, ``dataset_size``, ``kl_warmup``, ...), so a
training loop calls any of them the same way. ``DiscriminatorTrainer`` is FactorVAE's second
player: the discriminator and its own optimizer step.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from isa_core.aggregate import aggregate_log_densities
from isa_core.choices import Backend, Objective, TcEstimator
from isa_core.compiled import compile_errors, compiling, give_up_fused, wants_fused
from isa_core.models import gaussian_log_density
from isa_core.priors import LpNested

__all__ = [
    "OBJECTIVES",
    "Discriminator",
    "DiscriminatorTrainer",
    "bernoulli_log_likelihood",
    "discriminator_loss",
    "factorvae_loss",
    "permute_dims",
    "tcvae_loss",
    "vae_loss",
]


def bernoulli_log_likelihood(logits: Tensor, x: Tensor, backend: Backend = Backend.auto) -> Tensor:
    """log p(x|z) per image (B,), summed over pixels: Bernoulli with logits, in float32.

    ``logits`` may be bfloat16 (a decoder under autocast). ``backend`` follows
    ``isa_core.compiled``: the compiled path makes one pass forward and one backward, reading
    bf16 logits without a float32 copy; the eager one takes about six (5x slower at 2048x4096).
    """
    if x.requires_grad or not wants_fused(backend, logits.device.type, logits.numel()):
        # float32: a sum over thousands of pixels needs more than bf16's 8-bit mantissa
        per_pixel = F.binary_cross_entropy_with_logits(logits.float(), x, reduction="none")
        return -per_pixel.flatten(1).sum(-1)
    return _BernoulliLogLikelihood.apply(logits, x, backend)


def _likelihood_forward(logits: Tensor, x: Tensor) -> Tensor:
    """Σ over pixels of x l - softplus(l), per image, in float32 (softplus written stably)."""
    lf, xf = logits.flatten(1).float(), x.flatten(1).float()
    return (xf * lf - torch.clamp(lf, min=0) - torch.log1p(torch.exp(-lf.abs()))).sum(-1)


def _likelihood_backward(logits: Tensor, x: Tensor, grad: Tensor) -> Tensor:
    """d/dl of grad · log p(x|z): grad (x - sigmoid(l)), in the logits' dtype."""
    per_image = grad.view(-1, *([1] * (logits.dim() - 1)))
    return ((x.float() - torch.sigmoid(logits.float())) * per_image).to(logits.dtype)


@functools.cache
def _compiled_kernels() -> dict[str, Callable]:
    """The likelihood's kernels wrapped by torch.compile; each compiles once per shape."""
    return {
        "forward": torch.compile(_likelihood_forward, dynamic=False),
        "backward": torch.compile(_likelihood_backward, dynamic=False),
    }


class _BernoulliLogLikelihood(torch.autograd.Function):
    """The likelihood with compiled kernels both ways; eager ones if compiling fails (auto)."""

    @staticmethod
    def forward(ctx, logits: Tensor, x: Tensor, backend: Backend) -> Tensor:
        ctx.save_for_backward(logits, x)
        ctx.backend = backend
        return _run_kernel(ctx, "forward", logits, x)

    @staticmethod
    def backward(ctx, grad: Tensor):
        logits, x = ctx.saved_tensors
        return _run_kernel(ctx, "backward", logits, x, grad), None, None


def _run_kernel(ctx, name: str, *args: Tensor) -> Tensor:
    eager = {"forward": _likelihood_forward, "backward": _likelihood_backward}[name]
    if ctx.backend != Backend.eager:
        try:
            with compiling():
                return _compiled_kernels()[name](*args)
        except compile_errors() as error:  # no C++ compiler, unsupported platform, ...
            if ctx.backend == Backend.fused:
                raise
            give_up_fused(error, "likelihood")
            ctx.backend = Backend.eager
    return eager(*args)


def _standard_normal_kl(mean: Tensor, logvar: Tensor) -> Tensor:
    return 0.5 * (mean**2 + logvar.exp() - 1 - logvar).sum(-1)


def vae_loss(
    x: Tensor,
    logits: Tensor,
    z: Tensor,
    mean: Tensor,
    logvar: Tensor,
    prior: LpNested,
    *,
    beta: float = 1.0,
    kl_warmup: float = 1.0,
    closed_form_kl: bool = False,
    backend: Backend = Backend.auto,
    **_other_objectives: object,
) -> dict[str, Tensor]:
    """β-VAE (Eq. 2); KL by Monte Carlo, log q(z|x) - log p(z) (Eq. 12), or in closed form.

    ``kl_warmup`` in [0, 1] scales the regulariser early in training; ``closed_form_kl``
    needs N(0, I); ``backend`` (``isa_core.compiled``) computes the likelihood.
    """
    logpx = bernoulli_log_likelihood(logits, x, backend)
    if closed_form_kl:
        kl = _standard_normal_kl(mean, logvar)
    else:
        kl = gaussian_log_density(z, mean, logvar).sum(-1) - prior.log_prob(z)
    loss = -(logpx - kl_warmup * beta * kl).mean()
    return {"loss": loss, "logpx": logpx.mean(), "kl": kl.mean()}


def tcvae_loss(
    x: Tensor,
    logits: Tensor,
    z: Tensor,
    mean: Tensor,
    logvar: Tensor,
    prior: LpNested,
    *,
    dataset_size: int,
    beta: float = 1.0,
    tc_estimator: TcEstimator = TcEstimator.mss,
    kl_warmup: float = 1.0,
    backend: Backend = Backend.auto,
    **_other_objectives: object,
) -> dict[str, Tensor]:
    """β-TCVAE (Eq. 3): -[log p(x|z) - (MI + β TC + DW)], parts estimated on the minibatch.

    ``backend`` (``isa_core.compiled``) computes the likelihood and the TC estimator.
    """
    logpx = bernoulli_log_likelihood(logits, x, backend)
    log_qzx = gaussian_log_density(z, mean, logvar).sum(-1)
    log_pz = prior.log_prob(z)
    log_qz, log_qz_marginals = aggregate_log_densities(
        z, mean, logvar, dataset_size, tc_estimator, backend
    )
    log_prod = log_qz_marginals.sum(-1)
    mi = log_qzx - log_qz
    tc = log_qz - log_prod
    dw = log_prod - log_pz
    loss = -(logpx - kl_warmup * (mi + beta * tc + dw)).mean()
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
    *,
    discriminator: Discriminator,
    gamma: float = 1.0,
    kl_warmup: float = 1.0,
    backend: Backend = Backend.auto,
    **_other_objectives: object,
) -> dict[str, Tensor]:
    """FactorVAE: -[log p(x|z) - KL] + γ TC, TC ≈ mean(D(z)_0 - D(z)_1)."""
    parts = vae_loss(x, logits, z, mean, logvar, prior, kl_warmup=kl_warmup, backend=backend)
    scores = discriminator(z)
    tc = (scores[:, 0] - scores[:, 1]).mean()
    parts["loss"] = parts["loss"] + kl_warmup * gamma * tc
    parts["tc"] = tc
    return parts


def discriminator_loss(
    discriminator: Discriminator,
    z: Tensor,
    z_other: Tensor,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Cross-entropy of telling q(z) (class 0) from permuted samples of another batch (class 1)."""
    real = discriminator(z.detach())
    fake = discriminator(permute_dims(z_other.detach(), generator))
    zeros = torch.zeros(len(real), dtype=torch.long, device=real.device)
    ones = torch.ones(len(fake), dtype=torch.long, device=fake.device)
    return 0.5 * (F.cross_entropy(real, zeros) + F.cross_entropy(fake, ones))


class DiscriminatorTrainer:
    """FactorVAE's discriminator with its optimizer, one update per VAE step.

    Kim & Mnih's settings: Adam, lr 1e-4, betas (0.5, 0.9). It stays fp32 and outside autocast:
    its logits give the VAE loss's TC term, and it is tiny.
    """

    def __init__(self, latent_dim: int, device: torch.device, fused: bool = False) -> None:
        self.discriminator = Discriminator(latent_dim).to(device)
        self.optimizer = torch.optim.Adam(
            self.discriminator.parameters(), lr=1e-4, betas=(0.5, 0.9), fused=fused
        )

    def step(self, z: Tensor, z_other: Tensor, generator: torch.Generator | None) -> Tensor:
        """One update on q(z) samples ``z`` and another batch's ``z_other``; the loss (detached:
        it is a record of the step, not part of a graph)."""
        loss = discriminator_loss(self.discriminator, z, z_other, generator)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return loss.detach()


# Objective -> loss. Each takes (x, logits, z, mean, logvar, prior) and keyword hyperparameters,
# ignoring those of the other objectives, so a training loop calls every one the same way.
OBJECTIVES: dict[Objective, Callable[..., dict[str, Tensor]]] = {
    Objective.vae: vae_loss,
    Objective.tcvae: tcvae_loss,
    Objective.factorvae: factorvae_loss,
}
