"""`isa plot curves`: training curves drawn from real runs' metrics.jsonl, and its refusals."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from isa_core.plots import read_curves
from tests.conftest import isa_in_process

TRAIN = ["train", "--data", "dsprites-mini", "--steps", 6, "--log-every", 2]
TRAIN += ["--batch-size", 64, "-q", "--threads", 1, "--objective", "tcvae"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Folders for two short real runs (fixed exponents, learned ones), shared by the tests;
    `trained` fills them once, since capsys exists only per test."""
    root = tmp_path_factory.mktemp("curves")
    return root / "fixed", root / "learned"


def _train(folder: Path, capsys: pytest.CaptureFixture, *extra: str) -> None:
    if (folder / "metrics.jsonl").is_file():
        return  # trained by an earlier test of this module
    code, _, err = isa_in_process([*TRAIN, "-o", folder, *extra], capsys)
    assert code == 0, err


@pytest.fixture
def trained(runs: tuple[Path, Path], capsys: pytest.CaptureFixture) -> tuple[Path, Path]:
    fixed, learned = runs
    _train(fixed, capsys)
    _train(learned, capsys, "--learn-exponents")
    return fixed, learned


def test_curves_png_of_two_real_runs(trained, tmp_path, capsys):
    fixed, learned = trained
    with open(fixed / "metrics.jsonl", "a") as handle:
        handle.write('{"loss": 12.5, "st')  # a line cut short by a killed run: skipped
    out = tmp_path / "curves.png"
    code, stdout, err = isa_in_process(["plot", "curves", fixed, learned, "-o", out], capsys)
    assert code == 0, err
    assert stdout.strip() == str(out.resolve())
    with Image.open(out) as image:
        assert image.format == "PNG"
        assert image.width > 600 and image.height > 400

    curves = read_curves(learned)
    assert list(curves.steps) == [2, 4, 6]
    assert next(iter(curves.values)) == "loss"
    assert {"logpx", "tc"} <= set(curves.parts)
    assert curves.exponents is not None and curves.exponents.shape[0] == 3
    assert (curves.exponents[-1, 1:] != curves.exponents[0, 1:]).any()  # learned: they moved
    assert curves.name == "learned"


def _garbage(folder: Path) -> Path:
    folder.mkdir()
    (folder / "metrics.jsonl").write_text('not json\n[1, 2]\n{"loss": 1}\n{"step": 2, "lo')
    return folder


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (lambda tmp: tmp / "missing", "no such run folder"),
        (lambda tmp: (tmp / "empty").mkdir() or tmp / "empty", "has no metrics.jsonl"),
        (lambda tmp: _garbage(tmp / "garbage"), "no readable line"),
    ],
    ids=["missing-folder", "no-metrics", "garbage-only"],
)
def test_curves_refuses_bad_folder(make, expected, tmp_path, capsys):
    folder = make(tmp_path)
    out = tmp_path / "curves.png"
    code, stdout, err = isa_in_process(["plot", "curves", folder, "-o", out], capsys)
    assert code == 2
    assert stdout == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0] and str(folder) in lines[0], err
    assert not out.exists()


def test_curves_refuses_non_png(trained, tmp_path, capsys):
    out = tmp_path / "curves.jpg"
    code, _, err = isa_in_process(["plot", "curves", trained[0], "-o", out], capsys)
    assert code == 2 and "png" in err.lower() and len(err.strip().splitlines()) == 1
    assert not out.exists()
