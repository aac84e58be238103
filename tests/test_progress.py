"""The CLI's one progress bar: drawn on a terminal; plain lines every N seconds elsewhere;
nothing when quiet."""

from __future__ import annotations

import io
import sys

from isa_cli import progress
from isa_cli.progress import progress_bar
from tests.conftest import isa_in_process


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


class _Clock:
    """A clock that moves only when told to (seconds)."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_plain_lines_off_a_terminal_with_count_rate_and_eta(monkeypatch) -> None:
    stream, clock = io.StringIO(), _Clock()
    monkeypatch.setattr(sys, "stderr", stream)
    monkeypatch.setattr(progress, "_clock", clock)
    with progress_bar("train", total=1200, every=30.0, scale=128) as bar:
        clock.now += 10
        bar.callback(100, 1200)  # within 30 s of the start: no line
        clock.now += 40
        bar.update(completed=400, detail="loss 1.00")
        clock.now += 1
        bar.callback(410, 1200)  # within 30 s of the last line: none
    # 400 steps in 50 s: 8 steps/s = 1,024 images/s; 800 steps left: 100 s.
    assert stream.getvalue() == "isa train: step 400/1,200 (33%), 1,024 images/s, ETA 0:01:40\n"


def test_sweep_lines_count_runs_per_hour_from_the_first_finished_run(monkeypatch) -> None:
    stream, clock = io.StringIO(), _Clock()
    monkeypatch.setattr(sys, "stderr", stream)
    monkeypatch.setattr(progress, "_clock", clock)
    runs = {"noun": "runs", "unit": "runs/h", "scale": 3600.0}
    with progress_bar("sweep demo", total=4, every=1.0, **runs) as bar:
        clock.now += 1800
        bar.update(advance=1, detail="0 failed")
    assert stream.getvalue() == "isa sweep demo: runs 1/4 (25%), 2.00 runs/h, ETA 1:30:00\n"


def test_pace_from_the_first_count_when_resumed(monkeypatch) -> None:
    stream, clock = io.StringIO(), _Clock()
    monkeypatch.setattr(sys, "stderr", stream)
    monkeypatch.setattr(progress, "_clock", clock)
    with progress_bar("train", total=2000, every=5.0, start=None) as bar:
        clock.now += 60  # start-up, not counted
        bar.callback(1001, 2000)
        clock.now += 10
        bar.callback(1101, 2000)
    assert stream.getvalue() == "isa train: step 1,101/2,000 (55%), 10.00 images/s, ETA 0:01:30\n"


def test_no_lines_when_quiet_or_every_is_zero(monkeypatch) -> None:
    stream = io.StringIO()
    monkeypatch.setattr(sys, "stderr", stream)
    for quiet, every in ((True, 1e-9), (False, 0.0)):
        with progress_bar("train", quiet=quiet, total=3, every=every) as bar:
            bar.callback(1, 3)
            bar.callback(3, 3)
    assert stream.getvalue() == ""


def test_train_writes_lines_to_a_non_terminal_stderr_and_quiet_silences_them(
    tmp_path, capsys
) -> None:
    args = ["train", "--data", "dsprites-mini", "--steps", "4", "--batch-size", "64"]
    args += ["--threads", "1", "--device", "cpu", "--progress-every", "0.0001"]
    code, out, err = isa_in_process([*args, "-o", tmp_path / "loud"], capsys)
    assert code == 0 and out.strip().endswith("model.safetensors")
    lines = [line for line in err.splitlines() if line.startswith("isa train: step ")]
    assert lines and lines[-1].startswith("isa train: step 4/4 (100%), ")
    assert "images/s" in lines[-1] and "ETA 0:00:00" in lines[-1]
    code, out, err = isa_in_process([*args, "-q", "-o", tmp_path / "quiet"], capsys)
    assert code == 0 and "isa train: step" not in err
