"""Training runs on dsprites-mini: learning, learned exponents, determinism, resume, signals."""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path

import pytest
import torch

from isa_core import io
from isa_core.training import TrainConfig, load_model, prepare_folder, train
from tests.conftest import isa_executable, run_isa, wait_for_metrics

CPU = torch.device("cpu")


def small(**overrides) -> TrainConfig:
    base = dict(data="dsprites-mini", steps=12, batch_size=64, log_every=4, checkpoint_every=6)
    base.update(overrides)
    return TrainConfig(**base)


def run(config: TrainConfig, folder: Path, resume: bool = False):
    prepare_folder(folder, resume=resume, force=not resume)
    return train(config, folder, CPU, resume=resume)


def read_metrics(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]


def tensors(folder: Path) -> dict[str, torch.Tensor]:
    out = dict(io.load_bundle(folder / "model.safetensors").tensors)
    out.update(
        {
            f"state/{k}": v
            for k, v in io.load_bundle(folder / "train_state.safetensors").tensors.items()
        }
    )
    return out


def test_short_run_improves_logpx_and_writes_the_run(tmp_path: Path) -> None:
    config = small(steps=60, batch_size=128, log_every=10, lr=1e-3)
    result = run(config, tmp_path / "run")
    lines = read_metrics(tmp_path / "run")
    assert [line["step"] for line in lines] == [10, 20, 30, 40, 50, 60]
    assert lines[-1]["logpx"] > lines[0]["logpx"] + 50  # nats per image
    for key in ("loss", "kl", "epoch", "images_per_s", "exponents"):
        assert key in lines[-1]
    model, meta = load_model(result.model_path)
    assert meta["step"] == 60 and meta["config"]["objective"] == "vae"
    assert meta["versions"]["torch"] == torch.__version__
    assert meta["data"]["factor_names"] == ["shape", "scale", "orientation", "x", "y"]
    assert model.prior.current_tree().spec == "2.1(2.2(4),2.2(4),2.2(4),2.2(4),2.2(4))"


def test_learned_exponents_move_and_stay_positive(tmp_path: Path) -> None:
    config = small(
        tree="2.1(2(4),2(4),2(4),2(4),2(4))",
        learn_exponents=True,
        exponent_lr=0.05,
        objective="tcvae",
        steps=20,
    )
    run(config, tmp_path / "run")
    first, last = read_metrics(tmp_path / "run")[0], read_metrics(tmp_path / "run")[-1]
    assert last["exponents"][0] == pytest.approx(2.1)
    assert all(p > 0 for p in last["exponents"])
    assert (
        max(abs(a - b) for a, b in zip(first["exponents"][1:], last["exponents"][1:], strict=True))
        > 1e-3
    )
    model, _ = load_model(tmp_path / "run" / "model.safetensors")
    assert model.prior.current_tree().exponents[1:] != (2.0,) * 5


@pytest.mark.parametrize(
    "overrides",
    [
        {"objective": "vae"},
        {"objective": "tcvae", "estimator": "mws", "beta": 4.0},
        {"objective": "factorvae", "gamma": 5.0},
    ],
)
def test_same_seed_same_tensors_and_resume_equals_straight(tmp_path: Path, overrides) -> None:
    config = small(**overrides)
    run(config, tmp_path / "a")
    run(small(**overrides), tmp_path / "b")
    a, b = tensors(tmp_path / "a"), tensors(tmp_path / "b")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # stop at step 6 (a checkpoint), then resume to 12
    half = small(**overrides)
    half.steps = 6
    run(half, tmp_path / "c")
    resumed = small(**overrides)
    result = run(resumed, tmp_path / "c", resume=True)
    assert result.step == 12
    c = tensors(tmp_path / "c")
    assert all(torch.equal(a[k], c[k]) for k in a), [k for k in a if not torch.equal(a[k], c[k])]
    assert [m["step"] for m in read_metrics(tmp_path / "c")] == [4, 6, 8, 12]


def test_conv_architecture_trains(tmp_path: Path) -> None:
    result = run(small(arch="conv", steps=2, objective="tcvae"), tmp_path / "run")
    model, _ = load_model(result.model_path)
    assert model.decode(torch.zeros(2, 20)).shape == (2, 1, 64, 64)


