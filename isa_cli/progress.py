"""The one progress bar of the CLI: rich, on stderr, only when stderr is a terminal."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator


class Bar:
    """A progress bar's handle; every method is a no-op when the bar is hidden."""

    def __init__(self, progress=None, task=None) -> None:
        self._progress = progress
        self._task = task

    def update(
        self,
        completed: int | None = None,
        total: int | None = None,
        advance: int = 0,
        detail: str | None = None,
    ) -> None:
        """Move the bar to ``completed`` of ``total`` (or on by ``advance``); ``detail`` is the
        text beside the count (loss, failures, ...)."""
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
            minutes, seconds = divmod(round(left), 60)
            hours, minutes = divmod(minutes, 60)
            return Text(f"{hours}:{minutes:02d}:{seconds:02d} left", style="progress.remaining")

    return Remaining()


@contextlib.contextmanager
def progress_bar(
    label: str, quiet: bool = False, total: int | None = None, transient: bool = False
) -> Iterator[Bar]:
    """A bar labelled ``label`` on stderr; hidden with ``quiet`` or when stderr is no terminal."""
    if quiet or not sys.stderr.isatty():
        yield Bar()
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
