"""`isa train` under attack: kills between checkpoint writes, concurrent writers, changed flags on
--resume, diverging losses, bad flag values and damaged model metadata (issue #11)."""

from __future__ import annotations

import dataclasses
import json
import random
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from isa_cli.main import main
from isa_core import checkpoint, io, training
from isa_core.checkpoint import (
    METRICS_FILE,
    MODEL_FILE,
    STATE_FILE,
    load_model,
    prepare_folder,
    read_run_config,
)
from isa_core.config import MAX_STEPS
from isa_core.errors import IsaError
from isa_core.locks import LOCK_FILE, folder_lock
from isa_core.training import TrainConfig, train
from tests.conftest import isa_executable, run_isa, wait_for_metrics
from tests.conftest import isa_in_process as isa

CPU = torch.device("cpu")
MINI = ["--data", "dsprites-mini", "--arch", "conv", "--batch-size", "8", "-q"]


def small(**overrides) -> TrainConfig:
    base = dict(data="dsprites-mini", arch="conv", steps=9, batch_size=8)
    base.update(log_every=2, checkpoint_every=3)
    base.update(overrides)
    return TrainConfig(**base)


def run(config: TrainConfig, folder: Path, resume: bool = False):
    prepare_folder(folder, resume=resume, force=not resume)
    return train(config, folder, CPU, resume=resume)


def weights(path: Path) -> dict[str, torch.Tensor]:
    return io.load_bundle(path).tensors


def state_step(folder: Path) -> int:
    return io.load_bundle(folder / STATE_FILE).metadata["step"]


def same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def straight(tmp_path_factory) -> Path:
    """An uninterrupted 9-step run, the reference for every resumed one."""
    folder = tmp_path_factory.mktemp("straight") / "run"
    run(small(), folder)
    return folder


# -- item 1: a kill between the two checkpoint writes ------------------------------------------


class _Killed(BaseException):
    """Stands in for SIGKILL: nothing after it runs."""


def _crash_before_model_write(monkeypatch, at_step: int) -> None:
    """Make the checkpoint at ``at_step`` die after its state file, before its model file."""
    real = io.save_bundle

    def save_bundle(path, tensors, metadata):
        if Path(path).name == MODEL_FILE and metadata.get("step") == at_step:
            raise _Killed
        real(path, tensors, metadata)

    monkeypatch.setattr(checkpoint.io, "save_bundle", save_bundle)


@pytest.mark.parametrize("at_step", [3, 6])
def test_kill_between_state_and_model_write_resumes_exactly(
    tmp_path: Path, straight: Path, monkeypatch, at_step: int
) -> None:
    """At the first checkpoint (no model file yet) and at a later one (the model lags)."""
    folder = tmp_path / "run"
    _crash_before_model_write(monkeypatch, at_step)
    with pytest.raises(_Killed):
        run(small(), folder)
    monkeypatch.undo()
    assert state_step(folder) == at_step
    if at_step == 3:  # the first checkpoint: no model file yet, the state alone resumes
        assert not (folder / MODEL_FILE).exists()
    else:  # the model file is a checkpoint older, and still a complete model
        _, meta = load_model(folder / MODEL_FILE)
        assert meta["step"] == at_step - 3
    # A resume with no steps left rewrites the model file from the state.
    short = small(steps=at_step)
    assert run(short, folder, resume=True).step == at_step
    _, meta = load_model(folder / MODEL_FILE)
    assert meta["step"] == at_step
    result = run(small(), folder, resume=True)
    assert result.step == 9
    for name in (MODEL_FILE, STATE_FILE):
        assert same(weights(folder / name), weights(straight / name)), name


def test_kill_between_writes_through_the_cli(tmp_path: Path, capsys, monkeypatch) -> None:
    out = tmp_path / "run"
    _crash_before_model_write(monkeypatch, 2)
    with pytest.raises(_Killed):
        main(["train", *MINI, "--steps", "4", "--checkpoint-every", "1", "-o", str(out)])
    monkeypatch.undo()
    code, _, err = isa(["train", "--resume", "-o", out], capsys)
    assert code == 0, err
    assert load_model(out / MODEL_FILE)[1]["step"] == 4


