"""Issue 11: bad inputs to the prior, data, metric and toy commands are one line with exit 2.

Every command runs in-process through ``isa_cli.main.main``, the real error boundary, with
stdin, stdout and stderr replaced; each case names the problem and the fix in one line.
"""

from __future__ import annotations

import io
import json
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import scipy.stats as st
import torch

from isa_cli.main import main
from isa_core import metrics
from isa_core.codes import Codes, save_codes
from isa_core.data import open_dataset
from isa_core.errors import IsaError
from isa_core.metrics import mutual_information
from isa_core.priors import LpNested, LpTree

HUGE_SEED = str(2**70)


def isa(args: list[str], stdin: bytes = b"", monkeypatch=None) -> tuple[int, bytes, str]:
    """Run `isa ARGS` in-process: (exit status, stdout bytes, stderr text)."""
    saved = sys.stdin, sys.stdout, sys.stderr
    sys.stdin = io.TextIOWrapper(io.BytesIO(stdin))
    sys.stdout = io.TextIOWrapper(io.BytesIO(), write_through=True)
    sys.stderr = io.StringIO()
    try:
        main(args)
        status = 0
    except SystemExit as done:
        status = done.code if isinstance(done.code, int) else 1
    finally:
        sys.stdout.flush()
        out, err = sys.stdout.buffer.getvalue(), sys.stderr.getvalue()
        sys.stdin, sys.stdout, sys.stderr = saved
    return status, out, err


def refused(args: list[str], *words: str, stdin: bytes = b"") -> str:
    """Assert a one-line exit-2 error containing ``words``; return it."""
    status, _, err = isa(args, stdin)
    assert status == 2, err
    assert err.count("\n") == 1 and err.startswith("isa") and "internal error" not in err, err
    for word in words:
        assert word in err, err
    return err


def npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def write_codes(path: Path, mean: np.ndarray, logvar: np.ndarray, factors: np.ndarray) -> Path:
    metadata = {
        "kind": "codes",
        "data": "synthetic",
        "factor_names": [f"f{i}" for i in range(factors.shape[1])],
        "factor_sizes": [int(factors[:, i].max(initial=0)) + 1 for i in range(factors.shape[1])],
    }
    codes = Codes(mean.astype(np.float32), logvar.astype(np.float32), factors, None, metadata)
    save_codes(path, codes)
    return path


@pytest.fixture
def codes(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    factors = rng.integers(0, 4, (200, 2))
    mean = np.concatenate(
        [factors + 0.1 * rng.standard_normal((200, 2)), rng.standard_normal((200, 1))], 1
    )
    return write_codes(tmp_path / "codes.safetensors", mean, np.full((200, 3), -3.0), factors)


# -- 1. sizes are bounded before anything is allocated ----------------------------------------


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["prior-sample", "-n", "10000000000000"], ("GiB", "at most")),
        (["prior-sample", "-n", "99999999999999999999999"], ("GiB", "at most")),
        (["prior-plot", "-o", "x.png", "--tree", "2(2)", "--samples", "10000000000000"], ("GiB",)),
        (["prior-sample", "-n", "2", "--layout", "100000000000x1"], ("GiB", "100,000")),
        (["prior-sample", "-n", "2", "--layout", "3,100000000000"], ("GiB", "100,000")),
        (["prior-sample", "-n", "2", "--tree", "2(1,2(100000000000))"], ("GiB", "100,000")),
        (["prior-sample", "-n", "2", "--tree", "2(" + "9" * 5000 + ")"], ("too large",)),
        (["prior-sample", "-n", "0"], ("-n",)),
        (["prior-sample", "-n", "-5"], ("-n",)),
        (["toy-fa", "--points", "100000000000"], ("at most",)),
        (["toy-ica", "--n", "100000000000"], ("GiB", "at most")),
        (["toy-ica", "--directions", ",".join(["10"] * 20000)], ("at most 32",)),
        (["toy-ica", "--noise", "1e-300"], ("--noise",)),
    ],
)
def test_huge_or_non_positive_sizes_are_refused(args: list[str], words: tuple[str, ...]) -> None:
    refused(args, *words)


