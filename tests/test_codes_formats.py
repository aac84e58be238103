"""Codes written by other tools: safetensors or .npz, with or without names, sizes, kind, logvar."""

from __future__ import annotations

import itertools
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

from isa_core.codes import Codes, load_codes
from isa_core.errors import IsaError
from tests.conftest import isa_in_process as isa

SIZES = (2, 3, 4)
NAMES = ["shape", "scale", "x"]


def grid_codes(noise: float = 0.1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean and logvar (24, 4) of the full 2 x 3 x 4 grid (latent k = factor k, plus noise;
    the last latent is noise alone), and the factors (24, 3)."""
    factors = np.array(list(itertools.product(*(range(s) for s in SIZES))))
    rng = np.random.default_rng(0)
    mean = np.concatenate([factors, np.zeros((len(factors), 1))], axis=1)
    mean = (mean + noise * rng.standard_normal(mean.shape)).astype(np.float32)
    return mean, np.full_like(mean, -3.0), factors


def another_tools_safetensors(path: Path, metadata: dict | None, logvar: bool = True) -> Path:
    """A codes file as safetensors' own numpy writer makes it: no `kind`, maybe no metadata."""
    mean, log_variance, factors = grid_codes()
    tensors = {"mean": mean, "factors": factors.astype(np.int64)}
    if logvar:
        tensors["logvar"] = log_variance
    save_file(tensors, path, metadata=None if metadata is None else {"isa": json.dumps(metadata)})
    return path


def another_tools_npz(path: Path, names: bool, logvar: bool = True) -> Path:
    mean, log_variance, factors = grid_codes()
    arrays = {"mean": mean, "factors": factors}
    if logvar:
        arrays["logvar"] = log_variance
    if names:
        arrays |= {"factor_names": np.array(NAMES), "factor_sizes": np.array(SIZES)}
    np.savez(path, **arrays)
    return path


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    """The same codes in each format, with stated and with inferred names and sizes."""
    stated = {"factor_names": NAMES, "factor_sizes": list(SIZES)}
    return {
        "safetensors-named": another_tools_safetensors(tmp_path / "a.safetensors", stated),
        "safetensors-bare": another_tools_safetensors(tmp_path / "b.safetensors", None),
        "npz-named": another_tools_npz(tmp_path / "c.npz", names=True),
        "npz-bare": another_tools_npz(tmp_path / "d.npz", names=False),
    }


def test_codes_of_another_tool_load_with_stated_or_inferred_names(files) -> None:
    for name, path in files.items():
        codes = load_codes(path)
        expected = NAMES if "named" in name else ["f0", "f1", "f2"]
        assert codes.factor_names == expected, name
        assert codes.factor_sizes == list(SIZES), name
        assert codes.mean.shape == (24, 4) and codes.logvar.shape == (24, 4)
        assert codes.logpx is None


def test_isa_mig_and_isa_score_take_them_and_agree_across_formats(files, capsys) -> None:
    migs, scores = set(), set()
    for path in files.values():
        status, out, err = isa(["mig", path, "-q"], capsys)
        assert status == 0, err
        record = json.loads(out)
        assert record["protocol"] == "isa" and record["n"] == 24
        migs.add(round(record["mig"], 12))
        status, out, err = isa(["score", path, "--metric", "mig,factorvae", "-q"], capsys)
        assert status == 0, err
        record = json.loads(out)
        scores.add((round(record["mig"], 12), record["factorvae_eval"]))
    assert len(migs) == 1 and len(scores) == 1  # one set of codes, four files


def test_the_issue_case_names_and_sizes_without_kind_is_codes(tmp_path: Path, capsys) -> None:
    stated = {"factor_names": NAMES, "factor_sizes": list(SIZES), "data": "elsewhere"}
    path = another_tools_safetensors(tmp_path / "codes.safetensors", stated)
    status, out, err = isa(["mig", path, "-q"], capsys)
    assert status == 0, err
    assert [f["name"] for f in json.loads(out)["factors"]] == NAMES


def test_codes_without_logvar_say_what_needs_it_in_one_line(tmp_path: Path, capsys) -> None:
    means_only = [
        another_tools_npz(tmp_path / "m.npz", names=True, logvar=False),
        another_tools_safetensors(tmp_path / "m.safetensors", None, logvar=False),
    ]
    for path in means_only:
        for argv in (
            ["mig", path],
            ["mig", path, "--estimator", "sampling"],
            ["score", path, "--metric", "mig"],
            ["score", path, "--metric", "mig", "--protocol", "chen2018"],
        ):
            status, _, err = isa(argv, capsys)
            assert status == 2 and err.count("\n") == 1, (argv, err)
            assert err.startswith(f"isa {argv[0]}: error: ") and "no 'logvar'" in err, err
            assert "histogram" in err and "locatello2019" in err, err
        # the means alone are enough for the histogram and for every other score
        for argv in (
            ["mig", path, "--estimator", "histogram"],
            ["mig", path, "--protocol", "locatello2019"],
            ["score", path, "--metric", "mig,betavae", "--protocol", "locatello2019"],
        ):
            status, out, err = isa([*argv, "-q"], capsys)
            assert status == 0, (argv, err)
            assert 0 <= json.loads(out)["mig"] <= 1
    with pytest.raises(IsaError, match="no 'logvar'"):
        _ = Codes(np.zeros((2, 1)), None, np.zeros((2, 1), int), None, {}).std


def npz_bytes(tmp_path: Path, name: str, **arrays) -> Path:
    path = tmp_path / name
    np.savez(path, **arrays)
    return path


def test_bad_npz_codes_are_refused_in_one_line(tmp_path: Path, capsys) -> None:
    mean, logvar, factors = grid_codes()
    pickled = tmp_path / "pickled.npz"
    with zipfile.ZipFile(pickled, "w") as archive:
        buffer = tmp_path / "obj.npy"
        np.save(buffer, np.array([{"a": 1}], dtype=object), allow_pickle=True)
        archive.write(buffer, "mean.npy")
        archive.writestr("factors.npy", (tmp_path / "obj.npy").read_bytes())
    nan = mean.copy()
    nan[3, 1] = np.nan
    cases = {
        npz_bytes(tmp_path, "nomean.npz", factors=factors): "has no 'mean' entry",
        npz_bytes(tmp_path, "nofactors.npz", mean=mean): "has no 'factors' entry",
        npz_bytes(tmp_path, "flat.npz", mean=mean[:, 0], factors=factors): "do not fit",
        npz_bytes(tmp_path, "rows.npz", mean=mean[:5], factors=factors): "do not fit",
        npz_bytes(tmp_path, "lv.npz", mean=mean, logvar=logvar[:, :2], factors=factors): "fit",
        npz_bytes(tmp_path, "float.npz", mean=mean, factors=factors * 1.0): "integer classes",
        npz_bytes(tmp_path, "text.npz", mean=mean.astype(str), factors=factors): "floats",
        npz_bytes(tmp_path, "nan.npz", mean=nan, factors=factors): "NaN",
        npz_bytes(tmp_path, "neg.npz", mean=mean, factors=factors - 1): "negative classes",
        npz_bytes(
            tmp_path, "names.npz", mean=mean, factors=factors, factor_names=np.array(["a", "b"])
        ): "factor_names",
        npz_bytes(
            tmp_path, "sizes.npz", mean=mean, factors=factors, factor_sizes=np.array([2, 0, 4])
        ): "factor_sizes",
        pickled: "pickle",
    }
    for path, message in cases.items():
        for command in ("mig", "score"):
            status, _, err = isa([command, path, "-q"], capsys)
            assert status == 2 and err.count("\n") == 1, (path, err)
            assert err.startswith(f"isa {command}: error: ") and message in err, (path, err)
            assert str(path) in err, err


def test_another_kind_is_not_codes_and_a_bare_foreign_file_is_refused(
    tmp_path: Path, capsys
) -> None:
    marked = another_tools_safetensors(tmp_path / "model.safetensors", {"kind": "model"})
    foreign = tmp_path / "weights.safetensors"
    save_file({"w": np.zeros(3, np.float32)}, foreign)
    for path in (marked, foreign):
        status, _, err = isa(["mig", path, "-q"], capsys)
        assert status == 2 and "neither a codes file nor an isa model" in err, err
        assert err.count("\n") == 1