# -- item 2: one writer per run folder; parents are created ---------------------------------


def test_second_writer_is_refused_and_a_dead_holders_lock_does_not_block(
    tmp_path: Path, capsys
) -> None:
    out = tmp_path / "run"
    holder = subprocess.Popen(
        [isa_executable(), "train", *MINI, "--steps", "100000", "--log-every", "1", "-o", out],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        wait_for_metrics(out, 1)
        assert holder.poll() is None and (out / METRICS_FILE).exists()
        for extra in (["--force", *MINI, "--steps", "1"], ["--resume"]):
            code, _, err = isa(["train", "-o", out, *extra], capsys)
            assert code == 2, err
            assert err.startswith("isa train: error: ") and err.count("\n") == 1, err
            assert f"process {holder.pid}" in err and "isa train" in err, err
            assert (out / METRICS_FILE).exists()  # --force deleted nothing
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.communicate()
    code, _, err = isa(["train", "-o", out, "--force", *MINI, "--steps", "1"], capsys)
    assert code == 0, err


def test_in_use_folder_is_left_alone(tmp_path: Path, capsys) -> None:
    out = tmp_path / "run"
    out.mkdir()
    (out / MODEL_FILE).write_bytes(b"precious")
    with folder_lock(out, "isa sweep run"):
        code, _, err = isa(["train", *MINI, "--steps", "1", "--force", "-o", out], capsys)
    assert code == 2 and "isa sweep run" in err, err
    assert (out / MODEL_FILE).read_bytes() == b"precious"


def test_out_parents_are_created(tmp_path: Path, capsys) -> None:
    out = tmp_path / "runs" / "deeper" / "a"
    code, stdout, err = isa(["train", *MINI, "--steps", "1", "-o", out], capsys)
    assert code == 0, err
    assert stdout == f"{(out / MODEL_FILE).resolve()}\n"
    config = io.load_bundle(out / MODEL_FILE).metadata["config"]
    assert config["steps"] == 1 and config["epochs"] is None  # what was asked, no epochs


def test_resume_without_a_checkpoint_says_how_to_start_over(tmp_path: Path, capsys) -> None:
    out = tmp_path / "run"
    out.mkdir()
    (out / METRICS_FILE).write_text('{"step": 1}\n')  # killed before its first checkpoint
    code, _, err = isa(["train", "--resume", "-o", out], capsys)
    assert code == 2 and "holds no checkpoint" in err and "--force" in err, err


# -- item 3: --resume refuses flags that change the run ----------------------------------------


@pytest.fixture(scope="module")
def two_steps(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("resume") / "run"
    run(small(steps=2, checkpoint_every=1), out)
    return out


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--beta", "100"], "--beta 100.0 differs from the run's 1.0"),
        (["--objective", "tcvae"], "--objective tcvae differs from the run's vae"),
        (["--data", "other"], "--data other differs from the run's dsprites-mini"),
        (["--seed", "3"], "--seed 3 differs from the run's 0"),
        (["--batch-size", "64"], "--batch-size 64 differs"),
        (["--scale", "3"], "--scale 3.0 differs"),
        (["--learn-exponents"], "--learn-exponents differs from the run's --no-learn-exponents"),
        (["--p1", "1.5"], "--p1 1.5 gives the prior 2.1(1.5(4)"),
        (["--prior", "normal"], "--prior normal gives the prior 2(20), which differs"),
        (["--layout", "4x5"], "--layout 4x5 gives the prior"),
    ],
)
def test_resume_refuses_a_flag_that_changes_the_run(
    two_steps: Path, capsys, extra: list[str], message: str
) -> None:
    before = (two_steps / STATE_FILE).read_bytes()
    code, _, err = isa(["train", "--resume", "-o", two_steps, *extra], capsys)
    assert code == 2, err
    assert err.startswith("isa train: error: ") and err.count("\n") == 1, err
    assert message in err and "drop it or start a new run" in err, err
    assert (two_steps / STATE_FILE).read_bytes() == before


