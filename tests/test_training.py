"""Training runs on dsprites-mini: learning, learned exponents, determinism, resume, signals."""

from __future__ import annotations

import dataclasses
import json
import signal
import subprocess
from pathlib import Path

import pytest
import torch

from isa_core import io, training
from isa_core.checkpoint import METRICS_FILE, MODEL_FILE, STATE_FILE, load_model, prepare_folder
from isa_core.training import TrainConfig, train
from tests.conftest import isa_executable, wait_for_metrics
from tests.conftest import isa_in_process as isa

CPU = torch.device("cpu")


def small(**overrides) -> TrainConfig:
    base = dict(data="dsprites-mini", steps=12, batch_size=64, log_every=4, checkpoint_every=6)
    base.update(overrides)
    return TrainConfig(**base)


def run(config: TrainConfig, folder: Path, resume: bool = False):
    prepare_folder(folder, resume=resume, force=not resume)
    return train(config, folder, CPU, resume=resume)


def read_metrics(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / METRICS_FILE).read_text().splitlines()]


def tensors(folder: Path) -> dict[str, torch.Tensor]:
    out = dict(io.load_bundle(folder / MODEL_FILE).tensors)
    out.update({f"state/{k}": v for k, v in io.load_bundle(folder / STATE_FILE).tensors.items()})
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
    model, _ = load_model(tmp_path / "run" / MODEL_FILE)
    assert model.prior.current_tree().exponents[1:] != (2.0,) * 5


