"""`isa encode`, `isa mig`, `isa traverse` end to end on dsprites-mini."""

from __future__ import annotations

import io as stdio
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from isa_core import io
from isa_core.codes import load_codes
from isa_core.metrics import mig, mig_report
from tests.conftest import isa_executable, isa_in_process


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """train | encode | mig through the real entry point, as a user would pipe them."""
    folder = tmp_path_factory.mktemp("run") / "run"
    isa = isa_executable()
    command = (
        f"'{isa}' train --data dsprites-mini --objective tcvae --steps 60 --batch-size 128 "
        f"-o '{folder}' -q | '{isa}' encode -q | '{isa}' mig -q"
    )
    result = subprocess.run(command, shell=True, capture_output=True, check=False)
    assert result.returncode == 0, result.stderr.decode()
    record = json.loads(result.stdout.decode().strip())
    assert record["input"] == str((folder / "codes.safetensors").resolve())
    assert record["estimator"] == "quadrature" and record["n"] == 4410
    assert 0 <= record["mig"] <= 1 and record["logpx"] < 0
    assert [f["name"] for f in record["factors"]] == ["shape", "scale", "orientation", "x", "y"]
    assert all(len(f["mi"]) == 20 and len(f["top"]) == 2 for f in record["factors"])
    return folder


def test_codes_file_contents(trained: Path) -> None:
    codes = load_codes(trained / "codes.safetensors")
    assert codes.mean.shape == (4410, 20) and codes.logvar.shape == (4410, 20)
    assert codes.factors.shape == (4410, 5) and codes.logpx.shape == (4410,)
    assert codes.metadata["factor_sizes"] == [3, 6, 5, 7, 7]
    assert codes.metadata["model"] == str((trained / "model.safetensors").resolve())
    raw = io.load_bundle(trained / "codes.safetensors").tensors
    assert raw["mean"].dtype == torch.float32 and raw["factors"].dtype == torch.int64


def test_the_three_estimators_agree_on_a_trained_model(trained: Path) -> None:
    codes = load_codes(trained / "codes.safetensors")
    names = codes.factor_names
    quad = mig(codes.mean, codes.std, codes.factors, names, "quadrature")
    sampled = mig(codes.mean, codes.std, codes.factors, names, "sampling", samples=4000)
    hist = mig(codes.mean, codes.std, codes.factors, names, "histogram")
    # Sampling estimates the same quantity: its MI entries agree within Monte-Carlo error.
    assert np.abs(quad.mi - sampled.mi).max() < 0.05
    assert abs(quad.score - sampled.score) < 0.03
    # The histogram estimator discretises the means (a different quantity): looser agreement.
    assert abs(quad.score - hist.score) < 0.1