@pytest.mark.parametrize(
    ("flags", "words"),
    [
        (["--estimator", "histogram", "--bins", "100000000000"], ("GiB", "fewer bins")),
        (["--estimator", "sampling", "--samples", "100000000000"], ("GiB", "fewer samples")),
        (["--bins", "0"], ("--bins",)),
        (["--samples", "0"], ("--samples",)),
    ],
)
def test_mig_sizes_are_bounded(codes: Path, flags: list[str], words: tuple[str, ...]) -> None:
    refused(["mig", str(codes), "-q", *flags], *words)


# -- 2. empty inputs ---------------------------------------------------------------------------


def test_logpdf_of_zero_rows_is_zero_rows(tmp_path: Path) -> None:
    status, out, err = isa(["prior-logpdf"], npy(np.zeros((0, 20))))
    assert status == 0, err
    assert np.load(io.BytesIO(out)).shape == (0,)
    status, out, err = isa(["prior-logpdf", "--tree", "2(1,3(2))", "--text"], npy(np.zeros((0, 3))))
    assert (status, out) == (0, b""), err


def test_mig_of_zero_codes_is_refused(tmp_path: Path) -> None:
    empty = write_codes(
        tmp_path / "empty.safetensors", np.zeros((0, 3)), np.zeros((0, 3)), np.zeros((0, 2), int)
    )
    refused(["mig", str(empty), "-q"], "0 images", "undefined", str(empty))
    with pytest.raises(IsaError, match="no codes"):
        mutual_information(np.zeros((0, 2)), np.ones((0, 2)), np.zeros((0, 1), int))


# -- 3. deep trees ----------------------------------------------------------------------------


def test_deeply_nested_trees_are_refused_not_a_recursion_error() -> None:
    spec = "2(" * 2000 + "1" + ")" * 2000
    refused(["prior-sample", "-n", "2", "--tree", spec], "nested", "100")
    tree = LpTree(2.0, (1,))
    for _ in range(99):
        tree = LpTree(2.0, (1, tree))
    assert tree.depth == 100
    with pytest.raises(IsaError, match="100"):
        LpTree(2.0, (tree,))


def test_a_tree_at_the_depth_limit_works_everywhere() -> None:
    spec = "2(1," * 99 + "2(2)" + ")" * 99
    tree = LpTree.parse(spec)
    assert tree.depth == 100 and tree.n == 101 and LpTree.parse(tree.spec) == tree
    prior = LpNested(tree)
    z = prior.sample((5,), generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(prior.log_prob(z)).all()
    assert tree.with_exponents([2.5] * tree.num_inner).exponents[-1] == 2.5


# -- 4. seeds, indices, NUL bytes -------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ["prior-sample", "-n", "2", "--seed", HUGE_SEED],
        ["prior-sample", "-n", "2", "--seed", "-1"],
        ["prior-plot", "-o", "x.png", "--tree", "2(2)", "--seed", HUGE_SEED],
        ["mig", "x.safetensors", "--seed", HUGE_SEED],
        ["toy-ica", "--seed", HUGE_SEED],
        ["toy-ica", "--seed", "-1"],
    ],
)
def test_seeds_outside_the_range_are_refused_naming_it(args: list[str]) -> None:
    refused(args, "--seed", "0..2^63-1")


def test_a_seed_at_the_top_of_the_range_works() -> None:
    status, out, err = isa(["prior-sample", "-n", "2", "--seed", str(2**63 - 1)])
    assert status == 0 and np.load(io.BytesIO(out)).shape == (2, 20), err


@pytest.mark.parametrize(
    "args",
    [
        ["data", "render", "dsprites-mini", "--index", "99999999999999999999999"],
        ["data", "render", "dsprites-mini", "--index", "0,-1"],
        [
            "data",
            "render",
            "dsprites-mini",
            "--factors",
            "shape=99999999999999999999999,scale=0,orientation=0,x=0,y=0",
        ],
    ],
)
def test_huge_render_indices_are_out_of_range(args: list[str]) -> None:
    refused(args, "out of range")


