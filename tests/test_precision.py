"""`--precision fp32|bf16|auto` (issue #12, item 1): what bf16 autocast changes and what it may not.

Tolerances, measured on this machine (AVX512-BF16 CPU) before they were chosen:
* the same batch through the same weights, bf16 against fp32: the loss and log p(x|z) differed
  by at most 5e-4 relative (conv; 3e-5 for the MLP), the KL, MI, TC and dimension-wise KL by at
  most 0.005 nats. The tests allow 5e-3 relative and 0.05 nats: ten times that.
* 30 steps of vae on dsprites-mini (MLP, batch 64): the last logged loss of bf16 was within
  0.05% of fp32's (within 1.3% after 60 steps at batch 128). The test allows 2%.
* determinism and resume: bf16 runs on the CPU are bit-identical from run to run, and a resumed
  bf16 run equals an uninterrupted one bit for bit, as fp32 runs do (autocast keeps no state of
  its own; everything a step depends on is fp32 and checkpointed).
"""

from __future__ import annotations

import contextlib
import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from isa_core import io, objectives, precision, training
from isa_core.checkpoint import (
    METRICS_FILE,
    MODEL_FILE,
    STATE_FILE,
    load_model,
    prepare_folder,
    read_run_config,
)
from isa_core.choices import Precision
from isa_core.codes import load_codes
from isa_core.data import open_dataset
from isa_core.errors import IsaError
from isa_core.models import build_model
from isa_core.precision import autocast, resolve_precision
from isa_core.priors import LpNested
from isa_core.training import TrainConfig, train
from tests.conftest import isa_in_process as isa

CPU = torch.device("cpu")
LOSS_RTOL = 5e-3  # loss and log p(x|z), relative (measured at most 5e-4)
PARTS_ATOL = 0.05  # the KL and its parts, nats per image (measured at most 0.005)
RUN_RTOL = 0.02  # last logged loss of a short bf16 run against fp32 (measured 0.0005)


def fake_cpu(monkeypatch, *flags: str) -> None:
    """Make auto's CPU probe report exactly ``flags``."""
    monkeypatch.setattr(precision, "cpu_flags", lambda: frozenset(flags))


def read_metrics(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / METRICS_FILE).read_text().splitlines()]


def run(config: TrainConfig, folder: Path, resume: bool = False):
    prepare_folder(folder, resume=resume, force=not resume)
    return train(config, folder, CPU, resume=resume)


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> Path:
    """A 4x4 grid of random 8x8 binary images: a data set small enough for CLI round trips."""
    path = tmp_path_factory.mktemp("data") / "tiny.npz"
    rng = np.random.default_rng(0)
    factors = np.array([(a, b) for a in range(4) for b in range(4)], dtype=np.int64)
    np.savez(
        path,
        images=(rng.random((16, 8, 8)) < 0.3).astype(np.uint8),
        factors=factors,
        factor_names=np.array(["a", "b"]),
        factor_sizes=np.array([4, 4], dtype=np.int64),
    )
    return path


def tiny_train(tiny_data: Path, out: Path, *extra) -> list:
    return ["train", "--data", tiny_data, "--batch-size", "8", "-q", "-o", out, *extra]


# -- the choice set and auto ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (("amx_bf16", "amx_tile", "avx512f"), "bf16"),  # Sapphire Rapids and later
        (("avx512_bf16", "avx512f"), "bf16"),  # Cooper Lake, Zen 4
        (("avx512f", "avx2"), "fp32"),  # AVX-512 without bf16 instructions
        (("avx2",), "fp32"),
        ((), "fp32"),  # nothing known (no probe answered)
    ],
)
def test_auto_on_the_cpu_follows_the_bf16_flags(monkeypatch, flags, expected: str) -> None:
    fake_cpu(monkeypatch, *flags)
    assert resolve_precision("auto", CPU) == expected
    assert resolve_precision("fp32", CPU) == "fp32"  # explicit choices are never second-guessed
    assert resolve_precision("bf16", CPU) == "bf16"


def fake_gpu(monkeypatch, native: bool, emulated: bool) -> None:
    """Make torch.cuda answer as a GPU with native and/or emulated bf16 would."""

    def is_bf16_supported(including_emulation: bool = True) -> bool:
        return native or (emulated and including_emulation)

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", is_bf16_supported)
    monkeypatch.setattr(torch.cuda, "device", lambda device: contextlib.nullcontext())


