"""`isa plot` figures from a results file: each PNG decodes with the expected size."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import run_isa


@pytest.fixture
def results(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    rows = []
    for method, learn in (("beta-vae", False), ("isa-vae", True)):
        for beta in (1.0, 2.0, 4.0):
            for seed in range(5):
                exponents = [2.1, *sorted(rng.normal(2.05, 0.08, 3))] if learn else None
                rows.append(
                    {
                        "id": f"{method}_beta{beta:g}_seed{seed}",
                        "method": method,
                        "beta": beta,
                        "seed": seed,
                        "mig": float(rng.uniform(0.05, 0.4)),
                        "logpx": float(-20 - 3 * beta + rng.normal(0, 1)),
                        "exponents": exponents,
                        "config": {"learn_exponents": learn},
                    }
                )
    path = tmp_path / "results.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.mark.parametrize(
    ("args", "width"),
    [
        (["scatter"], 600),
        (["mig-dist", "--beta", "1"], 500),
        (["exponents"], 900),
        (["prior-contours", "--tree", "1(2)", "--tree", "2.1(2.2(2))"], 500),
    ],
)
def test_plots_write_pngs(results: Path, tmp_path: Path, args: list[str], width: int) -> None:
    out = tmp_path / "figure.png"
    command = ["plot", args[0]]
    if args[0] != "prior-contours":
        command.append(str(results))
    result = run_isa([*command, *args[1:], "-o", str(out)])
    assert result.returncode == 0, result.stderr.decode()
    with Image.open(out) as image:
        image.load()
        assert image.format == "PNG" and image.size[0] >= width and image.size[1] >= 300


def test_plot_errors(results: Path, tmp_path: Path) -> None:
    cases = [
        (
            ["plot", "mig-dist", str(results), "--beta", "9", "-o", str(tmp_path / "x.png")],
            "beta = 9",
        ),
        (
            ["plot", "scatter", str(tmp_path / "none.jsonl"), "-o", str(tmp_path / "x.png")],
            "no such results",
        ),
        (["plot", "prior-contours", "--tree", "2(3)", "-o", str(tmp_path / "x.png")], "2-D priors"),
    ]
    for args, message in cases:
        result = run_isa(args)
        assert result.returncode == 2 and message in result.stderr.decode(), result.stderr