@pytest.mark.parametrize(
    ("args", "stdin"),
    [
        (["prior-logpdf", "a\0b.npy"], b""),
        (["prior-logpdf"], b"a\0b.npy\n"),
        (["prior-plot", "-o", "x.png", "--tree", "2(2)", "a\0b.npy"], b""),
        (["mig", "a\0b.safetensors"], b""),
        (["mig"], b"a\0b.safetensors\n"),
        (["data", "info", "a\0b.npz"], b""),
    ],
)
def test_a_nul_byte_in_a_path_is_refused(args: list[str], stdin: bytes) -> None:
    err = refused(args, "NUL", stdin=stdin)
    assert "\0" not in err


# -- 5. exponents, scale and extent where float64 breaks --------------------------------------


@pytest.mark.parametrize(
    "flags",
    [
        ["--tree", "1e300(2)"],
        ["--tree", "1e-300(2)"],
        ["--tree", "2(1,30(2))"],
        ["--p1", "1e-300"],
        ["--p1", "1e300"],
        ["--p0", "0.01"],
        ["--layout", "2,2", "--p1", "2,25"],
    ],
)
def test_exponents_outside_the_supported_range_are_refused(flags: list[str]) -> None:
    refused(["prior-sample", "-n", "3", *flags], "0.05..20")


@pytest.mark.parametrize("p", [0.05, 20.0])
@pytest.mark.parametrize("spec", ["{p}(1)", "{p}(40)", "2({p}(1),{p}(4))", "{p}(1,{p}(2,{p}(3)))"])
def test_sampling_and_log_density_are_finite_and_exact_at_the_range_ends(spec, p) -> None:
    tree = LpTree.parse(spec.format(p=p))
    prior = LpNested(tree, scale=2.0)
    z = prior.sample((20000,), generator=torch.Generator().manual_seed(1))
    assert torch.isfinite(z).all() and torch.isfinite(prior.log_prob(z)).all()
    radial = (prior.power_f(z) / 2.0).numpy()  # v0^p0 / s ~ Gamma(n / p0)
    assert st.kstest(radial, st.gamma(tree.n / tree.p).cdf).pvalue > 1e-3


def test_non_finite_samples_are_never_written(tmp_path: Path) -> None:
    refused(["prior-sample", "-n", "3", "--tree", "0.05(2)", "--scale", "1e300"], "inf or NaN")
    with pytest.raises(IsaError, match="inf or NaN"):  # a tree built in code skips the range
        LpNested(LpTree(1e300, (2,))).sample((3,), generator=torch.Generator().manual_seed(0))
    out = tmp_path / "z.npy"
    refused(
        [
            "prior-sample",
            "-n",
            "5",
            "--tree",
            "0.05(2)",
            "--scale",
            "100",
            "--dtype",
            "float32",
            "-o",
            str(out),
        ],
        "float32",
        "--dtype float64",
    )
    assert not out.exists()


@pytest.mark.parametrize("extent", ["inf", "nan", "-1", "0"])
def test_plot_extent_must_be_positive_and_finite(tmp_path: Path, extent: str) -> None:
    refused(
        ["prior-plot", "-o", str(tmp_path / "p.png"), "--tree", "2(2)", "--extent", extent],
        "--extent",
    )


def test_plot_of_samples_too_far_out_asks_for_an_extent(tmp_path: Path) -> None:
    far = tmp_path / "far.npy"
    np.save(far, np.full((3, 2), 1e308))
    png = tmp_path / "p.png"
    refused(["prior-plot", str(far), "--tree", "2(2)", "-o", str(png)], "--extent")
    status, _, err = isa(
        ["prior-plot", str(far), "--tree", "2(2)", "-o", str(png), "--extent", "3"]
    )
    assert status == 0 and err == "" and png.exists(), err


def test_mig_distribution_refuses_impossible_values() -> None:
    import dataclasses

    from isa_core.plots import mig_distribution
    from isa_core.sweeps.results import RunResult

    def run(method: str, mig: float) -> RunResult:  # built unchecked, as a library caller may
        return dataclasses.replace(RunResult.from_row({"method": method, "mig": 0.5}), mig=mig)

    for bad in (1e308, -1e308, float("nan")):
        with pytest.raises(IsaError, match="mig"):
            mig_distribution([run("a", 0.5), run("a", bad)])
    mig_distribution([run("a", 0.5), run("b", 1.0000001)])


