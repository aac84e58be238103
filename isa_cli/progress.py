"""The one progress bar of the CLI: rich on a terminal; plain lines every N seconds elsewhere."""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Iterator
from typing import Annotated

import typer

DEFAULT_EVERY = 30.0

ProgressEvery = Annotated[
    float,
    typer.Option(
        "--progress-every",
        min=0,
        help="When stderr is no terminal (a log file): a progress line on it every N seconds; "
        "0: none.",
    ),
]

_clock = time.monotonic  # tests replace it


def _clock_text(seconds: float) -> str:
    """``seconds`` as h:mm:ss."""
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}"


class _Lines:
    """Plain progress lines on stderr, at most one per ``every`` seconds, for logs and pipes.

    The pace is measured from ``start`` (a count at the bar's creation) or, when ``start`` is
    None, from the first count reported (a resumed run's earlier steps and the start-up do not
    count; the first line comes ``every`` seconds after it).
    """

    def __init__(
        self, label: str, total: int | None, every: float, start: int | None, **units
    ) -> None:
        self.label, self.total, self.every = label, total, every
        self.noun, self.unit, self.scale = units["noun"], units["unit"], units["scale"]
        self.completed = 0 if start is None else start
        self.last = _clock()
        self.origin = None if start is None else (self.last, start)

    def update(self, completed: int | None, total: int | None, advance: int) -> None:
        if total is not None:
            self.total = total
        if completed is None and not advance:
            return  # only the detail changed
        self.completed = (self.completed if completed is None else completed) + advance
        now = _clock()
        if self.origin is None:  # the pace, and the lines, count from here
            self.origin, self.last = (now, self.completed), now
        if now - self.last < self.every:
            return
        self.last = now
        sys.stderr.write(self.line(now) + "\n")
        sys.stderr.flush()

    def line(self, now: float) -> str:
        """``isa train: step 400/1200 (33%), 5,120 images/s, ETA 0:02:31``."""
        text = f"isa {self.label}: {self.noun} {self.completed:,}"
        if self.total:
            text += f"/{self.total:,} ({100 * self.completed // self.total}%)"
        start_time, start_count = self.origin or (now, self.completed)
        elapsed, counted = now - start_time, self.completed - start_count
        if elapsed <= 0 or counted <= 0:
            return text + f", {self.unit} -, ETA -:--:--"
        per_second = counted / elapsed
        rate = per_second * self.scale
        text += f", {rate:,.0f} {self.unit}" if rate >= 100 else f", {rate:.2f} {self.unit}"
        if self.total:
            text += f", ETA {_clock_text(max(self.total - self.completed, 0) / per_second)}"
        return text


class Bar:
    """A progress bar's handle; every method is a no-op when the bar is hidden."""

    def __init__(self, progress=None, task=None, lines: _Lines | None = None) -> None:
        self._progress = progress
        self._task = task
        self._lines = lines

    def update(
        self,
        completed: int | None = None,
        total: int | None = None,
        advance: int = 0,
        detail: str | None = None,
    ) -> None:
        """Move the bar to ``completed`` of ``total`` (or on by ``advance``); ``detail`` is the
        text beside the count (loss, failures, ...; on the terminal only)."""
        if self._lines is not None:
            self._lines.update(completed, total, advance)
        if self._progress is None:
            return
        changes: dict = {"advance": advance} if advance else {}
        if completed is not None:
            changes["completed"] = completed
        if total is not None:
            changes["total"] = total
        if detail is not None:
            changes["detail"] = detail
        self._progress.update(self._task, **changes)

    def callback(self, done: int, total: int) -> None:
        """``update(done, total)`` in the (done, total) form the library's hooks call."""
        self.update(completed=done, total=total)


def _remaining_column():
    """Time left at the mean pace so far: elapsed / completed * (total - completed).

    rich's own estimate needs several updates within its speed window, so a sweep whose runs
    take minutes would never show one; this one appears from the first completed unit on.
    """
    from rich.progress import ProgressColumn
    from rich.text import Text

    class Remaining(ProgressColumn):
        def render(self, task) -> Text:
            if not task.completed or task.total is None or task.elapsed is None:
                return Text("-:--:--", style="progress.remaining")
            left = task.elapsed / task.completed * max(task.total - task.completed, 0)
            return Text(f"{_clock_text(left)} left", style="progress.remaining")

    return Remaining()


@contextlib.contextmanager
def progress_bar(
    label: str,
    quiet: bool = False,
    total: int | None = None,
    transient: bool = False,
    every: float = 0.0,
    *,
    noun: str = "step",
    unit: str = "images/s",
    scale: float = 1.0,
    start: int | None = 0,
) -> Iterator[Bar]:
    """A bar labelled ``label`` on stderr, hidden with ``quiet``. When stderr is no terminal it
    is a line ``isa LABEL: NOUN done/total (%), rate UNIT, ETA`` at most every ``every`` seconds
    (none when 0), the rate being ``scale`` times the count per second (e.g. images per step;
    3600 for runs/h); the pace counts from ``start``, or from the first count when None."""
    if quiet:
        yield Bar()
        return
    if not sys.stderr.isatty():
        if every <= 0:
            yield Bar()
            return
        units = {"noun": noun, "unit": unit, "scale": scale}
        yield Bar(lines=_Lines(label, total, every, start, **units))
        return
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn

    columns = (
        TextColumn(f"[bold]{label}[/]"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TextColumn("{task.fields[detail]}"),
        _remaining_column(),
    )
    with Progress(*columns, console=Console(stderr=True), transient=transient) as progress:
        yield Bar(progress, progress.add_task(label, total=total, detail=""))
