"""`isa data info|render|preview` in-process: typer's runner, and the entry point for errors."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from isa_cli.main import app
from isa_core.data import DSprites
from tests.conftest import isa_in_process

runner = CliRunner()


def test_info_is_one_json_object() -> None:
    result = runner.invoke(app, ["data", "info", "dsprites"])
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1
    info = json.loads(lines[0])
    assert info["name"] == "dsprites" and info["n"] == 737_280
    assert info["image_shape"] == [1, 64, 64]
    assert [f["name"] for f in info["factors"]] == ["shape", "scale", "orientation", "x", "y"]
    assert [f["size"] for f in info["factors"]] == [3, 6, 40, 32, 32]
    assert info["factors"][1]["values"][0] == 0.5


def test_render_by_index_and_by_factors_agree(tmp_path: Path) -> None:
    data = DSprites()
    index = int(data.factors_to_index([[2, 5, 0, 3, 31]])[0])
    by_factors = runner.invoke(
        app, ["data", "render", "dsprites", "--factors", "shape=2,scale=5,orientation=0,x=3,y=31"]
    )
    by_index = runner.invoke(app, ["data", "render", "dsprites", "--index", f"0,{index}"])
    assert by_factors.exit_code == 0 and by_index.exit_code == 0
    one = np.load(io.BytesIO(by_factors.stdout_bytes))
    two = np.load(io.BytesIO(by_index.stdout_bytes))
    assert one.shape == (1, 64, 64) and one.dtype == np.uint8 and set(np.unique(one)) == {0, 1}
    assert two.shape == (2, 64, 64)
    np.testing.assert_array_equal(one[0], two[1])
    out = tmp_path / "x.npy"
    result = runner.invoke(app, ["data", "render", "dsprites-mini", "--index", "1", "-o", str(out)])
    assert result.exit_code == 0 and np.load(out).shape == (1, 64, 64)


def test_preview_writes_a_png(tmp_path: Path) -> None:
    out = tmp_path / "grid.png"
    result = runner.invoke(app, ["data", "preview", "dsprites-mini", "-o", str(out)])
    assert result.exit_code == 0, result.stderr
    assert out.read_bytes().startswith(b"\x89PNG")
    assert result.stdout.strip() == str(out.resolve())


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["data", "info", "mnist"], "unknown data set 'mnist'"),
        (["data", "render", "dsprites", "--index", "737280"], "out of range"),
        (["data", "render", "dsprites", "--index", "a,b"], "cannot parse --index"),
        (
            ["data", "render", "dsprites", "--factors", "shape=3,scale=0,orientation=0,x=0,y=0"],
            "shape = 3 is out of range",
        ),
        (["data", "render", "dsprites", "--factors", "shape=1,scale=0"], "missing orientation"),
        (["data", "render", "dsprites", "--factors", "colour=1"], "cannot parse --factors"),
        (["data", "render", "dsprites"], "exactly one of --index or --factors"),
        (["data", "info", "{bad}"], "not a readable .npz"),
        (["data", "preview", "dsprites", "-o", "{bad}"], "PNG"),
    ],
)
def test_bad_input(
    args: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"PK\x03\x04 truncated zip")
    status, _, stderr = isa_in_process([a.replace("{bad}", str(bad)) for a in args], capsys)
    assert status == 2, stderr
    command = " ".join(args[:2])
    assert stderr.startswith(f"isa {command}: error: ") and stderr.count("\n") == 1, stderr
    assert message in stderr, stderr