def test_contour_grid_extent_is_checked() -> None:
    from isa_core.plots import prior_contour_grid

    with pytest.raises(IsaError, match="extent"):
        prior_contour_grid([LpNested(LpTree.parse("2(2)"))], extent=float("inf"))


# -- 6. malformed data and codes files --------------------------------------------------------


def generic_npz(path: Path, **overrides) -> Path:
    factors = np.array(np.meshgrid(np.arange(2), np.arange(3), indexing="ij")).reshape(2, -1).T
    entries = {
        "images": np.zeros((6, 4, 4), np.uint8),
        "factors": factors,
        "factor_names": np.array(["a", "b"]),
        "factor_sizes": np.array([2, 3]),
    }
    entries.update(overrides)
    np.savez(path, **entries)
    return path


@pytest.mark.parametrize(
    ("overrides", "words"),
    [
        ({"factor_sizes": np.array(["2", "3"])}, ("'factor_sizes'", "integers")),
        ({"factor_sizes": np.array(["x", "y"])}, ("'factor_sizes'", "integers")),
        ({"factor_values_b": np.array(["p", "q", "r"])}, ("'factor_values_b'", "numbers")),
        ({"factor_names": np.array([1, 2])}, ("'factor_names'", "strings")),
        ({"factor_names": np.array(["a", "a"])}, ("repeat",)),
        ({"factors": np.array([[0, 0], [2**62, 2**62]] * 3)}, ("grid",)),
        (
            {"images": np.zeros((0, 4, 4), np.uint8), "factors": np.zeros((0, 2), int)},
            ("no images",),
        ),
    ],
)
def test_generic_npz_with_wrong_types_is_refused(tmp_path: Path, overrides, words) -> None:
    path = generic_npz(tmp_path / "g.npz", **overrides)
    refused(["data", "info", str(path)], str(path), *words)


def test_npz_with_a_damaged_compressed_member_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "c.npz"
    np.savez_compressed(
        path,
        images=np.arange(4096, dtype=np.uint8).reshape(1, 64, 64),
        factors=np.zeros((1, 1), int),
        factor_names=np.array(["a"]),
        factor_sizes=np.array([1]),
    )
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo("images.npy")
    start = info.header_offset + 30 + len(info.filename) + len(info.extra)
    data[start + 10 : start + 40] = b"\xff" * 30
    path.write_bytes(bytes(data))
    refused(["data", "info", str(path)], str(path))


def test_truncated_pt_files_are_refused(tmp_path: Path) -> None:
    renders = torch.randint(0, 256, (2, 2, 2, 2, 64, 64), dtype=torch.uint8)
    whole = tmp_path / "faces.pt"
    torch.save(renders, whole)
    data = whole.read_bytes()
    for cut in (0, 50, 1000, len(data) // 2, len(data) - 30):
        path = tmp_path / f"cut{cut}.pt"
        path.write_bytes(data[:cut])
        refused(["data", "info", str(path)], str(path))


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"factor_names": "f0,f1"}, "factor_names"),
        ({"factor_names": ["f0"]}, "factor_names"),
        ({"factor_names": [1, 2]}, "factor_names"),
        ({"factor_sizes": ["4", "4"]}, "factor_sizes"),
        ({"factor_values": [["a"], ["b"]]}, "factor_values"),
        ({"config": "not an object"}, "config"),
        ({"config": {"tree": 5}}, "config.tree"),
    ],
)
def test_codes_with_malformed_metadata_are_refused(codes: Path, change: dict, field: str) -> None:
    from isa_core.io import load_bundle, save_bundle

    bundle = load_bundle(codes)
    save_bundle(codes, bundle.tensors, {**bundle.metadata, **change})
    refused(["mig", str(codes), "-q"], str(codes), field)


def test_codes_whose_metadata_is_not_an_object_are_refused(codes: Path) -> None:
    from safetensors.torch import load_file, save_file

    save_file(load_file(codes), codes, metadata={"isa": "[1, 2]"})
    refused(["mig", str(codes), "-q"], str(codes), "JSON object")


# -- 7. narrow posteriors ---------------------------------------------------------------------


