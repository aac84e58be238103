r"""Minibatch estimates of the aggregate posterior q(z) and its marginals (Chen et al. 2018).

q(z) = (1/N) Σ_n q(z|x_n) over a data set of size N is estimated on a minibatch of M posteriors,
at the batch samples z_i ~ q(z|x_i), as a weighted mixture:

    log q(z_i)   ≈ log Σ_j w_ij Π_k N(z_ik; μ_jk, σ_jk²)      (joint, M values)
    log q(z_ik)  ≈ log Σ_j w_ij N(z_ik; μ_jk, σ_jk²)          (marginals, M·K values)

* ``mss`` (minibatch stratified sampling): x_i is its own stratum of weight 1/N, and the other
  M - 1 batch members are a uniform sample of the N - 1 other points: weight (N - 1) / (N (M - 1))
  each. Unbiased for q(z_i), and exact when the batch is the whole data set. (Chen et al. 2018,
  App. C.2, give one of the others the weight (N - M') / (N M') and the rest 1/M', M' = M - 1,
  also unbiased; the widely copied code puts the own-sample weight in whole columns instead of
  on the diagonal.)
* ``mws`` (minibatch weighted sampling): every batch member weighs 1/M. Chen et al.'s printed
  estimator uses 1/(N M), which shifts log q(z) by -log N (and Σ_k log q(z_k) by -K log N): a
  constant that leaves gradients unchanged but biases the reported TC.

The marginals take M·M·K exponentials per step (84 million for the paper's M = 2048, K = 20): they
are the whole cost of β-TCVAE over β-VAE. Two backends compute them:

* ``eager``: row chunks of torch operations, on any device;
* ``fused``: on the CPU, loop nests compiled by TorchInductor (``aggregate_fused``) that never
  materialise an (M, M, K) tensor: one pass forward, two backward, about 4x faster than eager.
  It needs a C++ compiler; ``auto`` chooses, and falls back, by the rule of ``isa_core.compiled``.

Both have a hand-written backward pass. With g_ijk = log N(z_ik; μ_jk, σ_jk²), d = z_ik - μ_jk
and a = 1/σ_jk², every gradient is a weighted sum of ∂g: ∂g/∂z_ik = -d a, ∂g/∂μ_jk = d a,
∂g/∂log σ_jk² = (d² a - 1)/2. The marginals weigh term (i, j, k) by their softmax over j; the
joint weighs it by a k-independent softmax s_ij, so its sums are matrix products, with the
own term j = i apart (expanding (z - μ)² would cancel digits there).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from isa_core.choices import Backend, TcEstimator, parse_choice
from isa_core.compiled import (
    FUSED_DEVICES,
    check_backend,
    compile_errors,
    give_up_fused,
    wants_fused,
)
from isa_core.errors import IsaError

__all__ = [
    "aggregate_log_densities",
    "log_importance_weights",
]

_LOG_2PI = math.log(2 * math.pi)
# Every exponent here is a log-weight relative to a sum that is >= 1. Below -80 a term cannot
# matter (M e^-80 < 1e-31), and exp of such arguments takes a slow path (15-30x on AVX-512 for
# eager torch.exp, 3x compiled), so they are clamped there.
EXP_FLOOR = -80.0


def _exp(log_terms: Tensor) -> Tensor:
    """exp, in place, of log-terms clamped at EXP_FLOOR."""
    return log_terms.clamp_(min=EXP_FLOOR).exp_()


def log_importance_weights(
    batch: int, dataset_size: int, estimator: TcEstimator
) -> tuple[float, float]:
    """(log w_ii, log w_ij for j ≠ i): the weight of z_i's own posterior and of each other one."""
    estimator = parse_choice(TcEstimator, "tc_estimator", estimator)
    if batch < 2:
        raise IsaError("the TC estimators need a batch of at least 2 images")
    if estimator == TcEstimator.mws:
        return -math.log(batch), -math.log(batch)
    if dataset_size < batch:
        raise IsaError(f"the batch ({batch}) is larger than the data set ({dataset_size})")
    others = math.log(dataset_size - 1) - math.log(dataset_size) - math.log(batch - 1)
    return -math.log(dataset_size), others


