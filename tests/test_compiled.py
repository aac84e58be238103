"""Compiled kernels (issue #12, item 2): the Bernoulli likelihood, the rule, the fallback.

The likelihood is checked against scipy in float64, in both backends and both logit dtypes;
a training step with the compiled kernels against the same step without them; and a compile
failure must cost one warning and nothing else.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import scipy.special as sc
import torch

import isa_core.compiled as compiled
from isa_core import objectives, training
from isa_core.checkpoint import read_run_config
from isa_core.data import open_dataset
from isa_core.errors import IsaError
from isa_core.objectives import bernoulli_log_likelihood
from isa_core.training import TrainConfig
from tests.conftest import isa_in_process as isa
from tests.conftest import needs_compiler

CPU = torch.device("cpu")


def logits_and_images(batch: int = 6, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits over a wide range (|l| up to 40, where a naive softplus overflows) and 0/1 images."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(batch, 1, 16, 16, generator=g) * 12
    logits[0, 0, 0, :4] = torch.tensor([40.0, -40.0, 0.0, 1e-3])
    x = (torch.rand(batch, 1, 16, 16, generator=g) < 0.3).float()
    return logits, x


def scipy_reference(logits: torch.Tensor, x: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """log p(x|z) per image and its gradient in the logits, in float64 with scipy."""
    lf, xf = logits.double().numpy(), x.double().numpy()
    per_pixel = xf * sc.log_expit(lf) + (1 - xf) * sc.log_expit(-lf)
    return per_pixel.reshape(len(lf), -1).sum(-1), xf - sc.expit(lf)


def value_and_grad(logits: torch.Tensor, x: torch.Tensor, backend: str):
    leaf = logits.clone().requires_grad_()
    out = bernoulli_log_likelihood(leaf, x, backend)
    out.sum().backward()
    return out.detach(), leaf.grad


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("backend", ["eager", pytest.param("fused", marks=needs_compiler)])
def test_likelihood_matches_scipy_in_float64(backend: str, dtype: torch.dtype) -> None:
    """float32 sums (tolerance 1e-5 relative); the gradient in the logits' dtype (its rounding)."""
    logits, x = logits_and_images()
    logits = logits.to(dtype)
    expected, expected_grad = scipy_reference(logits, x)
    out, grad = value_and_grad(logits, x, backend)
    assert out.dtype == torch.float32 and out.shape == (len(x),)
    np.testing.assert_allclose(out.double().numpy(), expected, rtol=1e-5)
    assert grad.dtype == dtype
    atol = 1e-6 if dtype == torch.float32 else 2**-8  # bf16 keeps 8 bits: |grad| <= 1
    np.testing.assert_allclose(grad.double().numpy(), expected_grad, atol=atol)


def test_auto_compiles_only_large_work_on_the_cpu(monkeypatch) -> None:
    monkeypatch.setattr(compiled, "_BROKEN", [])
    large = compiled.FUSED_MIN_VALUES
    assert compiled.wants_fused("auto", "cpu", large)
    assert not compiled.wants_fused("auto", "cpu", large - 1)
    assert compiled.wants_fused("auto", "cuda", large)  # Triton kernels
    assert not compiled.wants_fused("auto", "mps", large)
    assert not compiled.wants_fused("eager", "cpu", large)
    assert compiled.wants_fused("fused", "cpu", 1)
    monkeypatch.setattr(compiled, "_BROKEN", ["no compiler"])
    assert not compiled.wants_fused("auto", "cpu", large)  # after a failure: eager
    with pytest.raises(IsaError, match="backend 'gpu' is unknown; use auto, fused, eager"):
        compiled.wants_fused("gpu", "cpu", large)


