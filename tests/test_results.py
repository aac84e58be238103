"""Results rows of a sweep: `RunResult` from a run folder and from a row, reading and selection."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from isa_core import io
from isa_core.errors import IsaError
from isa_core.sweeps.results import RunResult, read_results, select_representatives

CONFIG = {"beta": 2.0, "steps": 40, "epochs": 20.0, "learn_exponents": True, "seed": 7}
RESULT = {
    "mig": 0.25,
    "logpx": -31.5,
    "factors": [{"name": "shape", "gap": 0.1}, {"name": "scale", "gap": None}],
    "seconds": 12.5,
}


def run_folder(tmp_path: Path, result: str = json.dumps(RESULT), config: object = CONFIG) -> Path:
    """A finished run folder as `isa sweep run` leaves it (model, metrics, result)."""
    folder = tmp_path / "runs" / "isa_seed7"
    folder.mkdir(parents=True)
    io.save_bundle(folder / "model.safetensors", {"w": torch.zeros(1)}, {"config": config})
    lines = [{"step": 1, "exponents": [2.0, 2.0]}, {"step": 2, "exponents": [2.1, 1.9]}]
    text = "".join(json.dumps(line) + "\n" for line in lines)
    (folder / "metrics.jsonl").write_text(text + '{"step": 3, "images_per_s": 9\n')
    (folder / "result.json").write_text(result)
    return folder


ENTRY = {"id": "isa_seed7", "method": "isa", "grid": {"method": "isa", "seed": 7}}


def test_a_run_folder_gives_the_collect_row(tmp_path: Path) -> None:
    folder = run_folder(tmp_path)
    row = RunResult.from_run_folder(ENTRY, folder).as_row()
    expected = {
        "id": "isa_seed7",
        "method": "isa",
        "beta": 2.0,
        "seed": 7,
        "config": {**CONFIG, "epochs": None},  # a run given steps asked for no epochs
        "mig": 0.25,
        "logpx": -31.5,
        "gaps": {"shape": 0.1, "scale": None},
        "exponents": [2.1, 1.9],  # the last readable metrics line with exponents
        "seconds": 12.5,
        "images_per_s": None,
        "model": str((folder / "model.safetensors").resolve()),
        "codes": str((folder / "codes.safetensors").resolve()),
    }
    assert row == expected and list(row) == list(expected)
    again = RunResult.from_row(json.loads(json.dumps(row)), "results.jsonl")
    assert again.as_row() == row and list(again.as_row()) == list(row)
    assert again.grid == {"seed": 7} and again.learned_exponents == [2.1, 1.9]


def test_score_metrics_of_the_run_come_last_in_the_row(tmp_path: Path) -> None:
    scores = {"protocol": "isa", "seed": 0, "n": 9, "metrics": ["sap"], "settings": {"bins": 20}}
    scores |= {"sap": 0.4, "sap_matrix": [[1.0]], "factorvae_active_latents": 3}
    folder = run_folder(tmp_path, json.dumps({**RESULT, "scores": scores}))
    row = RunResult.from_run_folder(ENTRY, folder).as_row()
    assert list(row)[-1] == "scores"
    assert row["scores"] == {"sap": 0.4, "factorvae_active_latents": 3}  # numbers, no context
    again = RunResult.from_row(json.loads(json.dumps(row)), "results.jsonl")
    assert again.as_row() == row and again.grid == {"seed": 7}


def test_a_grid_beta_is_the_rows_beta(tmp_path: Path) -> None:
    entry = {"id": "b1", "method": None, "grid": {"beta": 1}}
    result = RunResult.from_run_folder(entry, run_folder(tmp_path))
    assert result.beta == 1 and list(result.as_row())[:4] == ["id", "method", "beta", "config"]


@pytest.mark.parametrize(
    ("result", "config", "message"),
    [
        ("{", CONFIG, "is not readable JSON"),
        ("[]", CONFIG, "is not a result of `isa sweep run`"),
        ('{"factors": []}', CONFIG, "is not a result of `isa sweep run`"),
        ('{"mig": 0.1, "factors": [{"gap": 1}]}', CONFIG, "is not a result of `isa sweep run`"),
        (json.dumps(RESULT), "x", "has no run config"),
        (json.dumps({**RESULT, "scores": [0.1]}), CONFIG, "'scores' is not an `isa score` record"),
    ],
)
def test_damaged_run_folders_are_refused(
    tmp_path: Path, result: str, config: object, message: str
) -> None:
    folder = run_folder(tmp_path, result, config)
    with pytest.raises(IsaError, match=message) as error:
        RunResult.from_run_folder(ENTRY, folder)
    assert "run the sweep again" in str(error.value)


def write_rows(tmp_path: Path, rows: list) -> Path:
    path = tmp_path / "results.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def test_read_results_gives_checked_runs(tmp_path: Path) -> None:
    rows = [{"id": "a", "method": "m", "beta": 1, "seed": 0, "mig": 0.5, "logpx": -2.0}]
    (result,) = read_results(write_rows(tmp_path, rows), ("mig",))
    assert (result.id, result.method, result.beta, result.grid) == ("a", "m", 1, {"seed": 0})
    assert result.mig == 0.5 and result.config is None and result.learned_exponents is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "holds no results"),
        ("\n \n", "holds no results"),
        ("mig=0.1\n", r"results.jsonl:1 is not a JSON line"),
        ("[1]\n", "row 1 is a list, not a JSON object"),
        ("true\n", "row 1 is true, not a JSON object"),
        ('{"id": "a", "mig": 3}\n', "run a has mig 3; it must be a number in 0..1"),
        ('{"mig": true}\n', "run 1 has mig True"),
        ('{"mig": 0.1, "logpx": NaN}\n', "logpx nan; it must be a finite number"),
        ('{"mig": 0.1, "beta": "one"}\n', "has beta 'one'"),
        ('{"mig": 0.1, "exponents": [2, "a"]}\n', "must be a list of finite numbers"),
        ('{"mig": 0.1, "config": "x"}\n', "has config 'x'; it must be an object"),
        ('{"id": "a", "logpx": 1}\n', "run a has no mig"),
        ('{"mig": 0.1, "scores": {"sap": "x"}}\n', "scores .*; it must be an object of finite"),
        ('{"mig": 0.1, "scores": [1]}\n', "scores .*; it must be an object of finite"),
    ],
)
def test_damaged_results_are_refused(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "results.jsonl"
    path.write_text(text)
    with pytest.raises(IsaError, match=message):
        read_results(path, ("mig",))


def test_unreadable_results_files_are_refused(tmp_path: Path) -> None:
    with pytest.raises(IsaError, match="no such results file"):
        read_results(tmp_path / "missing.jsonl")
    with pytest.raises(IsaError, match="is a folder"):
        read_results(tmp_path)
    binary = tmp_path / "binary.jsonl"
    binary.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(IsaError, match="is not text"):
        read_results(binary)
    with pytest.raises(IsaError, match="row 1 is 5, not a JSON object"):
        RunResult.from_row(5, "results")


# Two groups; the selection at quantile 0.25 is computed by hand below.
SELECTION_ROWS = [
    {"id": "a1", "method": "a", "beta": 1, "mig": 0.1, "logpx": -20.0},
    {"id": "a2", "method": "a", "beta": 1, "mig": 0.3, "logpx": -25.0},
    {"id": "a3", "method": "a", "beta": 1, "mig": 0.5, "logpx": -22.0},
    {"id": "a4", "method": "a", "beta": 1, "mig": 0.4, "logpx": -30.0},
    {"id": "b1", "method": "b", "beta": 1, "mig": 0.2, "logpx": -21.0},
]


def test_select_picks_the_hand_computed_representative() -> None:
    results = [RunResult.from_row(row) for row in SELECTION_ROWS]
    # quantile 0.25 keeps a2, a3, a4: mean (0.4, -25.667), variances (0.00667, 10.889);
    # squared distances a2 1.541, a3 2.735, a4 1.724 -> a2
    chosen = select_representatives(results, ["method", "beta"], 0.25)
    assert [c["id"] for c in chosen] == ["a2", "b1"]
    first, second = chosen
    assert list(first) == [
        "method",
        "beta",
        "id",
        "distance",
        "mig",
        "logpx",
        "kept",
        "runs",
        "mean_mig",
        "mean_logpx",
        "model",
        "codes",
    ]
    assert (first["kept"], first["runs"], first["mig"], first["logpx"]) == (3, 4, 0.3, -25.0)
    assert first["distance"] == pytest.approx((0.01 / (0.02 / 3) + (2 / 3) ** 2 / (98 / 9)) ** 0.5)
    assert first["mean_mig"] == pytest.approx(0.4) and first["mean_logpx"] == pytest.approx(-77 / 3)
    assert second["distance"] == 0 and second["kept"] == 1


def test_select_refuses_bad_groups_and_quantiles() -> None:
    results = [RunResult.from_row({"id": "a", "method": "m", "mig": 0.1, "logpx": -1.0})]
    with pytest.raises(IsaError, match="must lie in") as error:
        select_representatives(results, ["method"], 1.0)
    assert error.value.field == "quantile"
    with pytest.raises(IsaError, match="run a has no beta"):
        select_representatives(results, ["method", "beta"])
    with pytest.raises(IsaError, match="run a has config"):
        grouped = RunResult.from_row({"id": "a", "mig": 0.1, "logpx": -1.0, "config": {}})
        select_representatives([grouped], ["config"])