def test_resume_accepts_unchanged_and_resumable_flags(tmp_path: Path, capsys) -> None:
    out = tmp_path / "run"
    run(small(steps=1, checkpoint_every=1), out)
    args = ["train", "--resume", "-o", out, "--beta", "1", "--data", "dsprites-mini"]
    args += ["--p1", "2.2", "--steps", "2", "--log-every", "1", "--checkpoint-every", "1"]
    code, _, err = isa([*args, "--device", "cpu", "--quiet"], capsys)
    assert code == 0, err
    config = read_run_config(out)
    assert config.steps == 2 and config.epochs is None and config.log_every == 1


# -- item 4: a diverging loss stops the run and keeps the last good checkpoint ---------------


def test_nan_loss_from_the_start_exits_2_and_saves_nothing(tmp_path: Path, capsys) -> None:
    out = tmp_path / "run"
    code, stdout, err = isa(
        ["train", *MINI, "--steps", "3", "--scale", "1e-300", "-o", out], capsys
    )
    assert code == 2 and stdout == "", err
    assert err.count("\n") == 1 and "diverged at step 1" in err and "lower lr" in err, err
    assert "no checkpoint was written" in err, err
    assert not (out / MODEL_FILE).exists()


def _poison(monkeypatch, at_step: int, what: str) -> None:
    """Make step ``at_step`` (1-based) report a NaN loss, or leave NaN weights behind."""
    real = training._Run.step

    def step(self, index: int):
        parts = real(self, index)
        if index + 1 == at_step:
            if what == "loss":
                parts["kl"] = parts["kl"] * float("nan")
            else:
                with torch.no_grad():
                    next(self.model.parameters()).view(-1)[0] = float("inf")
        return parts

    monkeypatch.setattr(training._Run, "step", step)


def test_nan_mid_run_keeps_the_last_good_checkpoint(tmp_path: Path, monkeypatch) -> None:
    folder = tmp_path / "run"
    _poison(monkeypatch, 5, "loss")
    with pytest.raises(IsaError, match=r"diverged at step 5: its kl is nan.*\(step 3\) is kept"):
        run(small(), folder)
    model, meta = load_model(folder / MODEL_FILE)
    assert meta["step"] == 3 and state_step(folder) == 3
    assert all(torch.isfinite(p).all() for p in model.state_dict().values())
    lines = (folder / METRICS_FILE).read_text().splitlines()
    steps = [json.loads(line)["step"] for line in lines]
    assert steps == [2, 4]  # the line of step 6, with the NaN, was not written


def test_non_finite_weights_are_never_saved(tmp_path: Path, monkeypatch) -> None:
    folder = tmp_path / "run"
    _poison(monkeypatch, 3, "weights")
    with pytest.raises(IsaError, match="step 3: its weights are no longer finite"):
        run(small(), folder)
    assert not (folder / MODEL_FILE).exists()
    assert not (folder / STATE_FILE).exists()