def brute_entropy(mu: np.ndarray, sd: np.ndarray) -> float:
    """-int q log q by the trapezoid rule on the union of fine grids around every component."""
    x = np.unique((mu[:, None] + sd[:, None] * np.linspace(-14, 14, 1601)).ravel())
    q = np.zeros_like(x)
    for m, s in zip(mu, sd, strict=True):
        lo, hi = np.searchsorted(x, [m - 40 * s, m + 40 * s])
        q[lo:hi] += st.norm.pdf(x[lo:hi], m, s)
    q /= len(mu)
    f = -q * np.log(np.clip(q, 1e-300, None))
    return float(np.sum(0.5 * (f[1:] + f[:-1]) * np.diff(x)))


def brute_mi(mu: np.ndarray, sd: np.ndarray, v: np.ndarray) -> float:
    conditional = sum((v == c).mean() * brute_entropy(mu[v == c], sd[v == c]) for c in np.unique(v))
    return brute_entropy(mu, sd) - conditional


@pytest.mark.parametrize("logvar", [-24.0, -30.0, -40.0, None])
def test_narrow_posteriors_match_direct_integration(logvar: float | None) -> None:
    rng = np.random.default_rng(5)
    n = 400
    mu = rng.normal(0, 2, n)
    v = rng.integers(0, 4, n)
    logvars = rng.uniform(-40, -24, n) if logvar is None else np.full(n, logvar)
    sd = np.exp(0.5 * logvars)
    mi, resolution = mutual_information(mu[:, None], sd[:, None], v[:, None])
    assert resolution == 3.0
    assert mi[0, 0] == pytest.approx(brute_mi(mu, sd, v), abs=1e-5)


def test_narrow_posteriors_beyond_the_direct_budget_are_widened(monkeypatch) -> None:
    """The documented fallback: finite, flagged by resolution < 3, biased low by overlap."""
    monkeypatch.setattr(metrics, "_DIRECT_BUDGET", 0)
    rng = np.random.default_rng(5)
    mu, v = rng.normal(0, 2, 300), rng.integers(0, 4, 300)
    sd = np.full(300, np.exp(-15.0))
    mi, resolution = mutual_information(mu[:, None], sd[:, None], v[:, None])
    exact = brute_mi(mu, sd, v)
    assert resolution < 0.01
    assert exact - 0.1 < mi[0, 0] <= exact + 1e-6


def test_quadrature_in_value_chunks_equals_one_pass(monkeypatch) -> None:
    rng = np.random.default_rng(4)
    mean, std = rng.normal(0, 1, (3000, 2)), np.exp(rng.uniform(-4, 0, (3000, 2)))
    factors = rng.integers(0, 40, (3000, 2))
    whole, _ = mutual_information(mean, std, factors)
    monkeypatch.setattr(metrics, "_QUADRATURE_BYTES", 1)  # one factor value per chunk
    np.testing.assert_allclose(mutual_information(mean, std, factors)[0], whole, atol=1e-12)


