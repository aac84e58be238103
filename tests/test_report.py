"""`isa report`: the sweep page parsed as HTML (every image embedded, every run in the table,
the representatives marked), its figure cache, and its refusals."""

from __future__ import annotations

import json
from html.parser import HTMLParser
from pathlib import Path

import pytest

import isa_cli.report  # noqa: F401  (registers `isa report` until isa_cli.main imports it)
from isa_cli.main import main
from isa_core.report import CURVES_FILE, LATENT_VS_TRUE_FILE, TRAVERSAL_FILE
from isa_core.sweeps import read_results, select_representatives
from tests.conftest import isa_in_process as isa

SPEC = """
[sweep]
name = "tiny"
data = "dsprites-mini"

[base]
steps = 3
batch_size = 32
log_every = 1

[methods.isa]
prior = "isa"
layout = "2x2"
learn_exponents = true

[grid]
method = ["isa"]
seed = [0, 1]
"""
CACHED = (CURVES_FILE, TRAVERSAL_FILE, LATENT_VS_TRUE_FILE)


_BUILT: list[Path] = []  # the tiny sweep, built once for this file and the browser test


@pytest.fixture(scope="session")
def tiny_sweep(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished two-run sweep on dsprites-mini (two seeds, learned exponents), collected."""
    if _BUILT:
        return _BUILT[0]
    root = tmp_path_factory.mktemp("report")
    spec = root / "spec.toml"
    spec.write_text(SPEC)
    folder = root / "tiny"
    for args in (
        ["sweep", "run", spec, "-o", root],
        ["sweep", "collect", folder, "-o", folder / "results.jsonl"],
    ):
        with pytest.raises(SystemExit) as done:
            main([str(a) for a in args])
        assert done.value.code in (0, None), f"isa {args[:2]} failed"
    _BUILT.append(folder)
    return folder


class Page(HTMLParser):
    """What the tests look at in a report: images, links, table header and rows, sections."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.images: list[str] = []
        self.references: list[tuple[str, str, str]] = []  # (tag, attribute, value)
        self.header: list[str] = []
        self.rows: list[dict] = []  # per body row: its class and its cells' text
        self.sections: list[str] = []
        self._where: list[str] = []
        self._cell: list[str] | None = None
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list) -> None:
        attributes = dict(attrs)
        for name in ("src", "href", "action", "data", "poster"):
            if attributes.get(name) is not None:
                self.references.append((tag, name, attributes[name]))
        if tag == "img":
            self.images.append(attributes.get("src") or "")
        if tag in ("thead", "tbody"):
            self._where.append(tag)
        if tag == "tr" and self._where[-1:] == ["tbody"]:
            self.rows.append({"class": attributes.get("class") or "", "cells": []})
        if tag in ("th", "td"):
            self._cell = []
        if tag == "section" and "run" in (attributes.get("class") or ""):
            self.sections.append(attributes.get("id") or "")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("thead", "tbody"):
            self._where.pop()
        if tag in ("th", "td") and self._cell is not None:
            text = "".join(self._cell).strip()
            if tag == "th" and self._where[-1:] == ["thead"]:
                self.header.append(text)
            elif self.rows:
                self.rows[-1]["cells"].append(text)
            self._cell = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


def report(args: list, capsys: pytest.CaptureFixture) -> tuple[int, str, str]:
    return isa(["report", *args], capsys)


def check_self_contained(page: Page) -> None:
    """Every image is a data: URI and nothing else refers outside the page."""
    assert page.images and all(src.startswith("data:image/") for src in page.images)
    for tag, name, value in page.references:
        assert value.startswith("data:image/") or value.startswith("#"), (tag, name, value)


def test_the_report_embeds_every_image_and_lists_every_run(tiny_sweep: Path, capsys) -> None:
    out = tiny_sweep.parent / "report.html"
    code, stdout, err = report([tiny_sweep, "-o", out, "-q"], capsys)
    assert code in (0, None), err
    assert stdout.strip() == str(out.resolve())
    text = out.read_text()
    page = Page(text)
    check_self_contained(page)
    results = read_results(tiny_sweep / "results.jsonl")
    ids = [r.id for r in results]
    assert [row["cells"][0].split()[0] for row in page.rows] == ids
    # a header cell per column, and the columns the issue asks for
    assert all(len(row["cells"]) == len(page.header) for row in page.rows)
    for column in ("id", "method", "beta", "seed", "MIG", "log p(x|z)", "seconds"):
        assert column in page.header
    chosen = {r["id"] for r in select_representatives(results, ["method", "beta"])}
    marked = {row["cells"][0].split()[0] for row in page.rows if "representative" in row["class"]}
    assert marked == chosen and len(chosen) == 1 < len(ids)  # one per method and beta
    # sweep figures: scatter, MIG distribution, exponents (the runs learned theirs); per
    # run: curves, traversal GIF, latent-vs-true; each run's section linked from its row
    assert len(page.images) == 3 + 3 * len(ids)
    assert sum(src.startswith("data:image/gif;base64,") for src in page.images) == len(ids)
    assert page.sections == [f"run-{i}" for i in ids]
    assert {value for _, name, value in page.references if name == "href"} == {
        f"#run-{i}" for i in ids
    }
    assert "isa 0.1.0" in text and "sweep tiny" in text and "<script>" in text


