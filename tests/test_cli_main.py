"""The entry point's message formats, independent of any one command."""

from __future__ import annotations

import errno
import os
import subprocess
import warnings

import pytest

from isa_cli.main import _one_line_warning
from tests.conftest import isa_executable


def test_warnings_print_as_one_line_with_the_command_name(capsys) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = _one_line_warning("train")
        warnings.warn(
            "fused TC kernels unavailable (no compiler\nfound); eager", RuntimeWarning, stacklevel=1
        )
        warnings.showwarning = _one_line_warning("")
        warnings.warn("plain", UserWarning, stacklevel=1)
    assert capsys.readouterr().err == (
        "isa train: warning: fused TC kernels unavailable (no compiler found); eager\n"
        "isa: warning: plain\n"
    )


def _exit_of(monkeypatch, capsys, error: BaseException) -> tuple[int, str]:
    """Run `isa prior-sample` with the app replaced by one that raises ``error``."""
    import isa_cli.main as entry

    def raising(**_kwargs):
        raise error

    monkeypatch.setattr(entry, "_click_command", lambda: raising)
    monkeypatch.delenv("ISA_DEBUG", raising=False)
    try:
        entry.main(["prior-sample", "-n", "3"])
    except SystemExit as done:
        return done.code, capsys.readouterr().err
    raise AssertionError("main() did not exit")


@pytest.mark.parametrize(
    ("error", "words"),
    [
        (MemoryError(), "out of memory"),
        (RecursionError("maximum recursion depth exceeded"), "nested too deeply"),
        (OSError(errno.ENOSPC, "No space left on device", "out.npy"), "free space"),
        (OSError(errno.EROFS, "Read-only file system", "/ro/x.npy"), "read-only"),
        (OSError(errno.EACCES, "Permission denied", "x.npy"), "permissions"),
    ],
)
def test_environment_failures_are_one_line_with_exit_2(monkeypatch, capsys, error, words) -> None:
    status, err = _exit_of(monkeypatch, capsys, error)
    assert status == 2
    assert err.count("\n") == 1 and err.startswith("isa") and words in err


def test_a_library_field_error_is_shown_as_its_flag(monkeypatch, capsys) -> None:
    from isa_core.errors import IsaError, field_error

    status, err = _exit_of(monkeypatch, capsys, field_error("batch_size", "must be >= 1, got 0"))
    assert status == 2 and err.endswith(": error: --batch-size must be >= 1, got 0\n")
    status, err = _exit_of(monkeypatch, capsys, IsaError("batch too big", field="beta"))
    assert err.endswith(": error: batch too big\n")  # no leading field: unchanged


def test_bugs_still_say_internal_error_with_exit_1(monkeypatch, capsys) -> None:
    status, err = _exit_of(monkeypatch, capsys, OSError(errno.EBADF, "Bad file descriptor"))
    assert status == 1 and "internal error" in err
    status, err = _exit_of(monkeypatch, capsys, TypeError("boom"))
    assert status == 1 and "internal error" in err


def test_switches_show_no_bool_type_in_help() -> None:
    result = subprocess.run(
        [isa_executable(), "train", "--help"],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "COLUMNS": "200"},
    )
    assert result.returncode == 0
    assert "--resume" in result.stdout and "<bool>" not in result.stdout