# -- item 5: bad flag values and malformed model metadata --------------------------------------


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--anneal-steps", "-5"], "--anneal-steps must be >= 0"),
        (["--epochs", "nan"], "--epochs must be a positive finite number"),
        (["--epochs", "inf"], "--epochs must be a positive finite number"),
        (["--epochs", "0"], "--epochs must be a positive finite number"),
        (["--epochs", "-2"], "--epochs must be a positive finite number"),
        (["--steps", "-3"], "--steps must be >= 1"),
        (["--steps", "0"], "--steps must be >= 1"),
        (["--seed", str(2**70)], "--seed must be a whole number from 0 to 2**63-1"),
        (["--seed", "-1"], "--seed must be a whole number from 0 to 2**63-1"),
        (["--lr", "nan"], "--lr must be a positive finite number"),
        (["--lr", "0"], "--lr must be a positive finite number"),
        (["--exponent-lr", "-1"], "--exponent-lr must be a positive finite number"),
        (["--beta", "inf"], "--beta must be a finite number >= 0"),
        (["--gamma", "nan"], "--gamma must be a finite number >= 0"),
        (["--scale", "0"], "--scale must be a positive finite number"),
        (["--scale", "nan"], "--scale must be a positive finite number"),
        (["--batch-size", "0"], "--batch-size must be >= 1"),
        (["--checkpoint-every", "0"], "--checkpoint-every must be >= 1"),
        (["--log-every", "-1"], "--log-every must be >= 1"),
        (["--steps", "9" * 23], "--steps 99,999,999,999,999,999,999,999 is more than the"),
        (
            ["--epochs", "1e300"],
            "--epochs 1e+300 is about 5.52e+302 optimizer steps at batch size 8",
        ),
        (["--epochs", "1e7", "--batch-size", "1"], "give fewer epochs"),
    ],
)
def test_bad_flag_values_exit_2_before_any_file(
    tmp_path: Path, capsys, extra: list[str], message: str
) -> None:
    out = tmp_path / "new"
    length = [] if {"--steps", "--epochs"} & set(extra) else ["--steps", "1"]
    code, stdout, err = isa(["train", *MINI, *length, *extra, "-o", out], capsys)
    assert code == 2 and stdout == "", err
    assert err.startswith("isa train: error: ") and err.count("\n") == 1, err
    assert message in err, err
    assert not out.exists()


def test_a_seed_up_to_2_63_trains(tmp_path: Path) -> None:
    result = run(small(steps=1, seed=2**63 - 1), tmp_path / "run")
    assert result.step == 1


@pytest.fixture(scope="module")
def model_file(two_steps: Path) -> Path:
    return two_steps / MODEL_FILE


def _with_metadata(model_file: Path, tmp_path: Path, change) -> Path:
    bundle = io.load_bundle(model_file)
    meta = json.loads(json.dumps(bundle.metadata))
    change(meta)
    path = tmp_path / "forged.safetensors"
    io.save_bundle(path, bundle.tensors, meta)
    return path


def _set(*keys_and_value):
    *keys, value = keys_and_value

    def change(meta: dict) -> None:
        target = meta
        for key in keys[:-1]:
            target = target[key]
        target[keys[-1]] = value

    return change


def _mlp_of_shape(shape: list[int]):
    def change(meta: dict) -> None:
        meta["config"]["arch"] = "mlp"
        meta["image_shape"] = shape

    return change


MALFORMED = [
    (_set("config", "not an object"), "'config' metadata is not an object"),
    (_set("config", ["a", "list"]), "'config' metadata is not an object"),
    (_set("config", "tree", 5), "malformed 'tree'"),
    (_set("config", "tree", "2.1(2.2("), "does not describe a model"),
    (_set("config", "scale", -1), "does not describe a model"),
    (_set("config", "arch", "transformer"), "does not describe a model"),
    (_set("config", "learn_exponents", "yes"), "malformed 'learn_exponents'"),
    (_set("config", "steps", 1.5), "malformed 'steps'"),
    (_set("image_shape", "abc"), "malformed image_shape"),
    (_set("image_shape", [1, 64]), "malformed image_shape"),
    (_set("image_shape", [1, -64, 64]), "malformed image_shape"),
    (_set("image_shape", [3, 64, 64]), "weights do not match its config"),
    (_set("image_shape", [1, 32, 32]), "arch conv needs 64x64 images"),
    (_set("image_shape", [1, 10**9, 10**9]), "malformed image_shape"),
    (_mlp_of_shape([1, 4096, 4096]), "weights do not match its config"),  # 80 GB not allocated
    (lambda meta: meta.pop("image_shape"), "is not an isa model"),
]


