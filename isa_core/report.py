"""A sweep's report: one self-contained static HTML page to browse its results.

The page holds the results table (sortable by any column, the representative models of
appendix A.5 marked), the sweep figures (Figs. 5-7) and, per run, its training curves, its
traversal GIF and its latent-vs-true panel. Every image is embedded as a data: URI, so the
file opens offline; a few lines of plain JavaScript sort the table. Per-run figures are
cached as ``report-*`` files in the run folder and reused while newer than their sources.
"""

from __future__ import annotations

import base64
import html
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from isa_core.errors import IsaError, field_error
from isa_core.sweeps.results import RunResult, read_results, select_representatives

__all__ = [
    "CURVES_FILE",
    "LATENT_VS_TRUE_FILE",
    "REPRESENTATIVE_BY",
    "RESULTS_FILE",
    "TRAVERSAL_FILE",
    "Picture",
    "RunSection",
    "report_html",
    "run_section",
    "sweep_pictures",
    "sweep_results",
    "write_report",
]

RESULTS_FILE = "results.jsonl"  # `isa sweep collect -o SWEEP/results.jsonl`, read when present
CURVES_FILE = "report-curves.png"
TRAVERSAL_FILE = "report-traversal.gif"
LATENT_VS_TRUE_FILE = "report-latent-vs-true.png"
REPRESENTATIVE_BY = ["method", "beta"]  # the groups `isa select` uses by default
PANEL_LATENTS = 6  # rows of a run's latent-vs-true panel (`isa traverse` draws them all)
_SAFE_ANCHOR = re.compile(r"[A-Za-z0-9._-]{1,200}")


@dataclass(frozen=True)
class Picture:
    """One embedded image: its caption, MIME type and bytes."""

    title: str
    mime: str
    data: bytes

    @property
    def uri(self) -> str:
        """The image as a data: URI, so the page needs no other file."""
        return f"data:{self.mime};base64,{base64.b64encode(self.data).decode('ascii')}"


@dataclass(frozen=True)
class RunSection:
    """One run's part of the page: its anchor, its figures, and notes on what is missing."""

    result: RunResult
    anchor: str
    pictures: list[Picture] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def sweep_results(folder: Path) -> list[RunResult]:
    """The finished runs of the sweep folder ``folder``: its ``results.jsonl`` when present,
    else collected from its run folders as `isa sweep collect` does."""
    from isa_core.sweeps import load_manifest, run_folder, run_state

    folder = Path(folder)
    if not folder.is_dir():
        raise IsaError(f"{folder}: no such sweep folder; give the folder OUT/NAME of a sweep")
    if (folder / RESULTS_FILE).is_file():
        return read_results(folder / RESULTS_FILE)
    results = []
    for entry in load_manifest(folder):
        run_dir = run_folder(folder, entry["id"])
        if run_state(run_dir)["state"] == "done":
            results.append(RunResult.from_run_folder(entry, run_dir))
    if not results:
        raise IsaError(f"{folder} has no finished run yet; run the sweep (isa sweep run) first")
    return results


def sweep_pictures(results: list[RunResult]) -> tuple[list[Picture], list[str]]:
    """The sweep figures (MIG against log p(x|z), the MIG distribution, and the learned
    exponents when runs learned them), and a note for each one that could not be drawn."""
    from isa_core.io import figure_png
    from isa_core.plots import exponent_histograms, mig_distribution, mig_logpx_scatter

    drawings: list[tuple[str, Callable[[], Any]]] = [
        ("MIG against log p(x|z) (Figs. 5b, 5c, 6)", lambda: mig_logpx_scatter(results)),
        ("MIG distribution per method (Fig. 5a)", lambda: mig_distribution(results)),
    ]
    if any(r.learned_exponents for r in results):
        drawings.append(("learned exponents (Fig. 7)", lambda: exponent_histograms(results)))
    pictures, notes = [], []
    for title, draw in drawings:
        try:
            pictures.append(Picture(title, "image/png", figure_png(draw())))
        except IsaError as error:
            notes.append(f"{title}: not drawn ({error})")
    return pictures, notes


def _anchor(result: RunResult, number: int) -> str:
    name = str(result.id)
    return f"run-{name}" if _SAFE_ANCHOR.fullmatch(name) else f"run-{number}"


