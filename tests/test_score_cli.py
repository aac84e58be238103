"""`isa score` and `isa mig --protocol`: JSON per input, the table, seeds, presets, refusals."""

from __future__ import annotations

import dataclasses
import io as stdio
import itertools
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from isa_core.codes import Codes, save_codes
from isa_core.scores import protocol
from tests.conftest import isa_in_process as isa

SIZES = (2, 3, 4)
NAMES = ["shape", "scale", "x"]
EVERY = "dci,sap,modularity,explicitness,factorvae,betavae,mig"


@pytest.fixture(autouse=True)
def few_points(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fewer training and test points than Locatello et al.'s 10,000 and 5,000, for speed."""
    smaller = {
        name: dataclasses.replace(settings, num_train=400, num_test=200)
        for name, settings in protocol.PROTOCOLS.items()
    }
    monkeypatch.setattr(protocol, "PROTOCOLS", smaller)


def write_codes(path: Path, noise: float = 0.2, rows: slice = slice(None)) -> Path:
    """Codes of the full 2 x 3 x 4 grid: latent k follows factor k, the last latent is noise."""
    factors = np.array(list(itertools.product(*(range(s) for s in SIZES))))[rows]
    rng = np.random.default_rng(1)
    mean = np.concatenate([factors, np.zeros((len(factors), 1))], axis=1)
    mean = (mean + noise * rng.standard_normal(mean.shape)).astype(np.float32)
    metadata = {"kind": "codes", "factor_names": NAMES, "factor_sizes": list(SIZES)}
    codes = Codes(mean, np.full_like(mean, -3.0), factors, None, metadata)
    save_codes(path, codes)
    return path


@pytest.fixture
def codes(tmp_path: Path) -> Path:
    return write_codes(tmp_path / "codes.safetensors")


def test_one_json_object_per_input_with_every_requested_key(tmp_path: Path, capsys) -> None:
    first = write_codes(tmp_path / "a.safetensors")
    second = write_codes(tmp_path / "b.safetensors", noise=1.0)
    status, out, err = isa(["score", first, second, "--metric", EVERY], capsys)
    assert status == 0, err
    records = [json.loads(line) for line in out.splitlines()]
    assert [r["input"] for r in records] == [str(first), str(second)]
    keys = {
        "dci_disentanglement",
        "dci_completeness",
        "dci_informativeness_train",
        "dci_informativeness_test",
        "dci_importance",
        "sap",
        "sap_matrix",
        "modularity",
        "explicitness_train",
        "explicitness_test",
        "factorvae_train",
        "factorvae_eval",
        "factorvae_active_latents",
        "betavae_train",
        "betavae_eval",
        "mig",
        "mig_gaps",
    }
    for record in records:
        assert keys <= set(record), keys - set(record)
        assert record["protocol"] == "isa" and record["metrics"] == EVERY.split(",")
        assert record["settings"]["estimator"] == "quadrature" and record["n"] == 24
    assert records[0]["mig"] > records[1]["mig"]  # less noise, more disentangled
    assert err.count("scores (isa, seed 0)") == 2 and "dci_disentanglement" in err


def test_only_the_requested_metrics_and_quiet_hides_the_table(codes: Path, capsys) -> None:
    status, out, err = isa(["score", codes, "--metric", "sap", "-q"], capsys)
    assert status == 0 and err == ""
    record = json.loads(out)
    assert record["metrics"] == ["sap"] and "sap" in record and "mig" not in record


def test_paths_on_stdin(codes: Path, capsys, monkeypatch: pytest.MonkeyPatch) -> None:
    lines = f"{codes}\n\n{codes}\n".encode()
    monkeypatch.setattr(sys, "stdin", stdio.TextIOWrapper(stdio.BytesIO(lines)))
    status, out, err = isa(["score", "--metric", "modularity", "-q"], capsys)
    assert status == 0, err
    assert len(out.splitlines()) == 2


def test_the_same_seed_gives_the_same_bytes(codes: Path, capsys) -> None:
    argv = ["score", codes, "--metric", "dci,sap,factorvae,betavae", "-q"]
    runs = [isa([*argv, "--seed", seed], capsys) for seed in (3, 3, 4)]
    assert all(status == 0 for status, _, _ in runs)
    assert runs[0][1] == runs[1][1]
    assert runs[0][1] != runs[2][1]


def test_presets_give_their_documented_settings(codes: Path, capsys) -> None:
    expected = {
        "isa": ("quadrature", [], None, NAMES),
        "chen2018": ("sampling", ["shape"], None, ["scale", "x"]),
        "locatello2019": ("histogram", [], 10_000, NAMES),
    }
    for name, (estimator, left_out, points, scored) in expected.items():
        status, out, err = isa(
            ["score", codes, "--metric", "mig,sap", "--protocol", name, "-q"], capsys
        )
        assert status == 0, err
        record = json.loads(out)
        settings = record["settings"]
        assert (settings["estimator"], settings["left_out_factors"]) == (estimator, left_out)
        assert settings["mig_points"] == points and settings["bins"] == 20
        assert settings["normalization"].startswith("H(v_k)")
        assert record["scored_factors"] == scored and list(record["mig_gaps"]) == scored
        assert len(record["sap_matrix"][0]) == len(scored)
        status, out, err = isa(["mig", codes, "--protocol", name, "-q"], capsys)
        assert status == 0, err
        mig = json.loads(out)
        assert mig["protocol"] == name and mig["estimator"] == estimator
        assert mig["scored_factors"] == scored
        assert mig["n"] == (points or 24)


def test_mig_protocol_isa_is_the_default(codes: Path, capsys) -> None:
    _, default, _ = isa(["mig", codes, "-q"], capsys)
    _, named, _ = isa(["mig", codes, "-q", "--protocol", "isa"], capsys)
    assert default == named and json.loads(default)["protocol"] == "isa"


def test_every_bad_input_gets_one_line_and_exit_2(tmp_path: Path, codes: Path, capsys) -> None:
    partial = write_codes(tmp_path / "partial.safetensors", rows=slice(0, 20))
    means_only = tmp_path / "means.npz"
    np.savez(means_only, mean=np.zeros((24, 2)), factors=np.zeros((24, 1), int))
    nan = tmp_path / "nan.npz"
    np.savez(nan, mean=np.full((4, 2), np.nan), factors=np.zeros((4, 1), int))
    shapes = tmp_path / "shapes.npz"
    np.savez(shapes, mean=np.zeros((4, 2, 2)), factors=np.zeros((4, 1), int))
    pickled = tmp_path / "pickled.safetensors"
    pickled.write_bytes(b"\x80\x04\x95" + b"\0" * 20)
    cases = [
        (["score", codes, "--metric", "dci,bogus"], "--metrics 'bogus' is unknown"),
        (["score", codes, "--metric", ","], "--metrics names no score"),
        (["score", codes, "--protocol", "nope"], "nope"),
        (["score", tmp_path / "missing.safetensors"], "no such file"),
        (["score", partial, "--metric", "factorvae"], "factorvae: "),
        (["score", partial, "--metric", "betavae"], "betavae: "),
        (["score", means_only, "--metric", "mig"], "no 'logvar'"),
        (["score", nan], "NaN"),
        (["score", shapes], "do not fit"),
        (["score", pickled], "pickle"),
        (["score", codes, "--seed", "-1"], "--seed"),
        (["mig", codes, "--protocol", "chen2018", "--estimator", "histogram"], "'histogram'"),
        (["mig", codes, "--protocol", "locatello2019", "--bins", "5"], "--bins 5 cannot be"),
        (["mig", codes, "--protocol", "chen2018", "--factors", "x"], "--factors 'x' cannot"),
    ]
    for argv, message in cases:
        status, out, err = isa([*argv, "-q"], capsys)
        assert status == 2 and out == "", (argv, err)
        assert err.startswith(f"isa {argv[0]}: error: ") and err.count("\n") == 1, (argv, err)
        assert message in err, (argv, err)