@pytest.mark.parametrize(("change", "message"), MALFORMED)
def test_malformed_model_metadata_is_an_isa_error_naming_the_file(
    model_file: Path, tmp_path: Path, change, message: str
) -> None:
    path = _with_metadata(model_file, tmp_path, change)
    with pytest.raises(IsaError) as error:
        load_model(path)
    assert str(path) in str(error.value) and message in str(error.value), error.value


def test_malformed_model_through_the_cli(model_file: Path, tmp_path: Path, capsys) -> None:
    path = _with_metadata(model_file, tmp_path, _set("config", "tree", 5))
    code, _, err = isa(
        ["prior-sample", "--model", path, "-n", "2", "-o", tmp_path / "z.npy"], capsys
    )
    assert code == 2 and err.count("\n") == 1 and str(path) in err, err


def test_config_from_metadata_refuses_a_non_object() -> None:
    with pytest.raises(IsaError, match=r"in\.safetensors"):
        TrainConfig.from_metadata(None, "in.safetensors")


# -- item 6: runs given --steps store no epochs ------------------------------------------------


def test_steps_runs_store_epochs_none_and_old_files_still_load(
    model_file: Path, tmp_path: Path
) -> None:
    meta = io.load_bundle(model_file).metadata
    assert meta["config"]["steps"] == 2 and meta["config"]["epochs"] is None
    assert TrainConfig(epochs=0.5).epochs == 0.5
    old = _with_metadata(model_file, tmp_path, _set("config", "epochs", 20.0))
    model, meta = load_model(old)
    assert model.latent_dim == 20 and TrainConfig.from_metadata(meta["config"]).epochs is None


# -- item 7: SIGKILL at random moments, many times over -----------------------------------------


def _last_logged_step(folder: Path) -> int:
    steps = [0]
    for line in (folder / METRICS_FILE).read_text().splitlines():
        try:
            steps.append(json.loads(line)["step"])
        except (json.JSONDecodeError, KeyError):
            continue  # a line cut short by the kill
    return steps[-1]


def _isa_run(args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run([isa_executable(), *args], capture_output=True, check=False)


@pytest.mark.slow
def test_sigkill_at_random_moments_never_bricks_a_run(tmp_path: Path) -> None:
    total = 250  # ample: each of the 20 lives below advances a few steps
    args = ["train", "--data", "dsprites-mini", "--arch", "conv", "--batch-size", "8", "-q"]
    args += ["--steps", str(total), "--checkpoint-every", "1", "--log-every", "1"]
    reference = _isa_run([*args, "-o", str(tmp_path / "straight")])
    assert reference.returncode == 0, reference.stderr.decode()

    out = tmp_path / "killed"
    rng = random.Random(11)
    for kills in range(20):
        start = state_step(out) if (out / STATE_FILE).exists() else 0
        command = [*args, "-o", str(out)] if kills == 0 else ["train", "--resume", "-o", str(out)]
        process = subprocess.Popen([isa_executable(), *command], stderr=subprocess.PIPE)
        deadline = time.time() + 120
        while process.poll() is None and time.time() < deadline:
            if (out / STATE_FILE).exists() and state_step(out) > start:
                break  # this life has written a checkpoint of its own
            time.sleep(0.05)
        assert process.poll() is None, process.communicate()[1].decode()
        time.sleep(rng.uniform(0, 0.4))
        process.send_signal(signal.SIGKILL)
        process.communicate()
        logged, saved = _last_logged_step(out), state_step(out)
        assert saved >= logged - 1, (saved, logged)  # at most one checkpoint interval lost
        _, meta = load_model(out / MODEL_FILE)  # always a complete model
        assert saved - 1 <= meta["step"] <= saved
        assert saved < total, "the run finished before 20 kills; raise total"

    done = _isa_run(["train", "--resume", "-o", str(out), "-q"])
    assert done.returncode == 0, done.stderr.decode()
    assert same(weights(out / MODEL_FILE), weights(tmp_path / "straight" / MODEL_FILE))
    assert not [p.name for p in out.iterdir() if p.name.endswith(".tmp")]


# -- hostile-input findings: damaged tensors, logs and optimizer state; endless runs ------------


def tree_files(folder: Path) -> dict[str, bytes]:
    """The run's files (not the lock file, which a writer may leave behind)."""
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file() and p.name != LOCK_FILE}