def test_a_second_report_reuses_the_cached_figures(tiny_sweep: Path, capsys) -> None:
    out = tiny_sweep.parent / "again.html"
    assert report([tiny_sweep, "-o", out, "-q"], capsys)[0] in (0, None)
    cached = [tiny_sweep / "runs" / run / name for run in ("isa_seed0",) for name in CACHED]
    stamps = [path.stat().st_mtime_ns for path in cached]
    first = Page(out.read_text()).images
    assert report([tiny_sweep, "-o", out, "-q"], capsys)[0] in (0, None)
    assert [path.stat().st_mtime_ns for path in cached] == stamps
    assert Page(out.read_text()).images == first


def test_without_run_figures_the_page_has_the_table_and_sweep_figures(
    tiny_sweep: Path, capsys
) -> None:
    out = tiny_sweep.parent / "table.html"
    assert report([tiny_sweep, "-o", out, "--no-run-figures"], capsys)[0] in (0, None)
    page = Page(out.read_text())
    check_self_contained(page)
    assert len(page.rows) == 2 and len(page.images) == 3 and not page.sections


def test_strings_from_the_results_are_escaped_and_runs_without_files_get_a_note(
    tmp_path: Path, capsys
) -> None:
    """results.jsonl is read when present; its strings never become markup."""
    folder = tmp_path / "hand"
    folder.mkdir()
    rows = [
        {"id": "<b>a</b>", "method": "<script>x()</script>", "beta": 1, "mig": 0.2, "logpx": -90},
        {"id": "b&c", "method": "m", "beta": 1, "mig": 0.1, "logpx": -80, "model": "/gone/m"},
    ]
    (folder / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "hand.html"
    code, _, err = report([folder, "-o", out, "-q"], capsys)
    assert code in (0, None), err
    text = out.read_text()
    assert "<script>x()" not in text and "&lt;script&gt;x()" in text
    assert "<b>a</b>" not in text and "b&amp;c" in text
    page = Page(text)
    check_self_contained(page)
    assert [row["cells"][0].split()[0] for row in page.rows] == ["<b>a</b>", "b&c"]
    assert text.count("the run&#x27;s model file is not found") == 2


def test_codes_of_other_data_get_a_note_instead_of_the_latent_vs_true_panel(
    tiny_sweep: Path, tmp_path: Path
) -> None:
    """The traversal is drawn for any data; the latent-vs-true panel only for dSprites."""
    import dataclasses
    import shutil

    from isa_core.codes import load_codes, save_codes
    from isa_core.report import run_section

    folder = tmp_path / "runs" / "isa_seed0"
    shutil.copytree(tiny_sweep / "runs" / "isa_seed0", folder)
    for name in CACHED:
        (folder / name).unlink()
    codes = load_codes(folder / "codes.safetensors")
    names = [f"factor{k}" for k in range(len(codes.factor_names))]
    metadata = dict(codes.metadata, factor_names=names)
    save_codes(folder / "codes.safetensors", dataclasses.replace(codes, metadata=metadata))
    (result,) = [r for r in read_results(tiny_sweep / "results.jsonl") if r.id == "isa_seed0"]
    result = dataclasses.replace(result, model=None, codes=None)  # found as SWEEP/runs/ID
    section = run_section(tmp_path, result, 0)
    assert [p.title for p in section.pictures] == ["training curves", "traversal"]
    assert section.notes == ["latent-vs-true panel skipped: the data is not dSprites"]
    assert not (folder / LATENT_VS_TRUE_FILE).exists() and (folder / TRAVERSAL_FILE).exists()


@pytest.mark.parametrize(
    ("make", "out", "message"),
    [
        (lambda f: None, "r.html", "no such sweep folder"),
        (lambda f: f.mkdir(), "r.html", "not a sweep folder (no sweep.json)"),
        (
            lambda f: (f.mkdir(), (f / "sweep.json").write_text('{"name": "s", "runs": []}')),
            "r.html",
            "has no finished run",
        ),
        (
            lambda f: (f.mkdir(), (f / "results.jsonl").write_text('{"id": "a", "mig": 0.1}\n{')),
            "r.html",
            "results.jsonl:2 is not a JSON line",
        ),
        (lambda f: f.mkdir(), "r.png", "ending in .html"),
    ],
)
def test_bad_input_is_refused_in_one_line(tmp_path: Path, capsys, make, out, message) -> None:
    folder = tmp_path / "sweep"
    make(folder)
    code, stdout, err = report([folder, "-o", tmp_path / out], capsys)
    assert code == 2 and stdout == ""
    assert err.startswith("isa report: error: ") and err.count("\n") == 1, err
    assert message in err
    assert not (tmp_path / out).exists()
