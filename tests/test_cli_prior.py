"""`isa prior-sample`, `prior-logpdf`, `prior-plot` through typer's runner and the real binary."""

from __future__ import annotations

import io
import pickle
import subprocess
from pathlib import Path

import numpy as np
import pytest
import scipy.stats as st
from typer.testing import CliRunner

from isa_cli.main import app
from tests.conftest import isa_executable
from tests.conftest import isa_in_process as isa

runner = CliRunner()


def invoke(args: list[str], stdin: bytes | None = None):
    return runner.invoke(app, args, input=stdin)


def load(data: bytes) -> np.ndarray:
    return np.load(io.BytesIO(data), allow_pickle=False)


def test_sample_defaults_to_isa_5x4_float64() -> None:
    result = invoke(["prior-sample", "-n", "7", "--seed", "1"])
    assert result.exit_code == 0, result.stderr
    z = load(result.stdout_bytes)
    assert z.shape == (7, 20) and z.dtype == np.float64


def test_sample_dtype_and_out_file(tmp_path: Path) -> None:
    out = tmp_path / "z.npy"
    result = invoke(
        ["prior-sample", "-n", "5", "--tree", "1.5(3)", "--dtype", "float32", "-o", str(out)]
    )
    assert result.exit_code == 0 and result.stdout == f"{out.resolve()}\n"  # the path written
    z = np.load(out)
    assert z.shape == (5, 3) and z.dtype == np.float32


def test_logpdf_matches_scipy_for_the_normal_prior(tmp_path: Path) -> None:
    z = np.random.default_rng(0).standard_normal((9, 4))
    path = tmp_path / "z.npy"
    np.save(path, z)
    result = invoke(["prior-logpdf", str(path), "--layout", "2,2", "--p0", "2", "--p1", "2"])
    assert result.exit_code == 0, result.stderr
    log_p = load(result.stdout_bytes)
    assert log_p.dtype == np.float64 and log_p.shape == (9,)
    np.testing.assert_allclose(log_p, st.norm.logpdf(z).sum(-1), rtol=1e-12)
    text = invoke(["prior-logpdf", str(path), "--tree", "2(4)", "--text"])
    values = [float(line) for line in text.stdout.splitlines()]
    np.testing.assert_allclose(values, log_p, rtol=1e-15)


def test_logpdf_reads_npy_or_a_path_from_stdin(tmp_path: Path) -> None:
    z = np.random.default_rng(1).standard_normal((3, 20)).astype(np.float32)
    path = tmp_path / "z.npy"
    np.save(path, z)
    from_bytes = invoke(["prior-logpdf", "-"], stdin=path.read_bytes())
    from_path = invoke(["prior-logpdf"], stdin=f"{path}\n".encode())
    assert from_bytes.exit_code == 0 and from_path.exit_code == 0
    assert from_bytes.stdout_bytes == from_path.stdout_bytes


def test_per_subspace_p1_and_tree_flag_agree() -> None:
    sample = invoke(["prior-sample", "-n", "4", "--layout", "2,3", "--p1", "1.5,3"])
    via_flags = invoke(["prior-logpdf", "--layout", "2,3", "--p1", "1.5,3"], sample.stdout_bytes)
    via_tree = invoke(["prior-logpdf", "--tree", "2.1(1.5(2),3(3))"], sample.stdout_bytes)
    assert via_flags.exit_code == 0 and via_flags.stdout_bytes == via_tree.stdout_bytes


BAD = [
    (["prior-logpdf", "{wide}"], "columns but the prior has n = 20"),
    (["prior-logpdf", "{nan}"], "row 1 contains NaN or inf"),
    (["prior-logpdf", "{inf}"], "NaN or inf"),
    (["prior-logpdf", "{vector}"], "expected a 2-D array"),
    (["prior-logpdf", "{text}"], "not an NPY file"),
    (["prior-logpdf", "{pickle}"], "pickle"),
    (["prior-logpdf", "{truncated}"], "truncated"),
    (["prior-logpdf", "{missing}"], "no such file"),
    (["prior-logpdf", "{good}", "--p0", "0"], "--p0 must be a positive"),
    (["prior-logpdf", "{good}", "--p0", "nan"], "--p0 must be a positive"),
    (["prior-logpdf", "{good}", "--p1", "-2"], "--p1 must be a positive"),
    (["prior-logpdf", "{good}", "--p1", "abc"], "--p1 'abc' is not a number"),
    (["prior-logpdf", "{good}", "--p0", "abc"], "Invalid value for '--p0'"),
    (["prior-logpdf", "{good}", "--scale", "0"], "--scale must be a positive"),
    (["prior-logpdf", "{good}", "--tree", "2.1(2.2(4),"], "malformed tree spec"),
    (["prior-logpdf", "{good}", "--tree", "0(20)"], "positive finite"),
    (["prior-logpdf", "{good}", "--tree", "2(20)", "--p0", "2"], "--tree already fixes"),
    (["prior-logpdf", "{good}", "--layout", "5y4"], "cannot parse layout"),
    (["prior-sample", "-n", "3", "--dtype", "float16"], "Invalid value for '--dtype'"),
    (["prior-sample", "-n", "0"], "Invalid value for '-n'"),
    (["prior-sample", "-n", "3", "--method", "isa", "--tree", "2(1,2(2))"], "ISA tree"),
    (["prior-sample", "-n", "3", "--bogus"], "No such option"),
    (["prior-plot", "-o", "{png}"], "draws 2-D priors"),
    (["prior-plot", "--tree", "1(2)", "-o", "{pdf}"], "PNG"),
]


