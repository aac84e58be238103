"""TorchInductor-compiled kernels of the TC estimator (``aggregate``'s ``fused`` backend): C++
on the CPU, Triton on CUDA.

The same values as ``aggregate``'s eager row chunks, without ever materialising an (M, M, K)
tensor: one pass forward, two backward. Tensors are transposed to (K, M) so the reduced axis is
contiguous and vectorises. The sums over the other batch members run over a rolled view, entry
(k, i, s) = x[k, (i + 1 + s) mod M] for s < M - 1: it skips j = i without a per-element index
test (which costs a third of the time); the own term is added separately, exactly. Compile
failures are raised to the caller, which decides (``isa_core.compiled``).
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch
from torch import Tensor

from isa_core.aggregate import EXP_FLOOR, joint_backward, normalise_joint
from isa_core.compiled import compiling

__all__ = ["fused_backward", "fused_forward"]


def _others(xt: Tensor) -> Tensor:
    """(K, M) -> (K, M, M - 1) view over the other batch members, in rolled order."""
    dims, batch = xt.shape
    doubled = torch.cat([xt, xt], 1)  # (K, 2M)
    return torch.as_strided(doubled, (dims, batch, batch - 1), (2 * batch, 1, 1), 1)


def _forward_kernel(zt, meant, precisiont, offsett, own, others):
    d_own = zt - meant
    g_own = offsett - 0.5 * d_own * d_own * precisiont  # log N(z_ik; μ_ik, σ_ik²), (K, M)
    d = zt[:, :, None] - _others(meant)  # (K, i, s)
    g = _others(offsett) - 0.5 * d * d * _others(precisiont)
    # Σ_j w_ij e^g_ijk = w_ii e^g_iik (1 + Σ_{j≠i} (w_ij / w_ii) e^(g_ijk - g_iik))
    relative = torch.clamp(g - g_own[:, :, None] + (others - own), min=EXP_FLOOR)
    marginals = g_own + own + torch.log1p(torch.exp(relative).sum(-1))
    # The joint in the plain (i, j) order, for the matrix products of the backward pass.
    d_all = zt[:, :, None] - meant[:, None, :]  # (K, i, j)
    joint = (offsett[:, None, :] - 0.5 * d_all * d_all * precisiont[:, None, :]).sum(0)
    index = torch.arange(zt.shape[1], device=zt.device)
    joint = joint + torch.where(index[:, None] == index[None, :], own, others)  # (M, M)
    return marginals, *normalise_joint(joint)


def _own_weights(zt, meant, precisiont, offsett, own, marginalst):
    """The own term's softmax weight t_iik and d, d·a at j = i, all (K, M)."""
    d = zt - meant
    da = d * precisiont
    return torch.exp(offsett - 0.5 * d * da + own - marginalst), d, da


def _grad_z_kernel(zt, meant, precisiont, offsett, own, others, marginalst, gradt):
    t_own, _, da_own = _own_weights(zt, meant, precisiont, offsett, own, marginalst)
    d = zt[:, :, None] - _others(meant)  # (K, i, s)
    da = d * _others(precisiont)
    log_t = _others(offsett) - 0.5 * d * da + others - marginalst[:, :, None]
    t = torch.exp(torch.clamp(log_t, min=EXP_FLOOR))
    return -gradt * ((t * da).sum(-1) + t_own * da_own)


def _grad_posterior_kernel(zt, meant, precisiont, offsett, own, others, marginalst, gradt):
    t_own, d_own, da_own = _own_weights(zt, meant, precisiont, offsett, own, marginalst)
    t_own = t_own * gradt
    d = _others(zt) - meant[:, :, None]  # (K, j, s): rows i = j + 1 + s, w_ij = w_ji
    da = d * precisiont[:, :, None]
    log_t = offsett[:, :, None] - 0.5 * d * da + others - _others(marginalst)
    t = torch.exp(torch.clamp(log_t, min=EXP_FLOOR)) * _others(gradt)
    grad_mean = (t * da).sum(-1) + t_own * da_own
    grad_logvar = 0.5 * ((t * (d * da - 1)).sum(-1) + t_own * (d_own * da_own - 1))
    return grad_mean, grad_logvar


@functools.cache
def _compiled() -> dict[str, Callable]:
    """The kernels wrapped by torch.compile, once per process; each compiles per shape."""
    return {
        "forward": torch.compile(_forward_kernel, dynamic=False),
        "grad_z": torch.compile(_grad_z_kernel, dynamic=False),
        "grad_posterior": torch.compile(_grad_posterior_kernel, dynamic=False),
        "joint_backward": torch.compile(joint_backward, dynamic=False),
    }


def _scalars(log_weights, like: Tensor) -> tuple[Tensor, Tensor]:
    return tuple(torch.tensor(value, dtype=like.dtype, device=like.device) for value in log_weights)


def fused_forward(z, mean, precision, offset, log_weights):
    """(marginals (M, K), log q(z_i) (M,), joint softmax (M, M)), as ``_eager_forward``."""
    transposed = [t.T.contiguous() for t in (z, mean, precision, offset)]
    with compiling():
        marginals_t, log_qz, joint_softmax = _compiled()["forward"](
            *transposed, *_scalars(log_weights, z)
        )
    return marginals_t.T.contiguous(), log_qz, joint_softmax


def fused_backward(z, mean, precision, offset, marginals, grad, log_weights, joint_args):
    """(grad z, grad μ, grad log σ²) of the marginals and of the joint, as the eager pair."""
    transposed = [t.T.contiguous() for t in (z, mean, precision, offset)]
    tail = [t.T.contiguous() for t in (marginals, grad)]
    args = (*transposed, *_scalars(log_weights, z), *tail)
    with compiling():
        grad_z = _compiled()["grad_z"](*args)
        grad_mean, grad_logvar = _compiled()["grad_posterior"](*args)
        joint_grads = _compiled()["joint_backward"](*joint_args)
    grads = grad_z.T.contiguous(), grad_mean.T.contiguous(), grad_logvar.T.contiguous()
    return grads, joint_grads