def log_weight_matrix(
    rows: range, batch: int, log_weights: tuple[float, float], like: Tensor
) -> Tensor:
    """log w_ij for the given rows i and every j (len(rows), M)."""
    own, others = log_weights
    block = torch.full((len(rows), batch), others, dtype=like.dtype, device=like.device)
    index = torch.arange(len(rows), device=like.device)
    block[index, index + rows.start] = own
    return block


def aggregate_log_densities(
    z: Tensor,
    mean: Tensor,
    logvar: Tensor,
    dataset_size: int,
    estimator: TcEstimator = TcEstimator.mss,
    backend: Backend = Backend.auto,
) -> tuple[Tensor, Tensor]:
    """Minibatch estimates of log q(z_i) (M,) and log q(z_ik) per dimension (M, K)."""
    backend = check_backend(backend)
    batch, dims = z.shape
    log_weights = log_importance_weights(batch, dataset_size, estimator)
    if backend == Backend.fused and z.device.type not in FUSED_DEVICES:
        raise IsaError(
            f"the fused backend runs on {' and '.join(FUSED_DEVICES)}, not "
            f"{z.device.type}; use eager (or auto)"
        )
    if backend == Backend.auto and not wants_fused(backend, z.device.type, batch * batch * dims):
        backend = Backend.eager  # M·M·K terms, the marginals' elementwise work, are too few
    return _AggregateLogDensities.apply(z, mean, logvar, log_weights, backend)


def _fused_module():
    """The compiled kernels' module, imported on first use (it loads TorchInductor's config)."""
    from isa_core import aggregate_fused

    return aggregate_fused


class _AggregateLogDensities(torch.autograd.Function):
    """The estimates with a hand-written backward; ``backend`` auto here means try fused."""

    @staticmethod
    def forward(ctx, z: Tensor, mean: Tensor, logvar: Tensor, log_weights, backend: Backend):
        precision = torch.exp(-logvar)  # (M, K)
        offset = -0.5 * (_LOG_2PI + logvar)  # (M, K)
        args = (z, mean, precision, offset, log_weights)
        result = None
        if backend != Backend.eager:
            try:
                result = _fused_module().fused_forward(*args)
            except compile_errors() as error:  # no C++ compiler, unsupported platform, ...
                if backend == Backend.fused:
                    raise
                give_up_fused(error, "TC estimator")
                backend = Backend.eager
        marginals, log_qz, joint_softmax = result if result else _eager_forward(*args)
        ctx.save_for_backward(z, mean, precision, offset, marginals, joint_softmax)
        ctx.log_weights, ctx.backend = log_weights, backend
        return log_qz, marginals

    @staticmethod
    def backward(ctx, grad_joint: Tensor, grad_marginals: Tensor):
        z, mean, precision, offset, marginals, joint_softmax = ctx.saved_tensors
        args = (z, mean, precision, offset, marginals, grad_marginals, ctx.log_weights)
        joint_args = (z, mean, precision, joint_softmax, grad_joint)
        grads = None
        if ctx.backend != Backend.eager:
            try:
                grads, joint_grads = _fused_module().fused_backward(*args, joint_args)
            except compile_errors() as error:
                if ctx.backend == Backend.fused:
                    raise
                give_up_fused(error, "TC estimator")
                grads = None
        if not grads:
            grads = _eager_backward(*args)
            joint_grads = joint_backward(*joint_args)
        grad_z, grad_mean, grad_logvar = (a + b for a, b in zip(grads, joint_grads, strict=True))
        return grad_z, grad_mean, grad_logvar, None, None


def normalise_joint(joint: Tensor) -> tuple[Tensor, Tensor]:
    """log Σ_j exp(joint_ij) (M,) and the softmax over j (M, M) of log w_ij + Σ_k g_ijk."""
    peak = joint.amax(1, keepdim=True)
    terms = torch.exp(torch.clamp(joint - peak, min=EXP_FLOOR))
    total = terms.sum(1, keepdim=True)
    return (peak + torch.log(total)).squeeze(1), terms / total