def _run_folder(sweep: Path, result: RunResult) -> Path | None:
    """The folder holding the run's model: the results row's path, else SWEEP/runs/ID."""
    from isa_core.checkpoint import MODEL_FILE

    candidates = [Path(result.model).parent] if result.model else []
    if isinstance(result.id, str) and _SAFE_ANCHOR.fullmatch(result.id):
        candidates.append(sweep / "runs" / result.id)
    return next((c for c in candidates if (c / MODEL_FILE).is_file()), None)


def _fresh(path: Path, sources: list[Path]) -> bool:
    """Whether the cached ``path`` exists and is at least as new as every source."""
    if not path.is_file():
        return False
    made = path.stat().st_mtime_ns
    return all(made >= s.stat().st_mtime_ns for s in sources if s.exists())


def _cached(path: Path, sources: list[Path], make: Callable[[], bytes]) -> bytes:
    """The bytes of ``path`` while it is fresh, else ``make()``'s, stored in ``path`` (a run
    folder that cannot be written only loses the cache)."""
    from isa_core import io

    if _fresh(path, sources):
        return path.read_bytes()
    data = make()
    try:
        with io.atomic_write(path) as handle:
            handle.write(data)
    except IsaError:
        pass
    return data


class _Model:
    """A run's model, codes, ranking and data, loaded on first use (a warm cache needs none)."""

    def __init__(self, model: Path, codes: Path, data: Any) -> None:
        self.paths = (model, codes)
        self.data_source = data
        self._loaded: dict[str, Any] = {}

    def get(self, name: str) -> Any:
        if not self._loaded:
            from isa_core import traverse
            from isa_core.checkpoint import load_model
            from isa_core.codes import load_codes

            model, _ = load_model(self.paths[0])
            codes = load_codes(self.paths[1])
            codes.require_logvar("the traversal's latent ranking")
            self._loaded = {
                "model": model,
                "codes": codes,
                "ranking": traverse.rank_latents(codes),
            }
        if name == "data" and "data" not in self._loaded:
            from isa_core.data import open_dataset

            if not self.data_source:
                raise IsaError("the run's config names no data set")
            self._loaded["data"] = open_dataset(self.data_source)
        return self._loaded[name]


def _gif_bytes(run: _Model) -> bytes:
    from isa_core import traverse
    from isa_core.plots.animation import gif_bytes, traversal_frames

    shown = traverse.traversal(
        run.get("model"), run.get("codes"), run.get("data"), run.get("ranking")
    )
    return gif_bytes(traversal_frames(shown))


def _latent_vs_true_bytes(run: _Model) -> bytes:
    from isa_core import traverse
    from isa_core.io import figure_png
    from isa_core.plots import latent_vs_true

    codes = run.get("codes")
    panel = traverse.latents_vs_true(codes, run.get("ranking"))
    rows = slice(0, PANEL_LATENTS)  # the most informative active latents, readable on screen
    figure = latent_vs_true(
        codes.mean,
        codes.factors,
        codes.factor_names,
        panel.values,
        panel.latents[rows],
        panel.labels[rows],
    )
    return figure_png(figure, dpi=80)


def _is_dsprites(run: _Model) -> bool:
    """Whether the run's codes carry dSprites' factors (the latent-vs-true panel needs them);
    codes that cannot be read count as such, so that the panel's note says what is wrong."""
    from isa_core.traverse import DSPRITES_FACTORS

    try:
        return set(DSPRITES_FACTORS) <= set(run.get("codes").factor_names)
    except IsaError:
        return True


def run_section(sweep: Path, result: RunResult, number: int, figures: bool = True) -> RunSection:
    """Run ``result``'s section: its curves, traversal GIF and latent-vs-true panel (cached
    beside its model), or notes saying why one is missing; none when ``figures`` is False."""
    from isa_core.checkpoint import METRICS_FILE, MODEL_FILE
    from isa_core.io import figure_png
    from isa_core.plots import read_curves, training_curves
    from isa_core.sweeps.execute import CODES_FILE

    section = RunSection(result, _anchor(result, number))
    if not figures:
        return section
    folder = _run_folder(Path(sweep), result)
    if folder is None:
        section.notes.append("no figures: the run's model file is not found")
        return section
    model = folder / MODEL_FILE
    codes = Path(result.codes) if result.codes and Path(result.codes).is_file() else None
    codes = codes or folder / CODES_FILE
    data = (result.config or {}).get("data")
    run = _Model(model, codes, data)
    plan: list[tuple[str, str, Path, list[Path], Callable[[], bytes]]] = [
        (
            "training curves",
            "image/png",
            folder / CURVES_FILE,
            [folder / METRICS_FILE],
            lambda: figure_png(training_curves([read_curves(folder)])),
        ),
    ]
    if codes.is_file():
        plan.append(
            (
                "traversal",
                "image/gif",
                folder / TRAVERSAL_FILE,
                [model, codes],
                lambda: _gif_bytes(run),
            )
        )
        fresh = _fresh(folder / LATENT_VS_TRUE_FILE, [model, codes])
        if fresh or _is_dsprites(run):
            plan.append(
                (
                    f"the {PANEL_LATENTS} most informative active latents against the true factors",
                    "image/png",
                    folder / LATENT_VS_TRUE_FILE,
                    [model, codes],
                    lambda: _latent_vs_true_bytes(run),
                )
            )
        else:
            section.notes.append("latent-vs-true panel skipped: the data is not dSprites")
    else:
        section.notes.append(f"no traversal: the codes file {codes} is not found")
    for title, mime, path, sources, make in plan:
        try:
            section.pictures.append(Picture(title, mime, _cached(path, sources, make)))
        except IsaError as error:
            section.notes.append(f"{title}: not drawn ({error})")
    return section