@pytest.fixture
def files(tmp_path: Path) -> dict[str, str]:
    good = np.zeros((3, 20))
    nan = good.copy()
    nan[1, 4] = np.nan
    inf = good.copy()
    inf[2, 0] = np.inf
    paths = {
        "good": good,
        "wide": np.zeros((3, 7)),
        "nan": nan,
        "inf": inf,
        "vector": np.zeros(20),
    }
    names = {}
    for name, array in paths.items():
        np.save(tmp_path / f"{name}.npy", array)
        names[name] = str(tmp_path / f"{name}.npy")
    (tmp_path / "text.npy").write_text("1 2 3\n")
    (tmp_path / "pickle.npy").write_bytes(pickle.dumps(good))
    (tmp_path / "truncated.npy").write_bytes((tmp_path / "good.npy").read_bytes()[:200])
    names.update(
        text=str(tmp_path / "text.npy"),
        pickle=str(tmp_path / "pickle.npy"),
        truncated=str(tmp_path / "truncated.npy"),
        missing=str(tmp_path / "missing.npy"),
        png=str(tmp_path / "x.png"),
        pdf=str(tmp_path / "x.pdf"),
    )
    return names


@pytest.mark.parametrize(("template", "message"), BAD)
def test_bad_input_is_one_line_exit_2_and_keeps_existing_output(
    template: list[str], message: str, files: dict[str, str], tmp_path: Path, capsys
) -> None:
    out = tmp_path / "existing.out"
    out.write_bytes(b"keep me")
    args = [a.format(**files) for a in template]
    if "-o" not in args:
        args += ["-o", str(out)]
    code, _, stderr = isa(args, capsys)
    assert code == 2, stderr
    command = args[0]
    assert stderr.startswith(f"isa {command}: error: "), stderr
    assert stderr.count("\n") == 1 and "Traceback" not in stderr
    assert message in stderr
    assert out.read_bytes() == b"keep me"


def test_debug_shows_traceback(files: dict[str, str], capsys, monkeypatch) -> None:
    monkeypatch.setenv("ISA_DEBUG", "1")
    code, _, err = isa(["prior-logpdf", files["wide"]], capsys)
    assert code == 2 and "Traceback" in err, err


def test_pipe_through_the_real_entry_point_is_deterministic(tmp_path: Path) -> None:
    isa = isa_executable()
    command = (
        f"'{isa}' prior-sample -n 2000 --layout 4,4,3 --p1 2.2,1.9,3 --seed 42 "
        f"| '{isa}' prior-logpdf --layout 4,4,3 --p1 2.2,1.9,3"
    )
    first = subprocess.run(command, shell=True, capture_output=True, check=True).stdout
    second = subprocess.run(command, shell=True, capture_output=True, check=True).stdout
    assert first == second
    log_p = load(first)
    assert log_p.shape == (2000,) and np.isfinite(log_p).all()
    one = invoke(["prior-sample", "-n", "50", "--seed", "42"]).stdout_bytes
    two = invoke(["prior-sample", "-n", "50", "--seed", "42"]).stdout_bytes
    other = invoke(["prior-sample", "-n", "50", "--seed", "43"]).stdout_bytes
    assert one == two and one != other


def test_refuses_binary_to_a_terminal() -> None:
    pty = pytest.importorskip("pty")
    import os

    leader, follower = pty.openpty()
    try:
        result = subprocess.run(
            [isa_executable(), "prior-sample", "-n", "2"], stdout=follower, stderr=subprocess.PIPE
        )
    finally:
        os.close(follower)
        os.close(leader)
    assert result.returncode == 2 and b"terminal" in result.stderr


def test_version_and_help(capsys) -> None:
    from isa_core import __version__

    code, out, _ = isa(["--version"], capsys)
    assert code == 0 and out.strip() == f"isa {__version__}"
    code, out, _ = isa(["prior-sample", "--help"], capsys)
    assert code == 0 and "--layout" in out
    assert isa([], capsys)[0] == 0


def test_prior_plot_writes_png_from_samples_or_stdin(tmp_path: Path) -> None:
    out = tmp_path / "prior.png"
    result = invoke(["prior-plot", "--tree", "1(2)", "--samples", "300", "-o", str(out)])
    assert result.exit_code == 0, result.stderr
    assert out.read_bytes().startswith(b"\x89PNG")
    assert result.stdout.strip() == str(out.resolve())
    samples = invoke(["prior-sample", "-n", "200", "--tree", "4(2)"]).stdout_bytes
    piped = invoke(["prior-plot", "-", "--tree", "4(2)", "-o", str(out)], stdin=samples)
    assert piped.exit_code == 0, piped.stderr
