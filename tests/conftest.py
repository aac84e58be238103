"""Shared fixtures: the real `isa` entry point, the GPU marker, the C++ compiler marker."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import pytest
import torch


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


# The fused kernels are C++ built by TorchInductor: skip their tests where no compiler exists
# (the library then falls back to eager, which the fallback tests cover).
needs_compiler = pytest.mark.skipif(
    not (os.environ.get("CXX") or shutil.which("g++") or shutil.which("clang++")),
    reason="no C++ compiler for torch.compile",
)


def isa_in_process(args: list, capsys: pytest.CaptureFixture) -> tuple[int, str, str]:
    """Run `isa ARGS` in this process (the real entry point): exit status, stdout, stderr."""
    from isa_cli.main import main

    capsys.readouterr()
    with pytest.raises(SystemExit) as done:
        main([str(a) for a in args])
    out, err = capsys.readouterr()
    return done.value.code, out, err


def isa_executable() -> str:
    """The installed `isa` script of this interpreter (falls back to PATH)."""
    candidate = Path(sysconfig.get_path("scripts")) / "isa"
    if candidate.exists():
        return str(candidate)
    found = shutil.which("isa")
    if found is None:
        pytest.fail("the `isa` entry point is not installed; run pip install -e '.[dev]'")
    return found


@pytest.fixture
def isa_bin() -> str:
    return isa_executable()


def run_isa(args: list[str], stdin: bytes | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([isa_executable(), *args], input=stdin, capture_output=True, check=False)


@pytest.fixture
def python_exe() -> str:
    return sys.executable


def wait_for_metrics(folder: Path, lines: int, timeout: float = 120.0) -> None:
    """Wait until a training run in ``folder`` has logged ``lines`` metrics lines; fail the test
    (naming what was seen) if it has not after ``timeout`` seconds."""
    metrics = folder / "metrics.jsonl"
    deadline = time.time() + timeout
    while time.time() < deadline:
        if metrics.exists() and metrics.read_text().count("\n") >= lines:
            return
        time.sleep(0.1)
    seen = metrics.read_text().count("\n") if metrics.exists() else 0
    pytest.fail(f"{metrics}: {seen} of {lines} metrics lines after {timeout:g} s")