@pytest.mark.parametrize(
    ("native", "emulated", "auto"),
    [(True, True, "bf16"), (False, True, "fp32"), (False, False, "fp32")],
)
def test_auto_on_cuda_needs_native_bf16(monkeypatch, native: bool, emulated: bool, auto: str):
    """Emulated bf16 (older GPUs) is no faster than fp32, so auto does not count it; a GPU
    without any bf16 refuses an explicit bf16, which autocast would fail on."""
    fake_gpu(monkeypatch, native, emulated)
    gpu = torch.device("cuda:0")
    assert resolve_precision("auto", gpu) == auto
    assert resolve_precision("fp32", gpu) == "fp32"
    if native or emulated:
        assert resolve_precision("bf16", gpu) == "bf16"
    else:
        with pytest.raises(
            IsaError, match="precision bf16: the GPU cuda:0 has no bf16 support; use fp32"
        ):
            resolve_precision("bf16", gpu)


def test_bf16_on_a_gpu_without_it_is_refused_before_any_file(
    monkeypatch, tiny_data: Path, tmp_path: Path, capsys
) -> None:
    out = tmp_path / "run"
    out.mkdir()
    (out / MODEL_FILE).write_bytes(b"precious")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    fake_gpu(monkeypatch, native=False, emulated=False)
    args = tiny_train(tiny_data, out, "--steps", "1", "--force", "--device", "cuda")
    code, _, err = isa([*args, "--precision", "bf16"], capsys)
    assert code == 2 and err.count("\n") == 1 and "has no bf16 support" in err, err
    assert (out / MODEL_FILE).read_bytes() == b"precious"


