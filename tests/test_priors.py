"""The L^p-nested prior against independent references: quadrature, scipy, closed forms."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.special as sc
import scipy.stats as st
import torch
from hypothesis import given, settings
from hypothesis import strategies as hst

from isa_core.errors import IsaError
from isa_core.priors import (
    LpNested,
    LpNestedPrior,
    LpTree,
    PriorSpec,
    sample_isa,
    sample_nested,
)

# Trees and scales used by the generic checks: p < 1, p > 2, mixed nodes, Eq. 6.
EXAMPLES = [
    ("0.7(1)", 2.0),
    ("3.5(1)", 0.7),
    ("1(2)", 2.0),
    ("0.8(2)", 1.5),
    ("4(2)", 2.0),
    ("2.1(2.2(2))", 2.0),
    ("2.1(1,2.2(2))", 2.0),  # Eq. 6
    ("0.9(1,3(2))", 1.3),
    ("3(1,0.8(2))", 2.5),
    ("1.5(3)", 2.0),
    ("2(1.3(3))", 0.8),
    ("2.1(2.2(4),2.2(4),2.2(4),2.2(4),2.2(4))", 2.0),
    ("2.1(2.2(4),1.9(4),2(3))", 2.0),
    ("1.2(2(2),0.8(1,3(2)),1)", 1.0),
]


def reference_power_f(tree: LpTree, z: np.ndarray) -> np.ndarray:
    """f(z)^p0 by the plain bottom-up definition: each node the L^p norm of its children."""

    def value(node: LpTree, start: int) -> tuple[np.ndarray, int]:
        total = np.zeros(z.shape[0])
        for child in node.children:
            if isinstance(child, LpTree):
                v, start = value(child, start)
            else:
                total += (np.abs(z[:, start : start + child]) ** node.p).sum(-1)
                start += child
                continue
            total += v**node.p
        return total ** (1.0 / node.p), start

    f, _ = value(tree, 0)
    return f**tree.p


def quadrature_mass(tree: LpTree, scale: float, points: int) -> float:
    """Integrate exp(log_prob) over R^n on a grid z = t^3 (dense near 0, far-reaching)."""
    prior = LpNested(tree, scale=scale)
    # Beyond |z| = reach the density is below e^-40 of its peak for every example.
    reach = max((40.0 * scale) ** (1.0 / p) for p in tree.exponents) * 1.5
    t = np.linspace(-(reach ** (1 / 3)), reach ** (1 / 3), points)
    weights = np.full(points, t[1] - t[0])
    weights[[0, -1]] *= 0.5
    jac = 3 * t**2 * weights  # dz = 3 t^2 dt, trapezoid weights
    z1 = t**3
    grids = np.meshgrid(*([z1] * tree.n), indexing="ij")
    jacobian = np.ones_like(grids[0])
    for axis in range(tree.n):
        shape = [1] * tree.n
        shape[axis] = points
        jacobian = jacobian * jac.reshape(shape)
    z = torch.from_numpy(np.stack(grids, -1))
    density = prior.log_prob(z).exp().numpy()
    return float((density * jacobian).sum())


@pytest.mark.parametrize(("spec", "scale"), [e for e in EXAMPLES if LpTree.parse(e[0]).n <= 3])
def test_density_integrates_to_one(spec: str, scale: float) -> None:
    tree = LpTree.parse(spec)
    points = {1: 20001, 2: 1201, 3: 221}[tree.n]
    assert quadrature_mass(tree, scale, points) == pytest.approx(1.0, abs=1e-3)


@pytest.mark.parametrize("p", [0.5, 1.0, 1.5, 2.0, 2.2, 4.0])
@pytest.mark.parametrize("scale", [0.5, 2.0, 3.0])
def test_single_node_is_scipy_gennorm(p: float, scale: float) -> None:
    z = np.random.default_rng(0).standard_normal((50, 4)) * 2
    ours = LpNested(LpTree.gennorm(4, p), scale=scale).log_prob(torch.from_numpy(z)).numpy()
    ref = st.gennorm.logpdf(z, beta=p, scale=scale ** (1 / p)).sum(-1)
    np.testing.assert_allclose(ours, ref, rtol=1e-12, atol=1e-12)


def test_p2_s2_is_standard_normal_including_isa_form() -> None:
    z = np.random.default_rng(1).standard_normal((100, 6))
    ref = st.norm.logpdf(z).sum(-1)
    for tree in (LpTree.normal(6), LpTree.isa((2, 3, 1), 2.0, 2.0)):
        got = LpNested(tree, scale=2.0).log_prob(torch.from_numpy(z)).numpy()
        np.testing.assert_allclose(got, ref, rtol=1e-12)


def lp_subspace_log_density(z: np.ndarray, p: float, p0: float, scale: float) -> np.ndarray:
    """log of exp(-||z||_p^p0 / s) / Z, Z from the volume of the unit L^p ball (closed form)."""
    k = z.shape[-1]
    log_ball = k * math.log(2 * math.gamma(1 + 1 / p)) - sc.gammaln(1 + k / p)
    log_radial = math.log(k) + (k / p0) * math.log(scale) + sc.gammaln(k / p0) - math.log(p0)
    norm = (np.abs(z) ** p).sum(-1) ** (1 / p)
    return -(norm**p0) / scale - log_ball - log_radial


@pytest.mark.parametrize(
    ("layout", "p0", "p1", "scale"),
    [
        ((4, 4, 4, 4, 4), 2.1, 2.2, 2.0),
        ((4, 4, 3), 2.1, [2.2, 1.9, 0.7], 1.3),
        ((2, 1), 0.8, 3.0, 2.0),
    ],
)
def test_subspaces_factorize(layout, p0, p1, scale) -> None:
    tree = LpTree.isa(layout, p0, p1)
    z = np.random.default_rng(2).standard_normal((64, tree.n)) * 1.5
    joint = LpNested(tree, scale=scale).log_prob(torch.from_numpy(z)).numpy()
    p_sub = [p1] * len(layout) if isinstance(p1, float) else p1
    parts = sum(
        lp_subspace_log_density(z[:, list(sub)], p, p0, scale)
        for sub, p in zip(tree.subspaces, p_sub, strict=True)
    )
    np.testing.assert_allclose(joint, parts, rtol=1e-10)


@pytest.mark.parametrize(("spec", "scale"), EXAMPLES)
def test_power_f_matches_definition(spec: str, scale: float) -> None:
    tree = LpTree.parse(spec)
    z = np.random.default_rng(3).standard_normal((32, tree.n)) * 3
    got = LpNested(tree, scale=scale).power_f(torch.from_numpy(z)).numpy()
    np.testing.assert_allclose(got, reference_power_f(tree, z), rtol=1e-10)


def test_single_child_nodes_change_nothing() -> None:
    """Wrapping subspaces in single-child nodes keeps f and S_f (general path vs ISA path)."""
    fast = LpTree.parse("2.1(2.2(3),1.7(3))")
    padded = LpTree.parse("2.1(0.9(2.2(3)),5(1.7(3)))")
    z = torch.randn(40, 6, dtype=torch.float64)
    np.testing.assert_allclose(
        LpNested(fast).log_prob(z).numpy(), LpNested(padded).log_prob(z).numpy(), rtol=1e-12
    )


def test_float32_and_large_values_are_stable() -> None:
    tree = LpTree.isa((4,) * 5, 2.1, 2.2)
    prior = LpNested(tree)
    big = torch.full((3, 20), 1e3, dtype=torch.float64)
    big[1] *= -1
    big[2, ::2] = 0.0
    value = prior.log_prob(big)
    assert torch.isfinite(value).all()
    expected = prior.log_normalizer() - torch.from_numpy(reference_power_f(tree, big.numpy())) / 2
    torch.testing.assert_close(value, expected, rtol=1e-12, atol=0)
    z = torch.randn(10, 20, dtype=torch.float64)
    got32 = prior.log_prob(z.float())
    assert got32.dtype == torch.float32
    torch.testing.assert_close(got32.double(), prior.log_prob(z), rtol=1e-5, atol=1e-4)


def test_fast_paths_agree_with_the_definition() -> None:
    """Chunked CPU evaluation and the shared-exponent kernel match the autograd path."""
    tree = LpTree.isa((4,) * 5, 2.1, 2.2)
    z = torch.randn(40000, 20, dtype=torch.float64) * 2
    fast = LpNested(tree).log_prob(z)  # shared scalar exponent, row chunks
    exps = torch.tensor(tree.exponents, dtype=torch.float64, requires_grad=True)
    slow = LpNested(tree, exps).log_prob(z).detach()  # broadcast exponents, one pass
    torch.testing.assert_close(fast, slow, rtol=1e-13, atol=0)
    reference = reference_power_f(tree, z.numpy())
    np.testing.assert_allclose(LpNested(tree).power_f(z).numpy(), reference, rtol=1e-12)


def test_batched_over_leading_dimensions() -> None:
    prior = LpNested(LpTree.parse("2.1(1,2.2(2))"))
    z = torch.randn(2, 3, 5, 3, dtype=torch.float64)
    assert prior.log_prob(z).shape == (2, 3, 5)
    torch.testing.assert_close(prior.log_prob(z).reshape(-1), prior.log_prob(z.reshape(-1, 3)))


@settings(deadline=None, derandomize=True, max_examples=60)
@given(
    hst.lists(hst.floats(-50, 50), min_size=8, max_size=8),
    hst.permutations(range(4)),
    hst.lists(hst.sampled_from([-1.0, 1.0]), min_size=8, max_size=8),
)
def test_invariant_to_signs_and_permutations_within_subspaces(values, perm, signs) -> None:
    prior = LpNested(LpTree.parse("2.1(2.2(4),1.3(4))"))
    z = torch.tensor(values, dtype=torch.float64)
    flipped = z * torch.tensor(signs, dtype=torch.float64)
    permuted = z.clone()
    permuted[:4] = z[:4][list(perm)]
    base = prior.log_prob(z)
    assert torch.isfinite(base)
    torch.testing.assert_close(prior.log_prob(flipped), base)
    torch.testing.assert_close(prior.log_prob(permuted), base)


# -- sampling ---------------------------------------------------------------------------

ALPHA = 1e-3  # seeds are fixed, so these tests are deterministic; this is the per-test level


@pytest.mark.parametrize(("spec", "scale"), EXAMPLES)
def test_sampled_radius_is_gamma(spec: str, scale: float) -> None:
    tree = LpTree.parse(spec)
    z = LpNested(tree, scale=scale).sample((20000,), generator=torch.Generator().manual_seed(5))
    stat = reference_power_f(tree, z.numpy()) / scale
    assert st.kstest(stat, st.gamma(tree.n / tree.p0).cdf).pvalue > ALPHA
    # Each root child is an independent subspace: f_c(z_V)^p0 / s ~ Gamma(n_c / p0).
    start = 0
    for child in tree.children:
        width = child.n if isinstance(child, LpTree) else child
        if isinstance(child, LpTree):
            f_child = reference_power_f(child, z.numpy()[:, start : start + width]) ** (1 / child.p)
            sub_stat = f_child**tree.p0 / scale
            assert st.kstest(sub_stat, st.gamma(child.n / tree.p0).cdf).pvalue > ALPHA
        start += width


@pytest.mark.parametrize("method", ["nested", "isa"])
def test_sampled_subspace_norms_are_gamma(method: str) -> None:
    tree = LpTree.isa((4, 3, 1), 2.1, [2.2, 0.8, 1.5])
    z = LpNested(tree, scale=1.7).sample(
        (20000,), generator=torch.Generator().manual_seed(6), method=method
    )
    z = z.numpy()
    for sub, p in zip(tree.subspaces, [2.2, 0.8, 1.5], strict=True):
        norm = (np.abs(z[:, list(sub)]) ** p).sum(-1) ** (1 / p)
        stat = norm**2.1 / 1.7
        assert st.kstest(stat, st.gamma(len(sub) / 2.1).cdf).pvalue > ALPHA
    # A one-leaf subspace is a p0-generalized normal with scale s^(1/p0).
    marginal = st.gennorm(2.1, scale=1.7 ** (1 / 2.1))
    assert st.kstest(z[:, 7], marginal.cdf).pvalue > ALPHA


@pytest.mark.parametrize(("p", "scale"), [(0.6, 2.0), (1.0, 1.0), (2.2, 2.0), (5.0, 0.5)])
def test_single_node_marginals_are_gennorm(p: float, scale: float) -> None:
    z = LpNested(LpTree.gennorm(3, p), scale=scale).sample(
        (20000,), generator=torch.Generator().manual_seed(7)
    )
    for j in range(3):
        cdf = st.gennorm(p, scale=scale ** (1 / p)).cdf
        assert st.kstest(z[:, j].numpy(), cdf).pvalue > ALPHA


def test_algorithm1_and_isa_route_agree() -> None:
    tree = LpTree.isa((4, 4, 2), 2.1, [2.2, 1.6, 3.0])
    generator = torch.Generator().manual_seed(8)
    a = sample_nested(tree, 2.0, 20000, generator).numpy()
    b = sample_isa(tree, 2.0, 20000, generator).numpy()
    stats_a = [a[:, 0], a[:, 5], a[:, 9], np.abs(a[:, :4]).sum(-1), a[:, 0] * a[:, 1]]
    stats_b = [b[:, 0], b[:, 5], b[:, 9], np.abs(b[:, :4]).sum(-1), b[:, 0] * b[:, 1]]
    stats_a.append(reference_power_f(tree, a))
    stats_b.append(reference_power_f(tree, b))
    for x, y in zip(stats_a, stats_b, strict=True):
        assert st.ks_2samp(x, y).pvalue > ALPHA


def test_sampling_is_seeded_and_typed() -> None:
    prior = LpNested(LpTree.parse("2.1(1,2.2(2))"))
    one = prior.sample((100,), generator=torch.Generator().manual_seed(3))
    two = prior.sample((100,), generator=torch.Generator().manual_seed(3))
    assert torch.equal(one, two) and one.dtype == torch.float64 and one.shape == (100, 3)
    assert prior.sample((2, 5)).shape == (2, 5, 3)
    prior32 = LpNested(prior.tree, prior.exponents.float())
    assert prior32.sample((4,)).dtype == torch.float32
    with pytest.raises(IsaError, match="ISA tree"):
        prior.sample((4,), method="isa")


# -- gradients and learnable exponents ----------------------------------------------------


@pytest.mark.parametrize("spec", ["2.1(2.2(2),1.8(2))", "2.1(1,2.2(2))", "1.2(2(2),0.8(1,3(2)),1)"])
def test_gradcheck_z_and_exponents(spec: str) -> None:
    tree = LpTree.parse(spec)
    z = (torch.randn(5, tree.n, dtype=torch.float64) * 2).requires_grad_()
    exps = torch.tensor(tree.exponents, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x: LpNested(tree, exps.detach()).log_prob(x), (z,))
    assert torch.autograd.gradcheck(lambda e: LpNested(tree, e).log_prob(z.detach()), (exps,))


def test_learnable_exponents_stay_positive_and_get_gradients() -> None:
    tree = LpTree.isa((4,) * 5, 2.1, 2.0)
    prior = LpNestedPrior(tree, learn_exponents=True).double()
    params = list(prior.parameters())
    assert len(params) == 1 and params[0].shape == (5,)
    assert prior.exponents[0].item() == pytest.approx(2.1)
    z = torch.randn(256, 20, dtype=torch.float64)
    loss = -prior.log_prob(z).mean()
    loss.backward()
    assert torch.isfinite(params[0].grad).all() and params[0].grad.abs().sum() > 0
    optimizer = torch.optim.SGD(params, lr=100.0)
    optimizer.step()
    assert (prior.exponents > 0).all() and prior.exponents[0].item() == pytest.approx(2.1)
    fixed = LpNestedPrior(tree)
    assert list(fixed.parameters()) == []
    assert "exponents_unconstrained" in fixed.state_dict()


def test_zero_subspace_has_finite_gradient() -> None:
    prior = LpNested(LpTree.parse("2.1(2.2(2),2.2(2))"))
    z = torch.tensor([[0.0, 0.0, 0.5, -1.0]], dtype=torch.float64, requires_grad=True)
    prior.log_prob(z).sum().backward()
    assert torch.isfinite(z.grad).all()


def test_bad_parameters() -> None:
    tree = LpTree.parse("2(3)")
    with pytest.raises(IsaError, match="scale"):
        LpNested(tree, scale=-1.0)
    with pytest.raises(IsaError, match="exponents"):
        LpNested(tree, torch.tensor([2.0, 2.0]))
    with pytest.raises(IsaError, match="scale"):
        LpNestedPrior(tree, scale=float("nan"))


@pytest.mark.gpu
def test_cuda_matches_cpu() -> None:
    tree = LpTree.isa((4,) * 5, 2.1, 2.2)
    prior = LpNestedPrior(tree).cuda()
    z = torch.randn(1000, 20, dtype=torch.float64)
    torch.testing.assert_close(prior.log_prob(z.cuda()).cpu(), LpNestedPrior(tree).log_prob(z))
    g = torch.Generator(device="cuda").manual_seed(0)
    sample = prior.sample(20000, generator=g)
    assert sample.device.type == "cuda"
    stat = reference_power_f(tree, sample.double().cpu().numpy()) / 2.0
    assert st.kstest(stat, st.gamma(20 / 2.1).cdf).pvalue > ALPHA


# -- PriorSpec: the prior flags as given, resolved with the paper's defaults ----------------


def test_prior_spec_defaults_are_the_papers() -> None:
    assert PriorSpec().resolve() == LpTree.isa((4,) * 5, 2.1, 2.2)
    assert PriorSpec().resolve(learn_exponents=True) == LpTree.isa((4,) * 5, 2.1, 2.0)
    assert PriorSpec(p1="1.5").resolve(learn_exponents=True) == LpTree.isa((4,) * 5, 2.1, 1.5)
    assert PriorSpec(prior="normal").resolve() == LpTree.normal(20)
    assert PriorSpec(prior="gennorm", latent_dim=6).resolve() == LpTree.gennorm(6, 2.1)
    assert PriorSpec(layout="2,3", p1="1.5,3").resolve() == LpTree.isa((2, 3), 2.1, (1.5, 3.0))
    assert PriorSpec(tree="1.5(10)").resolve() == LpTree.gennorm(10, 1.5)


@pytest.mark.parametrize(
    ("spec", "field", "message"),
    [
        (dict(prior="laplace"), "prior", "prior 'laplace' is unknown"),
        (dict(p0=0.0), "p0", "p0 must be a positive finite number"),
        (dict(p1="abc"), "p1", "p1 'abc' is not a number"),
        (dict(p1="2,-1"), "p1", "p1 must be a positive finite number"),
        (dict(latent_dim=0), "latent_dim", "latent_dim must be >= 1"),
        (dict(tree="2(4)", layout="2x2"), "tree", "tree already fixes the prior; drop layout"),
        (dict(latent_dim=10), "latent_dim", "latent_dim 10 disagrees with the prior"),
        (dict(prior="normal", p0=2.0), "p0", "p0 is not an exponent of the normal prior"),
        (dict(prior="gennorm", layout="4,4"), None, "the gennorm prior has none"),
    ],
)
def test_prior_spec_refusals_name_the_field(spec: dict, field: str | None, message: str) -> None:
    with pytest.raises(IsaError) as error:
        PriorSpec(**spec).resolve()
    assert message in str(error.value) and error.value.field == field, error.value
