"""Training curves of run folders: the loss, its parts and the prior's exponents against step,
read from each folder's ``metrics.jsonl`` (one JSON object per logged step)."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from isa_core.errors import IsaError

__all__ = ["RunCurves", "read_curves", "training_curves"]

# numeric keys of a metrics line that describe the run's pace, not its loss
_NOT_PLOTTED = frozenset({"step", "epoch", "images_per_s"})


@dataclass(frozen=True)
class RunCurves:
    """One run's logged curves: ``values[name][i]`` and ``exponents[i]`` belong to
    ``steps[i]``; NaN where a line lacks the quantity. ``exponents`` is (steps, p0 + p_i)
    or None when no line has them."""

    name: str
    steps: np.ndarray
    values: dict[str, np.ndarray]
    exponents: np.ndarray | None

    @property
    def parts(self) -> list[str]:
        """The loss's parts, in the order the log first names them."""
        return [name for name in self.values if name != "loss"]


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _lines(path: Path) -> list[dict]:
    """The JSON objects of a JSONL file that carry a numeric step; anything else (a line cut
    short by a killed run, a blank line) is skipped."""
    rows = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict) and _is_number(row.get("step")):
            rows.append(row)
    return rows


def read_curves(folder: Path | str) -> RunCurves:
    """The curves a training run logged into ``folder``; refuses a folder with no readable
    metrics line, since there is nothing to draw."""
    from isa_core.checkpoint import METRICS_FILE  # torch: loaded only when curves are read

    folder = Path(folder)
    path = folder / METRICS_FILE
    if not folder.is_dir():
        raise IsaError(f"{folder}: no such run folder; give a folder a training run wrote")
    if not path.is_file():
        raise IsaError(
            f"{folder}: has no {METRICS_FILE}; give a folder a training run wrote "
            "(it logs there while it trains)"
        )
    rows = _lines(path)
    if not rows:
        raise IsaError(
            f"{folder}: {METRICS_FILE} has no readable line (JSON objects with a step); "
            "train the run until it logs, or give another folder"
        )
    names = [key for row in rows for key, v in row.items() if _is_number(v)]
    names = [n for n in dict.fromkeys(names) if n not in _NOT_PLOTTED]
    names.sort(key=lambda n: n != "loss")  # loss first, then the parts as logged
    values = {
        n: np.array([row[n] if _is_number(row.get(n)) else math.nan for row in rows], float)
        for n in names
    }
    return RunCurves(
        name=folder.resolve().name,
        steps=np.array([row["step"] for row in rows], dtype=float),
        values=values,
        exponents=_exponents(rows),
    )


def _exponents(rows: list[dict]) -> np.ndarray | None:
    """Each line's exponent list as a row, padded with NaN to the longest; None if none."""
    lists = [row.get("exponents") for row in rows]
    lists = [e if isinstance(e, list) and all(map(_is_number, e)) else [] for e in lists]
    width = max(map(len, lists))
    if width == 0:
        return None
    return np.array([e + [math.nan] * (width - len(e)) for e in lists], dtype=float)


def _moved(exponents: np.ndarray | None) -> bool:
    """Whether any exponent changed during the run (it learned them)."""
    if exponents is None:
        return False
    with np.errstate(invalid="ignore"):  # NaN pads a shorter list: never a change
        return bool((np.abs(np.diff(exponents, axis=0)) > 0).any())


def training_curves(runs: list[RunCurves]) -> Figure:
    """One panel per quantity (the loss, each part, then the exponents when a run learned
    them: fixed ones would draw flat lines), every run overlaid in its own colour with its
    folder's name in the legend."""
    names = list(dict.fromkeys(n for run in runs for n in run.values))
    with_exponents = any(_moved(run.exponents) for run in runs)
    panels = len(names) + with_exponents
    columns = min(3, panels)
    rows = math.ceil(panels / columns)
    fig = Figure(figsize=(4.2 * columns, 3.0 * rows), dpi=100)
    axes = fig.subplots(rows, columns, squeeze=False).ravel()
    colours = [f"C{i % 10}" for i in range(len(runs))]
    for ax, name in zip(axes, names, strict=False):
        for run, colour in zip(runs, colours, strict=True):
            if name in run.values:
                ax.plot(run.steps, run.values[name], color=colour, marker=".", label=run.name)
        ax.set_title(name, fontsize=10)
    if with_exponents:
        ax = axes[len(names)]
        for run, colour in zip(runs, colours, strict=True):
            if not _moved(run.exponents):
                continue
            # p0 dashed, the subspace exponents p_i solid; one legend entry per run
            ax.plot(run.steps, run.exponents[:, 0], color=colour, ls="--", lw=1)
            ax.plot(run.steps, run.exponents[:, 1:], color=colour, lw=1)
            ax.lines[-1].set_label(run.name)
        ax.set_title("exponents (p0 dashed, p_i solid)", fontsize=10)
        ax.legend(fontsize=7)
    for ax in axes[:panels]:
        ax.set_xlabel("step", fontsize=8)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.tick_params(labelsize=7)
    for ax in axes[panels:]:
        ax.set_visible(False)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    return fig