def test_run_length_is_bounded_even_on_resume(two_steps: Path, capsys) -> None:
    TrainConfig(steps=MAX_STEPS)
    with pytest.raises(IsaError, match="more than the 1,000,000,000 optimizer steps"):
        TrainConfig(steps=MAX_STEPS + 1)
    before = tree_files(two_steps)
    code, _, err = isa(["train", "--resume", "-o", two_steps, "--steps", 10**12], capsys)
    assert code == 2 and err.count("\n") == 1 and "more than the 1,000,000,000" in err, err
    assert tree_files(two_steps) == before


@pytest.fixture(scope="module")
def learned(tmp_path_factory) -> Path:
    """A one-step run whose subspace exponents are learned parameters."""
    out = tmp_path_factory.mktemp("learned") / "run"
    config = small(steps=1, checkpoint_every=1, log_every=1, learn_exponents=True)
    run(dataclasses.replace(config, tree="2.1(2.2(2),2.2(2))"), out)
    return out


def _with_tensor(source: Path, tmp_path: Path, name: str, value: float) -> Path:
    bundle = io.load_bundle(source)
    tensors = dict(bundle.tensors)
    tensors[name] = torch.full_like(tensors[name], value)
    path = tmp_path / "forged.safetensors"
    io.save_bundle(path, tensors, bundle.metadata)
    return path


DAMAGED_TENSORS = [
    ("prior.scale", float("nan"), "'prior.scale' holds NaN or infinite values"),
    ("prior.scale", -1.0, "'prior.scale' is -1, but its config has scale 2"),
    ("prior.scale", 0.0, "'prior.scale' is 0, but its config has scale 2"),
    ("prior.p0", float("nan"), "'prior.p0' holds NaN"),
    ("prior.p0", 0.0, "'prior.p0' is [0.0], but its config's tree"),
    ("prior.p0", -2.1, "'prior.p0' is [-2.1]"),
    ("prior.exponents_unconstrained", float("nan"), "'prior.exponents_unconstrained' holds NaN"),
    ("prior.exponents_unconstrained", -1e30, "gives the exponent 0; learned exponents must"),
    ("prior.exponents_unconstrained", 1e30, "gives the exponent inf; learned exponents must"),
    ("encoder.net.0.weight", float("inf"), "'encoder.net.0.weight' holds NaN or infinite"),
]


@pytest.mark.parametrize(("name", "value", "message"), DAMAGED_TENSORS)
def test_model_tensors_are_checked_naming_the_file_and_tensor(
    learned: Path, tmp_path: Path, name: str, value: float, message: str
) -> None:
    model, _ = load_model(learned / MODEL_FILE)  # the real file loads
    assert model.prior.learn_exponents
    path = _with_tensor(learned / MODEL_FILE, tmp_path, name, value)
    with pytest.raises(IsaError) as error:
        load_model(path)
    assert str(path) in str(error.value) and message in str(error.value), error.value


def test_fixed_exponents_must_match_the_config(model_file: Path, tmp_path: Path) -> None:
    path = _with_tensor(model_file, tmp_path, "prior.exponents_unconstrained", -1e30)
    with pytest.raises(IsaError, match=r"gives the exponents \[0\.0, .*has \[2\.2, 2\.2"):
        load_model(path)


@pytest.mark.parametrize("command", ["prior-sample", "prior-logpdf"])
def test_damaged_prior_through_the_cli(learned: Path, tmp_path: Path, capsys, command: str) -> None:
    path = _with_tensor(learned / MODEL_FILE, tmp_path, "prior.scale", -1.0)
    points = tmp_path / "points.npy"
    np.save(points, np.zeros((3, 4)))
    args = ["-n", "2"] if command == "prior-sample" else [points]
    code, out, err = isa([command, *args, "--model", path, "-o", tmp_path / "o.npy"], capsys)
    assert code == 2 and out == "" and err.count("\n") == 1, err
    assert err.startswith(f"isa {command}: error: {path}: tensor 'prior.scale' is -1"), err