@pytest.mark.parametrize(
    "overrides",
    [
        {"objective": "vae"},
        {"objective": "tcvae", "tc_estimator": "mws", "beta": 4.0},
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
    run(dataclasses.replace(small(**overrides), steps=6), tmp_path / "c")
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


def test_sigint_saves_a_loadable_checkpoint_and_resume_finishes(tmp_path: Path, capsys) -> None:
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
    stdout, stderr = process.communicate()
    assert process.returncode == 130, stderr.decode()
    assert stdout.decode().strip() == str((out / MODEL_FILE).resolve())
    _, meta = load_model(out / MODEL_FILE)
    assert 3 <= meta["step"] < 100000
    code, _, err = isa(["train", "--resume", "-o", out, "--steps", meta["step"] + 2, "-q"], capsys)
    assert code == 0, err
    assert load_model(out / MODEL_FILE)[1]["step"] == meta["step"] + 2


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
    _, stderr = process.communicate()
    assert process.returncode == 143, stderr.decode()
    load_model(out / MODEL_FILE)


def test_cli_run_prints_only_the_model_path(tmp_path: Path, capsys) -> None:
    out = tmp_path / "run"
    args = ["train", "--data", "dsprites-mini", "--steps", "2", "--batch-size", "16"]
    code, stdout, err = isa([*args, "--objective", "tcvae", "--learn-exponents", "-o", out], capsys)
    assert code == 0, err
    assert stdout == f"{(out / MODEL_FILE).resolve()}\n"
    sample = ["prior-sample", "--model", out / MODEL_FILE, "-n", "4", "-o", tmp_path / "z.npy"]
    code, _, err = isa(sample, capsys)
    assert code == 0, err


@pytest.fixture
def existing_run(tmp_path: Path) -> Path:
    out = tmp_path / "done"
    run(small(steps=2), out)
    return out


BAD = [
    (["--objective", "gan"], "Invalid value for '--objective'"),
    (["--prior", "laplace"], "Invalid value for '--prior'"),
    (["--latent-dim", "10"], "--latent-dim 10 disagrees with the prior"),
    (["--prior", "normal", "--layout", "4,4"], "the normal prior has none"),
    (["--beta", "-1"], "--beta must be a finite number >= 0"),
    (["--data", "{missing}"], "no such file"),
    (["--data", "nosuchset"], "unknown data set"),
    (["--steps", "2", "--epochs", "1"], "not both"),
    (["--device", "tpu"], "--device 'tpu' is unknown"),
    (["--tc-estimator", "exact"], "Invalid value for '--tc-estimator'"),
    (["--estimator", "exact"], "Invalid value for '--estimator'"),
    (["--closed-form-kl"], "--closed-form-kl needs the normal prior"),
]


@pytest.mark.parametrize(("extra", "message"), BAD)
def test_bad_input(extra: list[str], message: str, tmp_path: Path, capsys) -> None:
    out = tmp_path / "new"
    args = ["train", "--data", "dsprites-mini", "--steps", "1", "-o", out]
    extra = [e.replace("{missing}", str(tmp_path / "missing.npz")) for e in extra]
    code, _, err = isa(args + extra, capsys)
    assert code == 2, err
    assert err.startswith("isa train: error: ") and err.count("\n") == 1, err
    assert message in err, err
    assert not out.exists()


def test_existing_run_is_never_overwritten(existing_run: Path, tmp_path: Path, capsys) -> None:
    before = (existing_run / MODEL_FILE).read_bytes()
    args = ["train", "--data", "dsprites-mini", "--steps", "1", "-o", existing_run]
    code, _, err = isa(args, capsys)
    assert code == 2 and "already holds a run" in err, err
    assert (existing_run / MODEL_FILE).read_bytes() == before
    empty = tmp_path / "empty"
    empty.mkdir()
    code, _, err = isa(["train", "--resume", "-o", empty], capsys)
    assert code == 2 and "holds no checkpoint" in err, err
    (existing_run / STATE_FILE).write_bytes(b"\x00" * 20)
    code, _, err = isa(["train", "--resume", "-o", existing_run, "--steps", "5"], capsys)
    assert code == 2 and "truncated" in err, err
    assert (existing_run / MODEL_FILE).read_bytes() == before


# -- validation once, and the deprecated --estimator ------------------------------------------


@pytest.fixture
def count_opens(monkeypatch) -> list[str]:
    """Every data set the training module opens, by name."""
    opened: list[str] = []
    real = training.open_dataset

    def counting(name: str):
        opened.append(name)
        return real(name)

    monkeypatch.setattr(training, "open_dataset", counting)
    return opened


def test_isa_train_opens_its_data_set_once(tmp_path: Path, capsys, count_opens) -> None:
    out = tmp_path / "run"
    args = ["train", "--data", "dsprites-mini", "--batch-size", "16", "-q", "-o", out]
    code, _, err = isa([*args, "--steps", "1"], capsys)
    assert code == 0 and count_opens == ["dsprites-mini"], err
    code, _, err = isa(["train", "--resume", "-o", out, "-q", "--steps", "2"], capsys)
    assert code == 0 and count_opens == ["dsprites-mini"] * 2, err


def test_estimator_is_a_deprecated_alias_of_tc_estimator(tmp_path: Path, capsys) -> None:
    out = tmp_path / "run"
    args = ["train", "--data", "dsprites-mini", "--objective", "tcvae", "--batch-size", "16"]
    code, _, err = isa([*args, "--steps", "1", "-q", "-o", out, "--estimator", "mws"], capsys)
    assert code == 0, err
    assert err == "isa train: warning: --estimator is deprecated; use --tc-estimator\n"
    _, meta = load_model(out / MODEL_FILE)
    assert meta["config"]["tc_estimator"] == "mws" and "estimator" not in meta["config"]
    code, _, err = isa(["train", "--resume", "-o", out, "-q", "--estimator", "mss"], capsys)
    assert code == 2 and "--tc-estimator mss differs from the run's mws" in err, err
    both = ["--tc-estimator", "mss", "--estimator", "mws"]
    code, _, err = isa([*args, "--steps", "1", "-q", "-o", tmp_path / "b", *both], capsys)
    assert code == 2 and "--estimator and --tc-estimator disagree" in err, err