def test_a_failed_compile_warns_once_and_gives_the_same_values(monkeypatch) -> None:
    from torch._inductor.exc import CppCompileError

    def broken():
        raise CppCompileError(["c++", "kernel.cpp"], "no working C++ compiler\nmore detail")

    monkeypatch.setattr(compiled, "_BROKEN", [])
    monkeypatch.setattr(compiled, "FUSED_MIN_VALUES", 1)
    monkeypatch.setattr(objectives, "_compiled_kernels", broken)
    logits, x = logits_and_images()
    with pytest.warns(RuntimeWarning) as caught:
        out, grad = value_and_grad(logits, x, "auto")
    assert len(caught) == 1
    assert str(caught[0].message).startswith("compiled likelihood kernels unavailable (C++ ")
    assert str(caught[0].message).endswith("; using the eager path")
    assert not compiled.fused_available()
    eager_out, eager_grad = value_and_grad(logits, x, "eager")
    torch.testing.assert_close(out, eager_out)
    torch.testing.assert_close(grad, eager_grad)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no second warning
        value_and_grad(logits, x, "auto")
    with pytest.raises(CppCompileError):
        value_and_grad(logits, x, "fused")


def test_a_bug_in_the_compiled_likelihood_is_raised_not_hidden(monkeypatch) -> None:
    def buggy():
        raise IndexError("a kernel bug")

    monkeypatch.setattr(compiled, "_BROKEN", [])
    monkeypatch.setattr(compiled, "FUSED_MIN_VALUES", 1)
    monkeypatch.setattr(objectives, "_compiled_kernels", buggy)
    logits, x = logits_and_images()
    with pytest.raises(IndexError, match="a kernel bug"):
        value_and_grad(logits, x, "auto")
    assert compiled.fused_available()


@needs_compiler
def test_a_real_compile_failure_is_caught(monkeypatch) -> None:
    """torch.compile with a compiler that does not exist: one warning, then eager values."""
    import torch._inductor.config as inductor_config

    monkeypatch.setattr(compiled, "_BROKEN", [])
    monkeypatch.setattr(compiled, "FUSED_MIN_VALUES", 1)
    logits, x = logits_and_images(batch=3)  # a shape no other test compiles
    logits = logits[:, :, :5, :7].contiguous()
    x = x[:, :, :5, :7].contiguous()
    no_compiler = inductor_config.patch({"cpp.cxx": ("/nonexistent/c++",)})
    unavailable = pytest.warns(RuntimeWarning, match="compiled likelihood kernels unavailable")
    with no_compiler, unavailable:
        out, _ = value_and_grad(logits, x, "auto")
    torch.testing.assert_close(out, value_and_grad(logits, x, "eager")[0])


@needs_compiler
@pytest.mark.parametrize("objective", ["vae", "tcvae"])
def test_a_compiled_step_equals_an_eager_one(monkeypatch, objective: str) -> None:
    """The same weights after 3 bf16 steps with and without the kernels (auto forced to fuse
    at this small batch): they differ by rounding only, measured below 1e-5 relative."""
    monkeypatch.setattr(compiled, "_BROKEN", [])
    monkeypatch.setattr(compiled, "FUSED_MIN_VALUES", 1)
    runs = {}
    for compile_ in (True, False):
        config = TrainConfig(
            data="dsprites-mini", objective=objective, steps=3, batch_size=64, compile=compile_
        )
        run = training._Run(config, open_dataset("dsprites-mini"), CPU)
        run.precision = "bf16"
        losses = [float(run.step(step)["loss"].detach()) for step in range(3)]
        runs[compile_] = losses, run.model.state_dict()
    (fused_losses, fused), (eager_losses, eager) = runs[True], runs[False]
    assert fused_losses == pytest.approx(eager_losses, rel=1e-5)
    for name, value in eager.items():
        torch.testing.assert_close(fused[name], value, rtol=1e-4, atol=1e-6)
    assert compiled.fused_available()  # the kernels really compiled


def test_no_compile_is_stored_and_may_change_on_resume(tmp_path: Path, capsys) -> None:
    out = tmp_path / "run"
    base = ["train", "--data", "dsprites-mini", "--batch-size", "8", "-q", "-o", out]
    code, _, err = isa([*base, "--steps", "1", "--no-compile"], capsys)
    assert (code, err) == (0, "")
    assert read_run_config(out).compile is False
    code, _, err = isa(["train", "--resume", "-o", out, "-q", "--steps", "2", "--compile"], capsys)
    assert code == 0, err
    assert read_run_config(out).compile is True