def test_mig_of_several_paths_on_stdin_and_factor_choice(
    trained: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    paths = f"{trained / 'codes.safetensors'}\n{trained / 'model.safetensors'}\n".encode()
    monkeypatch.setattr(sys, "stdin", stdio.TextIOWrapper(stdio.BytesIO(paths)))
    status, out, err = isa_in_process(["mig", "--factors", "scale,x,y", "-q"], capsys)
    assert status == 0, err
    lines = [json.loads(line) for line in out.splitlines()]
    assert len(lines) == 2
    assert [f["name"] for f in lines[0]["factors"]] == ["scale", "x", "y"]
    assert lines[0]["scored_factors"] == ["scale", "x", "y"]
    assert lines[0]["mig"] == pytest.approx(lines[1]["mig"], abs=1e-9)
    codes = str(trained / "codes.safetensors")
    status, out, err = isa_in_process(
        ["mig", codes, "--group", "subspaces", "--samples", "500", "-q"], capsys
    )
    assert status == 0, err
    subspaces = json.loads(out)["subspaces"]
    assert subspaces["groups"][0] == [0, 1, 2, 3] and len(subspaces["factors"][0]["mi"]) == 5
    status, out, err = isa_in_process(
        ["mig", codes, "--estimator", "histogram", "--bins", "10", "-q"], capsys
    )
    assert status == 0, err
    assert json.loads(out)["estimator"] == "histogram"


def test_mig_record_is_the_library_report_and_the_table_goes_to_stderr(
    trained: Path, capsys: pytest.CaptureFixture
) -> None:
    path = trained / "codes.safetensors"
    status, out, err = isa_in_process(["mig", str(path)], capsys)
    assert status == 0, err
    report = mig_report(load_codes(path))
    # the library's report, with the (default) protocol named
    assert out == json.dumps({"input": str(path), **report, "protocol": "isa"}) + "\n"
    assert f"MIG {report['mig']:.4f} (quadrature)" in err and "log p(x|z)" in err


@pytest.mark.parametrize(
    ("kind", "min_size"), [("traversal", (500, 500)), ("latent-vs-true", (600, 600))]
)
def test_traverse_writes_a_png(
    trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture, kind: str, min_size
) -> None:
    out = tmp_path / f"{kind}.png"
    model, codes = trained / "model.safetensors", trained / "codes.safetensors"
    status, stdout, err = isa_in_process(
        ["traverse", model, "--codes", codes, "--kind", kind, "-o", out], capsys
    )
    assert status == 0, err
    assert stdout.strip() == str(out.resolve())
    with Image.open(out) as image:
        image.load()
        assert image.format == "PNG"
        assert image.size[0] >= min_size[0] and image.size[1] >= min_size[1]


def test_bad_inputs(trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    no_factors = tmp_path / "nofactors.safetensors"
    io.save_bundle(
        no_factors, {"mean": torch.zeros(3, 2), "logvar": torch.zeros(3, 2)}, {"kind": "codes"}
    )
    codes = io.load_bundle(trained / "codes.safetensors")
    nan_codes = tmp_path / "nan.safetensors"
    tensors = dict(codes.tensors)
    tensors["mean"] = tensors["mean"].clone()
    tensors["mean"][5, 3] = float("nan")
    io.save_bundle(nan_codes, tensors, codes.metadata)
    empty = tmp_path / "empty.safetensors"
    io.save_bundle(empty, {k: v[:0] for k, v in codes.tensors.items()}, codes.metadata)
    few = tmp_path / "few.safetensors"
    three = {k: codes.tensors[k][:, :3].contiguous() for k in ("mean", "logvar")}
    io.save_bundle(few, {**three, "factors": codes.tensors["factors"]}, codes.metadata)
    foreign = tmp_path / "foreign.safetensors"
    io.save_bundle(foreign, {"w": torch.zeros(2)}, {"something": "else"})
    means_only = tmp_path / "means.safetensors"  # codes of another tool: no logvar, no kind
    kept = {k: codes.tensors[k] for k in ("mean", "factors")}
    io.save_bundle(means_only, kept, {"factor_names": codes.metadata["factor_names"]})
    moved = tmp_path / "moved"
    moved.mkdir()
    model = io.load_bundle(trained / "model.safetensors")
    meta = dict(model.metadata)
    meta["config"] = dict(meta["config"], data=str(tmp_path / "gone.npz"))
    io.save_bundle(moved / "model.safetensors", model.tensors, meta)
    model_path, codes_path = str(trained / "model.safetensors"), str(trained / "codes.safetensors")
    png = str(tmp_path / "x.png")
    cases = [
        (["mig", no_factors], "has no factors"),
        (["mig", nan_codes], "NaN"),
        (["mig", foreign], "neither a codes file nor an isa model"),
        (["mig", moved / "model.safetensors"], "is not available"),
        (["mig", empty], f"{empty} holds codes of 0 images"),
        (["encode", foreign], "not an isa model"),
        (["mig", codes_path, "--factors", "colour"], "--factors 'colour': unknown colour"),
        (["traverse", model_path, "-o", tmp_path / "x.pdf"], "PNG"),
        (["traverse", model_path, "--codes", few, "-o", png], f"--codes {few} has 3 latents"),
        (["traverse", model_path, "--codes", means_only, "-o", png], "has no 'logvar'"),
        (["mig", means_only], "no 'logvar'"),
        (
            ["traverse", model_path, "--codes", codes_path, "--index", "4410", "-o", png],
            "--index 4410 is out of range (0..4409)",
        ),
        (
            ["traverse", model_path, "--codes", codes_path, "--range", "nan", "-o", png],
            "--range must be a positive finite number, got nan",
        ),
    ]
    for args, message in cases:
        status, _, err = isa_in_process(args, capsys)
        assert status == 2, (args, err)
        assert err.startswith(f"isa {args[0]}: error: ") and err.count("\n") == 1, err
        assert message in err, (args, err)
