"""The entry point's message formats, independent of any one command."""

from __future__ import annotations

import warnings

from isa_cli.main import _one_line_warning


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
