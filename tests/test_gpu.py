"""What must hold on a CUDA device (issue #12): run by `benchmarks/gpu_check.sh` on a lent GPU.

Skipped where CUDA is missing. On CUDA, bit-for-bit determinism is not promised (cuBLAS may
reduce in a different order from run to run), so resume is checked to a tolerance here.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from isa_core import training
from isa_core.aggregate import aggregate_log_densities
from isa_core.checkpoint import METRICS_FILE, MODEL_FILE, load_model, prepare_folder
from isa_core.codes import encode
from isa_core.data import open_dataset
from isa_core.precision import cuda_has_bf16, resolve_precision
from isa_core.training import TrainConfig, train

pytestmark = pytest.mark.gpu
CUDA = torch.device("cuda")
CPU = torch.device("cpu")


def run(config: TrainConfig, folder: Path, resume: bool = False) -> training.TrainResult:
    prepare_folder(folder, resume=resume, force=not resume)
    return train(config, folder, CUDA, resume=resume)


def metrics(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / METRICS_FILE).read_text().splitlines()]


def test_auto_is_bf16_exactly_where_the_gpu_has_native_bf16() -> None:
    expected = "bf16" if cuda_has_bf16(CUDA) else "fp32"
    assert resolve_precision("auto", CUDA) == expected


def test_a_cuda_bf16_step_gives_the_fp32_loss() -> None:
    """After 20 fp32 steps, one batch both ways: loss within 2 % (the CPU test's tolerance)."""
    config = TrainConfig(data="dsprites-mini", objective="tcvae", steps=100, batch_size=256)
    run_ = training._Run(config, open_dataset("dsprites-mini"), CUDA)
    run_.precision = "fp32"
    for step in range(20):
        run_.step(step)
    parts = {}
    state = copy.deepcopy(run_.model.state_dict())
    noise, aux = run_.noise.get_state(), run_.aux.get_state()
    for mode in ("fp32", "bf16"):
        run_.model.load_state_dict(state)
        run_.noise.set_state(noise)
        run_.aux.set_state(aux)
        run_.precision = mode
        parts[mode] = {name: float(value.detach()) for name, value in run_.step(20).items()}
    assert parts["bf16"]["loss"] == pytest.approx(parts["fp32"]["loss"], rel=0.02)
    assert parts["bf16"]["logpx"] == pytest.approx(parts["fp32"]["logpx"], rel=0.02)


def test_a_short_cuda_run_trains_in_both_precisions_and_ends_close(tmp_path: Path) -> None:
    base = dict(data="dsprites-mini", objective="tcvae", steps=60, batch_size=256, log_every=20)
    for mode in ("fp32", "bf16"):
        run(TrainConfig(**base, precision=mode), tmp_path / mode)
    full, half = metrics(tmp_path / "fp32"), metrics(tmp_path / "bf16")
    for lines in (full, half):
        assert lines[-1]["loss"] < 0.7 * lines[0]["loss"]
    assert half[-1]["loss"] == pytest.approx(full[-1]["loss"], rel=0.05)
    model, meta = load_model(tmp_path / "bf16" / MODEL_FILE)
    assert meta["precision"] == "bf16"
    assert {p.dtype for p in model.encoder.parameters()} == {torch.float32}  # fp32 on disk


def test_resume_on_cuda_continues_the_straight_run(tmp_path: Path) -> None:
    config = dict(data="dsprites-mini", objective="tcvae", batch_size=128, precision="fp32")
    config.update(steps=6, log_every=3, checkpoint_every=3)
    run(TrainConfig(**config), tmp_path / "straight")
    run(TrainConfig(**{**config, "steps": 3}), tmp_path / "resumed")
    assert run(TrainConfig(**config), tmp_path / "resumed", resume=True).step == 6
    a, _ = load_model(tmp_path / "straight" / MODEL_FILE)
    b, _ = load_model(tmp_path / "resumed" / MODEL_FILE)
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        torch.testing.assert_close(x, y, rtol=1e-4, atol=1e-5, msg=name)


def test_cuda_codes_match_the_cpus(tmp_path: Path) -> None:
    run(TrainConfig(data="dsprites-mini", steps=10, batch_size=128), tmp_path / "run")
    model, _ = load_model(tmp_path / "run" / MODEL_FILE)
    data = open_dataset("dsprites-mini")
    on_cpu = encode(copy.deepcopy(model), data, CPU, batch_size=512)
    on_cuda = encode(model, data, CUDA, batch_size=512)
    np.testing.assert_allclose(on_cuda.mean, on_cpu.mean, atol=1e-4)
    np.testing.assert_allclose(on_cuda.logvar, on_cpu.logvar, atol=1e-4)
    np.testing.assert_array_equal(on_cuda.factors, on_cpu.factors)


def test_the_tc_estimator_on_cuda_matches_the_cpu_in_float64() -> None:
    g = torch.Generator().manual_seed(0)
    z, mean = (
        torch.randn(512, 10, generator=g, dtype=torch.float64),
        torch.randn(512, 10, generator=g, dtype=torch.float64),
    )
    logvar = torch.randn(512, 10, generator=g, dtype=torch.float64) * 0.3
    for estimator in ("mss", "mws"):
        cpu = aggregate_log_densities(z, mean, logvar, 737_280, estimator, "eager")
        cuda = aggregate_log_densities(z.cuda(), mean.cuda(), logvar.cuda(), 737_280, estimator)
        for here, there in zip(cpu, cuda, strict=True):
            torch.testing.assert_close(there.cpu(), here, rtol=1e-10, atol=1e-10)


def test_the_compiled_kernels_on_cuda_match_the_eager_ones() -> None:
    """The TC estimator's and the likelihood's Triton kernels against eager, values and grads."""
    from isa_core.objectives import bernoulli_log_likelihood

    g = torch.Generator(device="cuda").manual_seed(0)
    m, k = 512, 10
    z = torch.randn(m, k, device=CUDA, generator=g)
    mean = torch.randn(m, k, device=CUDA, generator=g)
    logvar = 0.3 * torch.randn(m, k, device=CUDA, generator=g)
    results = {}
    for backend in ("eager", "fused"):
        inputs = [t.clone().requires_grad_(True) for t in (z, mean, logvar)]
        joint, marginals = aggregate_log_densities(*inputs, 737_280, "mss", backend)
        (joint.sum() + (marginals * torch.linspace(0, 1, k, device=CUDA)).sum()).backward()
        results[backend] = [joint, marginals, *(t.grad for t in inputs)]
    for fused, eager in zip(results["fused"], results["eager"], strict=True):
        torch.testing.assert_close(fused, eager, rtol=1e-4, atol=1e-4)

    logits = torch.randn(64, 1, 64, 64, device=CUDA, generator=g, dtype=torch.bfloat16)
    x = (torch.rand(64, 1, 64, 64, device=CUDA, generator=g) < 0.1).float()
    outputs = {}
    for backend in ("eager", "fused"):
        leaf = logits.clone().requires_grad_(True)
        value = bernoulli_log_likelihood(leaf, x, backend)
        value.sum().backward()
        outputs[backend] = (value, leaf.grad.float())
    for fused, eager in zip(outputs["fused"], outputs["eager"], strict=True):
        torch.testing.assert_close(fused, eager, rtol=1e-4, atol=1e-3)