def test_resume_keeps_the_good_lines_of_a_binary_metrics_log(learned: Path, tmp_path: Path) -> None:
    folder = tmp_path / "run"
    shutil.copytree(learned, folder)
    good = (folder / METRICS_FILE).read_bytes()
    with (folder / METRICS_FILE).open("ab") as log:
        log.write(b'\xff\xfe\x00\x81 binary\n[1]\n{"step": "x"}\n{"step": 1\n')
    result = run(dataclasses.replace(read_run_config(folder), steps=2), folder, resume=True)
    assert result.step == 2
    lines = (folder / METRICS_FILE).read_bytes().splitlines(keepends=True)
    assert b"".join(lines[:-1]) == good and json.loads(lines[-1])["step"] == 2


def _edit_state(folder: Path, edit) -> None:
    bundle = io.load_bundle(folder / STATE_FILE)
    io.save_bundle(folder / STATE_FILE, edit(dict(bundle.tensors)), bundle.metadata)


def _first_moment(tensors: dict) -> str:
    return next(k for k in sorted(tensors) if k.startswith("opt.") and k.endswith(".exp_avg"))


def _shrink(tensors: dict) -> dict:
    return {k: v[:1] if k.startswith("opt.") and v.ndim else v for k, v in tensors.items()}


def _retype(tensors: dict) -> dict:
    key = _first_moment(tensors)
    return {**tensors, key: tensors[key].double()}


def _drop_second_moment(tensors: dict) -> dict:
    key = _first_moment(tensors) + "_sq"
    return {k: v for k, v in tensors.items() if k != key}


def _stray(tensors: dict) -> dict:
    return {**tensors, "opt.999.exp_avg": torch.zeros(1)}


def _vector_step(tensors: dict) -> dict:
    key = next(k for k in sorted(tensors) if k.startswith("opt.") and k.endswith(".step"))
    return {**tensors, key: torch.ones(3)}


def _nan_moment(tensors: dict) -> dict:
    key = _first_moment(tensors)
    return {**tensors, key: torch.full_like(tensors[key], float("nan"))}


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (_retype, "torch.float64"),
        (_drop_second_moment, "has no exp_avg_sq"),
        (_stray, "unexpected optimizer tensor 'opt.999.exp_avg'"),
        (_vector_step, "is not a step count"),
        (_nan_moment, "holds NaN or infinite values"),
    ],
)
def test_damaged_optimizer_state_is_refused_before_use(
    learned: Path, tmp_path: Path, edit, message: str
) -> None:
    folder = tmp_path / "run"
    shutil.copytree(learned, folder)
    _edit_state(folder, edit)
    with pytest.raises(IsaError) as error:
        run(read_run_config(folder), folder, resume=True)
    text = str(error.value)
    assert text.startswith(f"{folder / STATE_FILE}: "), text
    assert message in text and "start the run over with --force" in text, text


def test_optimizer_moments_of_the_wrong_shape_exit_2_not_sigsegv(
    learned: Path, tmp_path: Path
) -> None:
    """Fused Adam on moments of the wrong shape crashed the process; run it in a child."""
    folder = tmp_path / "run"
    shutil.copytree(learned, folder)
    _edit_state(folder, _shrink)
    before = tree_files(folder)
    done = run_isa(["train", "--resume", "-o", str(folder), "--steps", "2", "-q"])
    err = done.stderr.decode()
    assert done.returncode == 2 and err.count("\n") == 1, err
    assert str(folder / STATE_FILE) in err and "optimizer tensor 'opt." in err
    assert re.search(r"is torch\.float32 \(1[,)].*, but its parameter is", err), err
    assert tree_files(folder) == before