def test_sigint_saves_a_loadable_checkpoint_and_resume_finishes(tmp_path: Path) -> None:
    out = tmp_path / "run"
    args = [
        isa_executable(),
        "train",
        "--data",
        "dsprites-mini",
        "--steps",
        "100000",
        "--batch-size",
        "32",
        "--log-every",
        "1",
        "-o",
        str(out),
        "--quiet",
    ]
    process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    wait_for_metrics(out, 3)
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr.decode()
    assert stdout.decode().strip() == str((out / "model.safetensors").resolve())
    _, meta = load_model(out / "model.safetensors")
    assert 3 <= meta["step"] < 100000
    resumed = run_isa(
        ["train", "--resume", "-o", str(out), "--steps", str(meta["step"] + 2), "--quiet"]
    )
    assert resumed.returncode == 0, resumed.stderr.decode()
    assert load_model(out / "model.safetensors")[1]["step"] == meta["step"] + 2


def test_sigterm_exits_143(tmp_path: Path) -> None:
    out = tmp_path / "run"
    process = subprocess.Popen(
        [
            isa_executable(),
            "train",
            "--data",
            "dsprites-mini",
            "--steps",
            "100000",
            "--batch-size",
            "16",
            "--log-every",
            "1",
            "-o",
            str(out),
            "-q",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    wait_for_metrics(out, 1)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 143, stderr.decode()
    load_model(out / "model.safetensors")


def test_cli_run_prints_only_the_model_path(tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = run_isa(
        [
            "train",
            "--data",
            "dsprites-mini",
            "--steps",
            "2",
            "--batch-size",
            "16",
            "--objective",
            "tcvae",
            "--learn-exponents",
            "-o",
            str(out),
        ]
    )
    assert result.returncode == 0, result.stderr.decode()
    assert result.stdout.decode() == f"{(out / 'model.safetensors').resolve()}\n"
    sampled = run_isa(["prior-sample", "--model", str(out / "model.safetensors"), "-n", "4"])
    assert sampled.returncode == 0, sampled.stderr.decode()


@pytest.fixture
def existing_run(tmp_path: Path) -> Path:
    out = tmp_path / "done"
    run(small(steps=2), out)
    return out


BAD = [
    (["--objective", "gan"], "Invalid value for '--objective'"),
    (["--prior", "laplace"], "Invalid value for '--prior'"),
    (["--latent-dim", "10"], "--latent-dim 10 disagrees with the prior"),
    (["--prior", "normal", "--layout", "4,4"], "--prior normal has none"),
    (["--beta", "-1"], "--beta must be a finite number >= 0"),
    (["--data", "{missing}"], "no such file"),
    (["--data", "nosuchset"], "unknown data set"),
    (["--steps", "2", "--epochs", "1"], "not both"),
    (["--device", "tpu"], "unknown --device"),
    (["--estimator", "exact"], "Invalid value for '--estimator'"),
    (["--closed-form-kl"], "--closed-form-kl needs the normal prior"),
]


@pytest.mark.parametrize(("extra", "message"), BAD)
def test_bad_input(extra: list[str], message: str, tmp_path: Path) -> None:
    out = tmp_path / "new"
    args = ["train", "--data", "dsprites-mini", "--steps", "1", "-o", str(out)]
    extra = [e.replace("{missing}", str(tmp_path / "missing.npz")) for e in extra]
    result = run_isa(args + extra)
    stderr = result.stderr.decode()
    assert result.returncode == 2, stderr
    assert stderr.startswith("isa train: error: ") and stderr.count("\n") == 1, stderr
    assert message in stderr, stderr
    assert not out.exists()


def test_existing_run_is_never_overwritten(existing_run: Path, tmp_path: Path) -> None:
    before = (existing_run / "model.safetensors").read_bytes()
    result = run_isa(["train", "--data", "dsprites-mini", "--steps", "1", "-o", str(existing_run)])
    assert result.returncode == 2 and b"already holds a run" in result.stderr
    assert (existing_run / "model.safetensors").read_bytes() == before
    empty = tmp_path / "empty"
    empty.mkdir()
    result = run_isa(["train", "--resume", "-o", str(empty)])
    assert result.returncode == 2 and b"holds no checkpoint" in result.stderr
    (existing_run / "train_state.safetensors").write_bytes(b"\x00" * 20)
    result = run_isa(["train", "--resume", "-o", str(existing_run), "--steps", "5"])
    assert result.returncode == 2 and b"truncated" in result.stderr, result.stderr
    assert (existing_run / "model.safetensors").read_bytes() == before