def test_means_far_from_zero_keep_their_precision(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    factors = rng.integers(0, 3, (300, 1))
    mean = np.full((300, 2), 1e30)
    path = write_codes(tmp_path / "far.safetensors", mean, np.zeros((300, 2)), factors)
    status, out, err = isa(["mig", str(path), "-q"])
    assert status == 0 and json.loads(out)["mig"] == pytest.approx(0, abs=1e-9), err
    shifted = factors + 1e6 + rng.normal(0, 0.1, (300, 1))
    near = mutual_information(shifted - 1e6, np.full((300, 1), 0.1), factors)[0]
    assert mutual_information(shifted, np.full((300, 1), 0.1), factors)[0] == pytest.approx(
        near, abs=1e-6
    )


def test_mig_cli_on_narrow_posteriors(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    factors = rng.integers(0, 5, (500, 1))
    mean = np.concatenate([factors + rng.normal(0, 2, (500, 1)), rng.normal(0, 2, (500, 1))], 1)
    path = write_codes(tmp_path / "narrow.safetensors", mean, np.full((500, 2), -40.0), factors)
    status, out, err = isa(["mig", str(path), "-q"])
    assert status == 0, err
    record = json.loads(out)
    assert 0 <= record["mig"] <= 1 and record["resolution"] == 3.0


# -- 8-10. toy-ica numbering, printed paths, --scale-255 ---------------------------------------


def test_toy_ica_numbers_components_from_zero_in_figure_and_json() -> None:
    from isa_cli.toy import panel_title
    from isa_core.plots import ica_components

    w = np.array([[1.0, 0.0, 0.5], [0.0, 1.0, 0.5]])
    figure = ica_components(np.zeros((4, 2)) + 0.5, w, [("fit", w)])
    labels = [text.get_text() for text in figure.axes[0].texts]
    assert labels == ["0", "1", "2"]
    assert panel_title(1.0, 10, [2]).endswith("pruned 2")
    _, out, _ = isa(["toy-ica", "--help"])
    assert "numbered from 0" in " ".join(out.decode().split())


def test_commands_that_write_a_file_print_its_path(tmp_path: Path) -> None:
    for args, name in (
        (["prior-sample", "-n", "3"], "z.npy"),
        (["prior-logpdf", "--tree", "2(2)"], "logp.npy"),
        (["data", "render", "dsprites-mini", "--index", "0,1"], "images.npy"),
    ):
        target = tmp_path / name
        stdin = npy(np.zeros((2, 2))) if args[0] == "prior-logpdf" else b""
        status, out, err = isa([*args, "-o", str(target)], stdin)
        assert status == 0, err
        assert out.decode() == f"{target.resolve()}\n" and target.exists()
    status, out, _ = isa(["prior-sample", "-n", "3"])  # without -o, stdout stays NPY
    assert status == 0 and np.load(io.BytesIO(out)).shape == (3, 20)


def test_render_scale_255(tmp_path: Path) -> None:
    _, plain, _ = isa(["data", "render", "dsprites-mini", "--index", "0,7"])
    _, scaled, _ = isa(["data", "render", "dsprites-mini", "--index", "0,7", "--scale-255"])
    plain, scaled = np.load(io.BytesIO(plain)), np.load(io.BytesIO(scaled))
    assert set(np.unique(plain)) == {0, 1} and set(np.unique(scaled)) == {0, 255}
    np.testing.assert_array_equal(scaled, plain * 255)
    assert scaled.dtype == np.uint8
    _, help_text, _ = isa(["data", "render", "--help"])
    text = " ".join(help_text.decode().split())
    assert "--scale-255" in text and "0/1" in text


def test_open_dataset_refuses_nul_directly() -> None:
    with pytest.raises(IsaError, match="NUL"):
        open_dataset("x\0y")


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("tiny") / "run"
    args = ["train", "--data", "dsprites-mini", "--steps", "1", "--batch-size", "8"]
    status, out, err = isa([*args, "--layout", "1x2", "--device", "cpu", "-q", "-o", str(folder)])
    assert status == 0, err
    return Path(out.decode().strip())


@pytest.mark.parametrize(
    ("tensor", "value"),
    [("prior.scale", -1.0), ("prior.scale", float("nan")), ("prior.p0", 0.0)],
)
def test_a_model_with_a_damaged_prior_is_refused(tiny_model, tmp_path, tensor, value) -> None:
    from isa_core.io import load_bundle, save_bundle

    bundle = load_bundle(tiny_model)
    assert tensor in bundle.tensors
    damaged = tmp_path / "model.safetensors"
    save_bundle(
        damaged,
        {**bundle.tensors, tensor: torch.full_like(bundle.tensors[tensor], value)},
        bundle.metadata,
    )
    refused(["prior-sample", "-n", "2", "--model", str(damaged)], str(damaged), "damaged")


def test_traverse_refuses_codes_of_another_model(tiny_model: Path, tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    factors = np.stack(np.meshgrid(*[np.arange(s) for s in (3, 6, 5, 7, 7)], indexing="ij"), -1)
    factors = factors.reshape(-1, 5)
    codes = write_codes(
        tmp_path / "codes.safetensors", rng.normal(size=(4410, 1)), np.zeros((4410, 1)), factors
    )
    png = tmp_path / "t.png"
    refused(["traverse", str(tiny_model), "--codes", str(codes), "-o", str(png), "-q"], "latents")
