"""The CLI's one progress bar: hidden off a terminal or when quiet, drawn on a terminal."""

from __future__ import annotations

import io
import sys

from isa_cli.progress import progress_bar


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_hidden_when_quiet_or_not_a_terminal(monkeypatch) -> None:
    stream = io.StringIO()
    monkeypatch.setattr(sys, "stderr", stream)
    for quiet in (False, True):
        with progress_bar("train", quiet=quiet, total=3) as bar:
            bar.update(completed=1, detail="loss 1.00")
            bar.callback(3, 3)
    assert stream.getvalue() == ""


def test_drawn_on_a_terminal_with_its_count_and_detail(monkeypatch) -> None:
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    with progress_bar("sweep demo", total=4) as bar:
        bar.update(advance=1, detail="0 failed")
        bar.update(advance=2)
        bar.callback(4, 4)
    text = terminal.getvalue()
    assert "sweep demo" in text and "4/4" in text and "0 failed" in text
    assert "0:00:00 left" in text  # the time left, from the mean pace, once units finished