# ---------------------------------------------------------------------------------------------
# The page

_STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #222; }
table { border-collapse: collapse; font-variant-numeric: tabular-nums; }
th, td { border-bottom: 1px solid #ddd; padding: 3px 8px; text-align: right; }
th { cursor: pointer; background: #f3f3f3; position: sticky; top: 0; user-select: none; }
th[data-order="ascending"]::after { content: " ▲"; }
th[data-order="descending"]::after { content: " ▼"; }
td.text, th.text { text-align: left; }
tr.representative { background: #fff6d5; }
.badge { font-size: 11px; background: #c80; color: white; border-radius: 3px; padding: 0 4px; }
figure { display: inline-block; margin: 0.5em 1em 0.5em 0; vertical-align: top; }
figure img { max-width: 100%; border: 1px solid #eee; image-rendering: auto; }
figcaption, .note { font-size: 12px; color: #666; }
section.run { border-top: 1px solid #ccc; margin-top: 1em; }
section.run figure img { max-height: 1000px; }
"""

# Click a header to sort by its column (again to reverse); numbers compare as numbers.
_SORT_SCRIPT = """
document.querySelectorAll("table.sortable th").forEach(function (th, column) {
  th.addEventListener("click", function () {
    var table = th.closest("table"), body = table.tBodies[0];
    var ascending = th.dataset.order !== "ascending";
    table.querySelectorAll("th").forEach(function (h) { delete h.dataset.order; });
    th.dataset.order = ascending ? "ascending" : "descending";
    var key = function (row) { return row.cells[column].dataset.sort; };
    var rows = Array.from(body.rows).sort(function (a, b) {
      var x = key(a), y = key(b), nx = parseFloat(x), ny = parseFloat(y);
      var order = isNaN(nx) || isNaN(ny) ? x.localeCompare(y, undefined, {numeric: true}) : nx - ny;
      return ascending ? order : -order;
    });
    rows.forEach(function (row) { body.appendChild(row); });
  });
});
"""


_TEXT = ' class="text"'  # a column of text, aligned left


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _cell(value: Any, shown: str | None = None, text: bool = False) -> str:
    """A table cell; ``data-sort`` holds the full value the script sorts by."""
    sort = "" if value is None else value
    shown = ("" if value is None else str(value)) if shown is None else shown
    kind = _TEXT if text else ""
    return f'<td{kind} data-sort="{_e(sort)}">{_e(shown)}</td>'


def _number(value: Any, spec: str) -> str | None:
    return None if not isinstance(value, (int, float)) else format(value, spec)


def _table(sections: list[RunSection], chosen: set[str], figures: bool) -> str:
    results = [s.result for s in sections]
    grid = [
        k for k in dict.fromkeys(k for r in results for k in r.grid) if k not in ("method", "beta")
    ]
    scores = list(dict.fromkeys(k for r in results for k in (r.scores or {})))
    header = ["id", "method", "beta", *grid, "MIG", "log p(x|z)", *scores, "seconds"]
    text = {"id", "method"}
    heads = "".join(
        f'<th{_TEXT if h in text else ""} title="sort by {_e(h)}">{_e(h)}</th>' for h in header
    )
    rows = []
    for section in sections:
        r = section.result
        marked = r.id in chosen
        name = _e(r.id)
        link = f'<a href="#{_e(section.anchor)}">{name}</a>' if figures else name
        badge = ' <span class="badge">representative</span>' if marked else ""
        cells = [
            f'<td class="text" data-sort="{name}">{link}{badge}</td>',
            _cell(r.method, text=True),
            _cell(r.beta, _number(r.beta, "g")),
            *(_cell(_plain(r.grid.get(k))) for k in grid),
            _cell(r.mig, _number(r.mig, ".3f")),
            _cell(r.logpx, _number(r.logpx, ".2f")),
            *(
                _cell((r.scores or {}).get(k), _number((r.scores or {}).get(k), ".3f"))
                for k in scores
            ),
            _cell(r.seconds, _number(r.seconds, ".0f")),
        ]
        kind = ' class="representative"' if marked else ""
        rows.append(f"<tr{kind}>{''.join(cells)}</tr>")
    return (
        '<table id="results" class="sortable"><thead><tr>'
        + heads
        + "</tr></thead><tbody>\n"
        + "\n".join(rows)
        + "\n</tbody></table>"
    )


def _plain(value: Any) -> Any:
    """A grid value as a cell shows it: numbers and text as they are, anything else as JSON."""
    import json

    return value if value is None or isinstance(value, (str, int, float)) else json.dumps(value)


def _figure(picture: Picture) -> str:
    return (
        f'<figure><img src="{picture.uri}" alt="{_e(picture.title)}">'
        f"<figcaption>{_e(picture.title)}</figcaption></figure>"
    )


def _notes(notes: list[str]) -> str:
    return "".join(f'<p class="note">{_e(n)}</p>' for n in notes)


def report_html(
    name: str,
    sections: list[RunSection],
    pictures: list[Picture],
    notes: list[str],
    representatives: list[dict[str, Any]],
    figures: bool = True,
) -> str:
    """The page: a header, the sortable results table, the sweep figures, then one section
    per run (when ``figures``); every string from the data is HTML-escaped."""
    from isa_core import __version__

    chosen = {str(r["id"]) for r in representatives}
    written = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    parts = [
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">',
        f"<title>isa report: {_e(name)}</title><style>{_STYLE}</style></head><body>",
        f"<header><h1>sweep {_e(name)}</h1><p>{len(sections)} runs · written {written} · "
        f"isa {_e(__version__)}</p></header>",
        '<h2>Results</h2><p class="note">Click a column\'s header to sort by it. Representative '
        f"models (appendix A.5, one per {' and '.join(REPRESENTATIVE_BY)}) are marked.</p>",
        _table(sections, chosen, figures),
        "<h2>Sweep figures</h2>",
        "".join(map(_figure, pictures)),
        _notes(notes),
    ]
    if figures:
        parts.append("<h2>Runs</h2>")
        for section in sections:
            badge = (
                ' <span class="badge">representative</span>' if section.result.id in chosen else ""
            )
            parts.append(
                f'<section class="run" id="{_e(section.anchor)}"><h3>{_e(section.result.id)}'
                f"{badge}</h3>"
                + "".join(map(_figure, section.pictures))
                + _notes(section.notes)
                + "</section>"
            )
    parts.append(f"<script>{_SORT_SCRIPT}</script></body></html>\n")
    return "\n".join(parts)


def write_report(
    folder: Path,
    out: Path,
    figures: bool = True,
    on_run: Callable[[str], None] | None = None,
    results: list[RunResult] | None = None,
) -> Path:
    """Write the report of the sweep folder ``folder`` to ``out`` (atomically); per-run figures
    when ``figures``, calling ``on_run(id)`` after each run's section. ``results`` are the
    sweep's (`sweep_results`), read here when None. Returns ``out``."""
    from isa_core import io

    out = Path(out)
    if out.suffix.lower() != ".html":
        raise field_error("out", f"{out}: the report is HTML; give a file name ending in .html")
    folder = Path(folder)
    results = sweep_results(folder) if results is None else results
    try:
        representatives = select_representatives(results, REPRESENTATIVE_BY)
        notes = []
    except IsaError as error:
        representatives, notes = [], [f"no representatives marked ({error})"]
    pictures, figure_notes = sweep_pictures(results)
    sections = []
    for number, result in enumerate(results):
        sections.append(run_section(folder, result, number, figures))
        if on_run is not None:
            on_run(str(result.id))
    page = report_html(
        folder.resolve().name, sections, pictures, notes + figure_notes, representatives, figures
    )
    with io.atomic_write(out) as handle:
        handle.write(page.encode("utf-8"))
    return out