def test_the_cpu_probe_falls_back_to_proc_cpuinfo(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.delattr(torch._C._cpu, "_get_cpu_capability", raising=False)
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx512f avx512_bf16\n")
    monkeypatch.setattr(precision, "CPUINFO", cpuinfo)
    assert {"avx512_bf16", "avx512f", "sse2"} <= precision.cpu_flags()
    assert resolve_precision("auto", CPU) == "bf16"
    monkeypatch.setattr(precision, "CPUINFO", tmp_path / "missing")
    assert precision.cpu_flags() == frozenset()
    assert resolve_precision("auto", CPU) == "fp32"


def test_the_real_probe_answers_a_set_of_names() -> None:
    flags = precision.cpu_flags()
    assert isinstance(flags, frozenset) and all(isinstance(f, str) for f in flags)


def test_one_choice_set_from_the_library_to_the_cli() -> None:
    import typing

    from isa_cli.train import train_command

    flag = typing.get_type_hints(train_command, include_extras=True)["precision"]
    assert flag.__origin__ is Precision and list(Precision) == ["fp32", "bf16", "auto"]
    assert TrainConfig().precision == Precision.auto
    with pytest.raises(IsaError, match="precision 'fp16' is unknown; use fp32, bf16, auto"):
        TrainConfig(precision="fp16")
    with pytest.raises(ValueError, match="resolved precision"):
        autocast(CPU, "auto")


def test_an_unknown_precision_flag_exits_2(tmp_path: Path, capsys) -> None:
    out = tmp_path / "run"
    code, _, err = isa(["train", "--precision", "fp16", "--steps", "1", "-o", out], capsys)
    assert code == 2 and "Invalid value for '--precision'" in err, err
    assert not out.exists()


# -- what bf16 changes: the same batch, fp32-kept parts --------------------------------------


def _parts(run: training._Run, step: int, mode: str) -> dict[str, float]:
    """The loss parts of ``step`` in ``mode``, leaving the run as it found it."""
    model = copy.deepcopy(run.model.state_dict())
    noise, aux = run.noise.get_state(), run.aux.get_state()
    run.precision = mode
    parts = {name: float(value.detach()) for name, value in run.step(step).items()}
    run.model.load_state_dict(model)
    run.noise.set_state(noise)
    run.aux.set_state(aux)
    return parts


@pytest.mark.parametrize(("arch", "batch"), [("mlp", 64), ("conv", 16)])
def test_bf16_and_fp32_give_the_same_loss_on_the_same_batch(arch: str, batch: int) -> None:
    """After 20 fp32 steps (so the model is past its all-grey start), three batches both ways."""
    config = TrainConfig(
        data="dsprites-mini", arch=arch, objective="tcvae", steps=100, batch_size=batch
    )
    run = training._Run(config, open_dataset("dsprites-mini"), CPU)
    run.precision = "fp32"
    for step in range(20):
        run.step(step)
    for step in range(20, 23):
        full, half = _parts(run, step, "fp32"), _parts(run, step, "bf16")
        assert full.keys() == half.keys() == {"loss", "logpx", "kl", "mi", "tc", "dwkl"}
        for name in ("loss", "logpx"):
            assert half[name] == pytest.approx(full[name], rel=LOSS_RTOL), (step, name)
        for name in ("kl", "mi", "tc", "dwkl"):
            assert half[name] == pytest.approx(full[name], abs=PARTS_ATOL), (step, name)
        run.precision = "fp32"
        run.step(step)


@pytest.mark.parametrize(("arch", "objective"), [("mlp", "tcvae"), ("conv", "factorvae")])
def test_only_the_encoder_and_decoder_run_in_bf16(
    monkeypatch, tmp_path: Path, arch: str, objective: str
) -> None:
    """Under bf16 the networks' products are bf16; the prior's log-density, the TC estimator,
    the losses, the discriminator, the weights, Adam's moments and the checkpoints are fp32."""
    seen: dict[str, list] = {}

    def record(name: str, value: torch.Tensor) -> None:
        seen.setdefault(name, []).append((value.dtype, torch.is_autocast_enabled("cpu")))

    real_log_prob = LpNested.log_prob

    def log_prob(self, value):
        out = real_log_prob(self, value)
        record("prior log_prob", out)
        return out

    real_aggregate = objectives.aggregate_log_densities

    def aggregate(*args, **kwargs):
        joint, marginals = real_aggregate(*args, **kwargs)
        record("TC estimator", joint)
        record("TC estimator", marginals)
        return joint, marginals

    real_likelihood = objectives.bernoulli_log_likelihood

    def likelihood(logits, x, *args):
        record("decoder logits", logits)
        out = real_likelihood(logits, x, *args)
        record("likelihood", out)
        return out

    monkeypatch.setattr(LpNested, "log_prob", log_prob)
    monkeypatch.setattr(objectives, "aggregate_log_densities", aggregate)
    monkeypatch.setattr(objectives, "bernoulli_log_likelihood", likelihood)
    config = TrainConfig(
        data="dsprites-mini", arch=arch, objective=objective, steps=4, batch_size=8,
        precision="bf16",
    )  # fmt: skip
    run = training._Run(config, open_dataset("dsprites-mini"), CPU)
    assert run.precision == "bf16"
    layers = (torch.nn.Linear, torch.nn.Conv2d, torch.nn.ConvTranspose2d)
    for module in run.model.modules():
        if isinstance(module, layers):
            module.register_forward_hook(lambda m, i, out: record("network layer", out))
    if run.critic is not None:
        run.critic.discriminator.register_forward_hook(
            lambda m, i, out: record("discriminator", out)
        )
    parts = run.step(0)
    run.step(1)

    fp32_outside = (torch.float32, False)
    assert set(seen["network layer"]) == {(torch.bfloat16, True)}  # autocast is really on
    assert set(seen["prior log_prob"]) == {fp32_outside}
    # The logits stay bf16 (no float32 copy); the likelihood sums them in float32.
    assert set(seen["decoder logits"]) == {(torch.bfloat16, False)}
    assert set(seen["likelihood"]) == {fp32_outside}
    if objective == "tcvae":
        assert set(seen["TC estimator"]) == {fp32_outside}
    else:
        assert {dtype for dtype, _ in seen["discriminator"]} == {torch.float32}
    assert {name: value.dtype for name, value in parts.items()} == dict.fromkeys(
        parts, torch.float32
    )
    # Master weights and BN statistics: float32, the prior's float64, as built, and so on disk.
    model = build_model(config, run.data.image_shape)
    built = {name: t.dtype for name, t in model.state_dict().items()}
    assert {name: t.dtype for name, t in run.model.state_dict().items()} == built
    networks = {t.dtype for t in [*model.encoder.parameters(), *model.decoder.parameters()]}
    assert networks == {torch.float32}
    for optimizer in filter(None, (run.optimizer, run.critic and run.critic.optimizer)):
        for parameter, state in optimizer.state.items():  # Adam's moments: the weights' dtype
            assert state["exp_avg"].dtype == state["exp_avg_sq"].dtype == parameter.dtype
    assert {p.dtype for p in run.optimizer.state} == {torch.float32}  # the networks' weights
    run.save(tmp_path, 2, {})
    saved = io.load_bundle(tmp_path / MODEL_FILE).tensors
    assert {name: t.dtype for name, t in saved.items()} == built
    state = io.load_bundle(tmp_path / STATE_FILE).tensors
    assert {t.dtype for name, t in state.items() if ".exp_avg" in name} == {torch.float32}
    assert io.load_bundle(tmp_path / MODEL_FILE).metadata["precision"] == "bf16"


# -- whole runs: training, determinism, resume -----------------------------------------------


def test_a_short_bf16_run_trains_and_ends_close_to_fp32(monkeypatch, tmp_path: Path) -> None:
    """The bf16 run is asked for as auto on a (faked) bf16 CPU: both choices are recorded."""
    base = dict(data="dsprites-mini", steps=30, batch_size=64, log_every=10)
    run(TrainConfig(**base, precision="fp32"), tmp_path / "fp32")
    fake_cpu(monkeypatch, "avx512_bf16")
    run(TrainConfig(**base, precision="auto"), tmp_path / "auto")
    full, half = read_metrics(tmp_path / "fp32"), read_metrics(tmp_path / "auto")
    assert [line["precision"] for line in full] == ["fp32"] * 3
    assert [line["precision"] for line in half] == ["bf16"] * 3
    for lines in (full, half):
        assert lines[-1]["loss"] < 0.7 * lines[0]["loss"]  # it learns (about 1316 -> 742)
    assert half[-1]["loss"] == pytest.approx(full[-1]["loss"], rel=RUN_RTOL)
    _, meta = load_model(tmp_path / "auto" / MODEL_FILE)
    assert meta["config"]["precision"] == "auto" and meta["precision"] == "bf16"
    assert read_run_config(tmp_path / "auto").precision == "auto"


def _tensors(folder: Path) -> dict[str, torch.Tensor]:
    out = dict(io.load_bundle(folder / MODEL_FILE).tensors)
    state = io.load_bundle(folder / STATE_FILE).tensors
    out.update({f"state/{key}": value for key, value in state.items()})
    return out


@pytest.mark.parametrize("mode", ["fp32", "bf16"])
def test_same_seed_same_bytes_and_resume_equals_straight(
    tiny_data: Path, tmp_path: Path, mode: str
) -> None:
    """Both hold bit for bit on the CPU in both precisions (see the module docstring)."""
    config = dict(data=str(tiny_data), objective="tcvae", batch_size=8, precision=mode)
    config.update(steps=4, log_every=2, checkpoint_every=2)
    run(TrainConfig(**config), tmp_path / "a")
    run(TrainConfig(**config), tmp_path / "b")
    a, b = _tensors(tmp_path / "a"), _tensors(tmp_path / "b")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    run(TrainConfig(**{**config, "steps": 2}), tmp_path / "c")
    assert run(TrainConfig(**config), tmp_path / "c", resume=True).step == 4
    c = _tensors(tmp_path / "c")
    assert all(torch.equal(a[k], c[k]) for k in a), [k for k in a if not torch.equal(a[k], c[k])]


def test_resume_may_change_the_precision_and_records_it(
    tiny_data: Path, tmp_path: Path, capsys
) -> None:
    """A run moved to a machine without fast bf16 must go on; the log shows each part's."""
    out = tmp_path / "run"
    args = tiny_train(tiny_data, out, "--steps", "2", "--log-every", "1", "--precision", "bf16")
    assert isa(args, capsys)[0] == 0
    resume = ["train", "--resume", "-o", out, "-q"]
    code, _, err = isa([*resume, "--steps", "3", "--precision", "fp32"], capsys)
    assert code == 0, err
    assert read_run_config(out).precision == "fp32"
    assert io.load_bundle(out / MODEL_FILE).metadata["precision"] == "fp32"
    code, _, err = isa([*resume, "--steps", "4"], capsys)  # not given: the stored one
    assert code == 0, err
    assert [line["precision"] for line in read_metrics(out)] == ["bf16", "bf16", "fp32", "fp32"]
    code, _, err = isa([*resume, "--steps", "5", "--beta", "3"], capsys)  # still refused
    assert code == 2 and "--beta 3.0 differs" in err, err


# -- isa encode -------------------------------------------------------------------------------


def test_encode_uses_the_models_precision_unless_overridden(
    tiny_data: Path, tmp_path: Path, capsys, monkeypatch
) -> None:
    """auto is stored as asked and resolved again on the encoding machine."""
    out = tmp_path / "run"
    fake_cpu(monkeypatch)  # trained where auto means fp32
    assert isa(tiny_train(tiny_data, out, "--steps", "2"), capsys)[0] == 0
    meta = io.load_bundle(out / MODEL_FILE).metadata
    assert (meta["config"]["precision"], meta["precision"]) == ("auto", "fp32")
    model = out / MODEL_FILE
    fake_cpu(monkeypatch, "amx_bf16")  # encoded where auto means bf16
    codes = {}
    for name, extra in (("stored", []), ("fp32", ["--precision", "fp32"])):
        target = tmp_path / f"{name}.safetensors"
        code, _, err = isa(["encode", model, "-q", "-o", target, *extra], capsys)
        assert code == 0, err
        codes[name] = load_codes(target)
        tensors = io.load_bundle(target).tensors
        assert tensors["mean"].dtype == tensors["logvar"].dtype == torch.float32
    assert codes["stored"].metadata["precision"] == "bf16"
    assert codes["fp32"].metadata["precision"] == "fp32"
    np.testing.assert_allclose(codes["stored"].mean, codes["fp32"].mean, atol=0.05)
    np.testing.assert_allclose(codes["stored"].logvar, codes["fp32"].logvar, atol=0.05)


def _without_precision(path: Path) -> None:
    """Rewrite a model or state file as isa wrote it before --precision existed."""
    bundle = io.load_bundle(path)
    meta = json.loads(json.dumps(bundle.metadata))
    for holder in (meta, meta.get("model", {})):
        holder.pop("precision", None)
        holder.get("config", {}).pop("precision", None)
    io.save_bundle(path, bundle.tensors, meta)


def test_a_model_from_before_precision_is_fp32(
    tiny_data: Path, tmp_path: Path, capsys, monkeypatch
) -> None:
    out = tmp_path / "run"
    args = tiny_train(tiny_data, out, "--steps", "1", "--log-every", "1", "--precision", "bf16")
    assert isa(args, capsys)[0] == 0
    for name in (MODEL_FILE, STATE_FILE):
        _without_precision(out / name)
    model = out / MODEL_FILE
    assert "precision" not in io.load_bundle(model).metadata["config"]
    _, meta = load_model(model)
    assert TrainConfig.from_metadata(meta["config"]).precision == "fp32"
    assert read_run_config(out).precision == "fp32"
    fake_cpu(monkeypatch, "amx_bf16")  # where auto would mean bf16
    code, _, err = isa(["encode", model, "-q", "-o", tmp_path / "codes.safetensors"], capsys)
    assert code == 0, err
    assert load_codes(tmp_path / "codes.safetensors").metadata["precision"] == "fp32"
    code, _, err = isa(["train", "--resume", "-o", out, "-q", "--steps", "2"], capsys)
    assert code == 0, err
    assert [line["precision"] for line in read_metrics(out)] == ["bf16", "fp32"]


@pytest.mark.parametrize(
    ("value", "message"),
    [("fp8", "unknown precision 'fp8'"), (16, "malformed 'precision'")],
)
def test_a_damaged_precision_in_a_model_file_is_refused(
    tiny_data: Path, tmp_path: Path, capsys, value, message: str
) -> None:
    out = tmp_path / "run"
    assert isa(tiny_train(tiny_data, out, "--steps", "1"), capsys)[0] == 0
    bundle = io.load_bundle(out / MODEL_FILE)
    bundle.metadata["config"]["precision"] = value
    forged = tmp_path / "forged.safetensors"
    io.save_bundle(forged, bundle.tensors, bundle.metadata)
    with pytest.raises(IsaError, match=message):
        load_model(forged)
    code, _, err = isa(["encode", forged, "-q", "-o", tmp_path / "c.safetensors"], capsys)
    assert code == 2 and err.startswith(f"isa encode: error: {forged}") and message in err, err