def joint_backward(z, mean, precision, joint_softmax, grad_joint):
    """Gradients of Σ_i grad_i log q(z_i) with respect to z, μ and log σ².

    The weights s_ij do not depend on k, so the sums over i or j are matrix products of s with
    z, z², μa, a. Expanding (z_ik - μ_jk)² that way cancels digits when z_ik ≈ μ_jk, which is
    the rule for the own term j = i: it is computed directly, the others by the products.
    """
    s = joint_softmax * grad_joint[:, None]  # (M, M)
    own = torch.diagonal(s)[:, None]  # (M, 1)
    index = torch.arange(len(s), device=s.device)
    others = torch.where(index[:, None] == index[None, :], 0.0, s)
    d = z - mean
    by_row = others @ torch.cat([precision, mean * precision], 1)  # Σ_j s_ij (a, μa)_jk
    by_column = others.T @ torch.cat([z, z * z, torch.ones_like(z[:, :1])], 1)
    dims = z.shape[1]
    sz, szz, mass = by_column[:, :dims], by_column[:, dims : 2 * dims], by_column[:, -1:]
    grad_z = by_row[:, dims:] - z * by_row[:, :dims] - own * d * precision
    grad_mean = precision * (sz - mean * mass) + own * d * precision
    squares = precision * (szz - 2 * mean * sz + mean * mean * mass)
    grad_logvar = 0.5 * (squares - mass + own * (d * d * precision - 1))
    return grad_z, grad_mean, grad_logvar


def _chunk_rows(z: Tensor, chunk_terms: int | None = None) -> int:
    """Rows per chunk so that a (rows, M, K) block stays cache-sized on the CPU (1 MB)."""
    batch, dims = z.shape
    if chunk_terms is None:
        chunk_terms = 1 << 18 if z.device.type == "cpu" else 1 << 25
    return max(1, chunk_terms // (batch * dims))


def _eager_forward(z, mean, precision, offset, log_weights, chunk_terms: int | None = None):
    """(marginals (M, K), log q(z_i) (M,), joint softmax (M, M)) in row chunks."""
    batch = len(z)
    chunk = _chunk_rows(z, chunk_terms)
    # Shift each sum by its own-sample term (j = i), which is part of it: the sum is then >= 1,
    # and no other term can overflow unless two posterior widths differ by a factor e^80.
    own = offset - 0.5 * (z - mean) ** 2 * precision + log_weights[0]  # (M, K)
    marginals = torch.empty_like(z)
    joint = torch.empty(batch, batch, dtype=z.dtype, device=z.device)
    for start in range(0, batch, chunk):
        rows = range(start, min(start + chunk, batch))
        d = z[start : rows.stop, None, :] - mean[None]  # (c, M, K)
        g = d.mul_(d).mul_(precision).mul_(-0.5).add_(offset)  # log N(z_ik; μ_jk, σ_jk²)
        joint[start : rows.stop] = g.sum(-1)
        g += log_weight_matrix(rows, batch, log_weights, z)[:, :, None]
        total = _exp(g.sub_(own[start : rows.stop, None, :])).sum(1)
        marginals[start : rows.stop] = total.log_().add_(own[start : rows.stop])
    joint += log_weight_matrix(range(batch), batch, log_weights, joint)
    return marginals, *normalise_joint(joint)


def _eager_backward(z, mean, precision, offset, marginals, grad, log_weights):
    """Gradients of Σ_ik grad_ik · marginal_ik with respect to z, μ and log σ², in row chunks."""
    batch = len(z)
    chunk = _chunk_rows(z)
    grad_z = torch.empty_like(z)
    grad_mean = torch.zeros_like(mean)
    grad_logvar = torch.zeros_like(mean)
    for start in range(0, batch, chunk):
        rows = range(start, min(start + chunk, batch))
        d = z[start : rows.stop, None, :] - mean[None]  # (c, M, K)
        da = d * precision
        e = (d * da).mul_(-0.5).add_(offset)
        e += log_weight_matrix(rows, batch, log_weights, z)[:, :, None]
        t = _exp(e.sub_(marginals[start : rows.stop, None, :]))
        t *= grad[start : rows.stop, None, :]  # the softmax over j, times the incoming gradient
        u = t * da
        grad_z[start : rows.stop] = -u.sum(1)
        grad_mean += u.sum(0)
        grad_logvar += 0.5 * (u.mul_(d).sum(0) - t.sum(0))
    return grad_z, grad_mean, grad_logvar
