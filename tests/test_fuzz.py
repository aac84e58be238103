"""Fuzz every file-reading command of `isa` with random and mutated files (issue 11).

Each example writes one payload (random bytes or text, a valid seed file with bytes flipped,
truncated or spliced, an NPY or safetensors file with a hostile header, a bundle or JSON file
with one value swapped, a pickle or a zip) and runs one command on it through
``isa_cli.main.main`` in a forked copy of this process (so a segfault fails one example, not the
session), by path or on stdin. Every run must exit 0 or 2 without a traceback, and
an exit 2 must print exactly one ``isa ...: error:`` line. The harness and the valid seed files
come from tools/hostile_inputs.py, whose catalogue holds the hand-written hostile cases.
"""

from __future__ import annotations

import importlib
import io
import json
import pickle
import shutil
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
hostile = importlib.import_module("hostile_inputs")

# -- payload strategies --------------------------------------------------------------------

_DESCRS = ["<f8", "<f4", "<f2", ">f8", "<i8", "|u1", "|b1", "<c16", "<U3", "|O", "|V4", "<M8[s]"]
_HUGE = [0, 1, 2, 4, 2**31, 2**32 + 4, 2**40, 2**62, 2**63 - 1, 10**20, -1]
_JSON_LEAVES = st.one_of(
    st.none(),
    st.booleans(),
    st.sampled_from(_HUGE),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.sampled_from(["2(2", "2.1(2(2),2(2))", "1e300(2)", "../../x", "/etc", "conv", "mlp"]),
)
_JSON = st.recursive(
    _JSON_LEAVES,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=8,
)
_TOML_VALUES = [
    "1979-05-27",
    "1979-05-27T07:32:00Z",
    "07:32:00",
    "nan",
    "-inf",
    "9223372036854775807",
    "'../../victim'",
    "'/abs/path'",
    "[]",
    "[[1, 2]]",
    "{a = 1}",
    "[{a = 1}]",
    "true",
    "''",
    "'" + "s" * 300 + "'",
]


def _flip(data: bytes, draw) -> bytes:
    if not data:
        return data
    out = bytearray(data)
    for _ in range(draw(st.integers(1, 4))):
        limit = len(out) if draw(st.booleans()) else min(len(out), 600)  # headers more often
        position = draw(st.integers(0, limit - 1))
        out[position] ^= draw(st.integers(1, 255))
    return bytes(out)


@st.composite
def _byte_mutation(draw, seeds: tuple[bytes, ...]) -> bytes:
    """A seed flipped, truncated, spliced with another seed, or with bytes inserted."""
    seed = draw(st.sampled_from(seeds))
    how = draw(st.sampled_from(["flip", "truncate", "splice", "insert", "as-is"]))
    if how == "flip":
        return _flip(seed, draw)
    if how == "truncate":
        return seed[: draw(st.integers(0, max(len(seed) - 1, 0)))]
    if how == "splice":
        other = draw(st.sampled_from(seeds))
        cut = draw(st.integers(0, len(seed)))
        return seed[:cut] + other[draw(st.integers(0, len(other))) :]
    if how == "insert":
        at = draw(st.integers(0, len(seed)))
        return seed[:at] + draw(st.binary(min_size=1, max_size=32)) + seed[at:]
    return seed


@st.composite
def _npy_header(draw) -> bytes:
    """An NPY file whose header declares a random (often huge or negative) shape and dtype."""
    dims = draw(st.lists(st.sampled_from(_HUGE), max_size=3))
    shape = "(" + "".join(f"{d}, " for d in dims) + ")"
    descr = draw(st.sampled_from(_DESCRS))
    fortran = draw(st.booleans())
    header = f"{{'descr': {descr!r}, 'fortran_order': {fortran}, 'shape': {shape}, }}"
    body = draw(st.binary(max_size=256))
    return hostile.npy_with_header(header, body, draw(st.sampled_from([(1, 0), (2, 0)])))


@st.composite
def _safetensors_header(draw, seeds: tuple[bytes, ...]) -> bytes:
    """A seed safetensors file with its JSON header damaged: bad JSON, offsets, dtypes, shapes,
    metadata, or a header length of any value mod 256."""
    seed = draw(st.sampled_from(seeds))
    length = int.from_bytes(seed[:8], "little")
    try:
        header = json.loads(seed[8 : 8 + length])
    except ValueError:
        return seed
    if not isinstance(header, dict):
        return seed
    body = seed[8 + length :]
    how = draw(st.sampled_from(["raw", "tensor", "metadata", "length", "pad"]))
    if how == "raw":
        return hostile.safetensors_bytes(None, body, draw(st.binary(max_size=64)))
    if how == "length":
        return (
            draw(st.sampled_from([0, 1, 7, 2**63, length + 1, length - 1])).to_bytes(
                8, "little", signed=False
            )
            + seed[8:]
        )
    if how == "pad":
        text = json.dumps(header).encode()
        extra = draw(st.integers(0, 300))
        return hostile.safetensors_bytes(None, body, text + b" " * extra)
    names = [k for k in header if k != "__metadata__"]
    if how == "tensor" and names:
        name = draw(st.sampled_from(names))
        entry = dict(header[name])
        key = draw(st.sampled_from(["dtype", "shape", "data_offsets"]))
        entry[key] = draw(
            _JSON | st.lists(st.sampled_from(_HUGE), max_size=3) | st.sampled_from(["F64", "Q9"])
        )
        header[name] = entry
    else:
        header["__metadata__"] = draw(_JSON | st.builds(lambda v: {"isa": json.dumps(v)}, _JSON))
    return hostile.safetensors_bytes(header, body)


def _set_path(document: object, path: list, value: object) -> object:
    """``document`` with the value at ``path`` (keys/indices) replaced."""
    if not path:
        return value
    if isinstance(document, dict) and path[0] in document:
        return {**document, path[0]: _set_path(document[path[0]], path[1:], value)}
    if isinstance(document, list) and isinstance(path[0], int) and path[0] < len(document):
        copy = list(document)
        copy[path[0]] = _set_path(document[path[0]], path[1:], value)
        return copy
    return document


def _paths(document: object, prefix: list | None = None) -> list[list]:
    """Every key/index path into a JSON document (depth-first)."""
    prefix = prefix or []
    found = [prefix]
    if isinstance(document, dict):
        for key, value in document.items():
            found += _paths(value, [*prefix, key])
    elif isinstance(document, list):
        for index, value in enumerate(document[:4]):
            found += _paths(value, [*prefix, index])
    return found


@st.composite
def _json_edit(draw, document: object) -> object:
    """``document`` with one value (anywhere in it) replaced by random JSON."""
    path = draw(st.sampled_from(_paths(document)))
    return _set_path(document, path, draw(_JSON))


@st.composite
def _bundle_edit(draw, bundles: tuple[tuple[dict, object], ...]) -> bytes:
    """A valid safetensors bundle whose ``isa`` metadata has one value replaced, or whose
    tensors lose an entry or change shape and dtype."""
    from safetensors.torch import save

    tensors, metadata = draw(st.sampled_from(bundles))
    tensors = dict(tensors)
    if draw(st.booleans()):
        metadata = draw(_json_edit(metadata))
    else:
        name = draw(st.sampled_from(sorted(tensors)))
        how = draw(st.sampled_from(["drop", "empty", "row", "nan", "int", "big"]))
        t = tensors[name]
        if how == "drop":
            del tensors[name]
        elif how == "empty":
            tensors[name] = t[:0] if t.ndim else t.reshape(1)[:0]
        elif how == "row":
            tensors[name] = t[:1] if t.ndim else t.reshape(1)
        elif how == "nan":
            tensors[name] = torch.full_like(t, float("nan")) if t.is_floating_point() else -t - 1
        elif how == "int":
            tensors[name] = t.to(torch.int64) if t.is_floating_point() else t.double()
        else:
            tensors[name] = t * 1e30 if t.is_floating_point() else t.to(torch.int64) + 10**12
    return save(tensors, metadata={"isa": json.dumps(metadata)})


@st.composite
def _jsonl_edit(draw, texts: tuple[str, ...]) -> bytes:
    """JSON lines (results, metrics, sweep.json) with one value replaced or a line damaged."""
    lines = draw(st.sampled_from(texts)).splitlines()
    rows = [json.loads(line) for line in lines if line.strip()]
    how = draw(st.sampled_from(["value", "row", "drop", "garbage"]))
    if how == "value" or not rows:
        rows = draw(_json_edit(rows))
    elif how == "row":
        rows[draw(st.integers(0, len(rows) - 1))] = draw(_JSON)
    elif how == "drop":
        del rows[draw(st.integers(0, len(rows) - 1))]
    if isinstance(rows, list):
        text = "".join(json.dumps(row) + "\n" for row in rows)
    else:
        text = json.dumps(rows) + "\n"
    if how == "garbage":
        text += draw(st.text(max_size=40)) + "\n"
    return text.encode("utf-8", "surrogatepass")


@st.composite
def _toml_edit(draw, text: str) -> bytes:
    """The sweep spec with a value swapped for a hostile TOML literal or a line damaged."""
    lines = text.splitlines()
    index = draw(st.integers(0, len(lines) - 1))
    how = draw(st.sampled_from(["value", "drop", "duplicate", "garbage"]))
    line = lines[index]
    if how == "value" and "=" in line:
        key = line.split("=")[0]
        lines[index] = f"{key}= {draw(st.sampled_from(_TOML_VALUES))}"
    elif how == "drop":
        del lines[index]
    elif how == "duplicate":
        lines.insert(index, line)
    else:
        lines[index] = draw(st.text(max_size=30))
    return ("\n".join(lines) + "\n").encode("utf-8", "surrogatepass")


_DTYPES = ["float32", "float16", "int8", "uint64", "bool", "complex64", "U3", "datetime64[s]"]


@st.composite
def _npz_edit(draw, archives: tuple[dict[str, np.ndarray], ...]) -> bytes:
    """A data .npz (generic or dSprites format) with one entry dropped, replaced by random
    JSON, cast to another dtype, reshaped or emptied, or a factor_values entry added."""
    entries = dict(draw(st.sampled_from(archives)))
    name = draw(st.sampled_from([*sorted(entries), "factor_values_a"]))
    how = draw(st.sampled_from(["drop", "json", "dtype", "reshape", "empty"]))
    value = entries.get(name, np.arange(2.0))
    if how == "drop":
        entries.pop(name, None)
        return _npz(entries)
    if how == "json":
        raw = draw(_JSON)
        try:
            value = np.array(raw)
        except (ValueError, OverflowError):
            value = np.array([str(raw)])
    elif how == "dtype":
        try:
            value = value.astype(draw(st.sampled_from(_DTYPES)))
        except (ValueError, TypeError, OverflowError):
            value = value.astype(str)
    elif how == "reshape":
        value = draw(st.sampled_from([value.reshape(-1), value[None], value[..., None]]))
    else:
        value = value[:0]
    entries[name] = value
    return _npz(entries)


def _npz(entries: dict[str, np.ndarray]) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **entries)  # an object array is pickled here; the loader must refuse it
    return buffer.getvalue()


def _pickle_of(value: object, protocol: int) -> bytes:
    return pickle.dumps(value, protocol=protocol)


_GENERIC = st.one_of(
    st.binary(max_size=300),
    st.text(max_size=120).map(lambda t: t.encode("utf-8", "surrogatepass")),
    st.builds(_pickle_of, _JSON, st.integers(0, 5)),
    st.builds(
        lambda name, data: hostile.zip_bytes({name: data}),
        st.sampled_from(["arr_0.npy", "images.npy", "data.pkl", "x"]),
        st.binary(max_size=64),
    ),
    _npy_header(),
)


# -- targets: a command and how it receives the payload ------------------------------------


@dataclass(frozen=True)
class Target:
    """A command under fuzz: how it gets the payload, which seeds to mutate, how many runs."""

    name: str
    examples: int
    payloads: Callable[[dict], st.SearchStrategy]  # seed material -> payload strategy
    run: Callable[[object, Path, bytes, str], tuple[list[str], bytes]]  # argv and stdin
    suffixes: tuple[str, ...] = (".npy",)
    modes: tuple[str, ...] = ("path",)  # path, stdin-bytes, stdin-path


class Payload(bytes):
    """File bytes that print short, so a failing example of a 15 MB file stays readable."""

    def __repr__(self) -> str:
        return f"Payload({len(self)} bytes, starting {bytes(self[:64])!r})"

    def _repr_pretty_(self, printer, cycle: bool) -> None:  # hypothesis's printer uses this
        printer.text(repr(self))


def _weighted(*options: tuple[int, st.SearchStrategy]) -> st.SearchStrategy:
    """One of ``options`` picked by weight (st.one_of weighs every nested branch alike, so the
    five generic payloads would crowd out the structure-aware ones)."""
    pool = [strategy for weight, strategy in options for _ in range(weight)]
    return st.sampled_from(pool).flatmap(lambda strategy: strategy).map(Payload)


def _npy(kind: str):
    return lambda m: _weighted(
        (1, _GENERIC), (2, _byte_mutation(m["bytes"][kind])), (2, _npy_header())
    )


def _bundle(kind: str):
    return lambda m: _weighted(
        (1, _GENERIC),
        (2, _byte_mutation(m["bytes"][kind])),
        (2, _safetensors_header(m["bytes"][kind])),
        (4, _bundle_edit(m["bundles"][kind])),
    )


def _text(kind: str, edit):
    return lambda m: _weighted(
        (1, _GENERIC), (1, _byte_mutation(m["bytes"][kind])), (4, edit(m["text"][kind]))
    )


def _input(path: Path, mode: str, payload: bytes) -> tuple[str, bytes]:
    """The positional input and stdin for ``mode``: the path, the payload, or a path line."""
    if mode == "stdin-bytes":
        return "-", payload
    if mode == "stdin-path":
        return "-", str(path).encode() + b"\n"
    return str(path), b""


def _prior_logpdf(seeds, path, payload, mode):
    source, stdin = _input(path, mode, payload)
    return ["prior-logpdf", source, *hostile.POINT_FLAGS, "--text"], stdin


def _prior_plot(seeds, path, payload, mode):
    source, stdin = _input(path, mode, payload)
    return ["prior-plot", source, "--tree", "2(2)", "-o", str(path.parent / "p.png")], stdin


def _with_model(command: str):
    def build(seeds, path, payload, mode):
        if command == "prior-sample":
            return ["prior-sample", "-n", "3", "--model", str(path)], b""
        return ["prior-logpdf", str(seeds.points), "--model", str(path), "--text"], b""

    return build


def _encode(seeds, path, payload, mode):
    source, stdin = _input(path, mode, payload)
    out = str(path.parent / "codes.safetensors")
    return ["encode", source, *seeds.model_flags, "-o", out], stdin


def _mig(seeds, path, payload, mode):
    source, stdin = _input(path, mode, payload)
    return ["mig", source, "-q", "--data", str(seeds.data), "--device", "cpu"], stdin


def _score(seeds, path, payload, mode):
    # The grid scores and MIG: quick on any input (the point-based scores train classifiers on
    # 10,000 points whatever the input, which the CLI tests cover).
    source, stdin = _input(path, mode, payload)
    argv = ["score", source, "-q", "--metric", "mig,factorvae,betavae", "--data", str(seeds.data)]
    return [*argv, "--device", "cpu"], stdin


def _traverse(which: str):
    def build(seeds, path, payload, mode):
        model, codes = (path, seeds.codes) if which == "model" else (seeds.model, path)
        source, stdin = _input(model, mode, payload)
        png = str(path.parent / "t.png")
        return ["traverse", source, "-o", png, "--codes", str(codes), *seeds.model_flags], stdin

    return build


def _data(*command: str):
    def build(seeds, path, payload, mode):
        extra = {"render": ["--index", "0,1"], "preview": ["-o", str(path.parent / "d.png")]}
        return ["data", *command, str(path), *extra.get(command[-1], [])], b""

    return build


def _results(*command: str):
    def build(seeds, path, payload, mode):
        extra = [] if command == ("select",) else ["-o", str(path.parent / "r.png")]
        return [*command, str(path), *extra], b""

    return build


_SWEEP_FILES = (".json", ".result", ".jsonl", ".safetensors")


def _sweep_folder(command: str):
    def build(seeds, path, payload, mode):
        folder = path.parent / "sweep"
        shutil.copytree(seeds.sweep, folder)
        run = sorted((folder / "runs").iterdir())[0]
        target = {
            ".json": folder / "sweep.json",
            ".result": run / "result.json",
            ".jsonl": run / "metrics.jsonl",
            ".safetensors": run / "model.safetensors",
        }[path.suffix]
        target.write_bytes(payload)
        extra = ["-o", str(path.parent / "rows.jsonl")] if command == "collect" else []
        return ["sweep", command, str(folder), *extra], b""

    return build


def _spec(seeds, path, payload, mode):
    return ["sweep", "run", str(path), "--dry-run", "-o", str(path.parent)], b""


def _resume(seeds, path, payload, mode):
    folder = path.parent / "run"
    shutil.copytree(seeds.run, folder)
    name = {".jsonl": "metrics.jsonl", ".state": "train_state.safetensors"}.get(
        path.suffix, "model.safetensors"
    )
    (folder / name).write_bytes(payload)
    return ["train", "--resume", "-o", str(folder), "--steps", "3", "--device", "cpu", "-q"], b""


def _mixed_bundles(m):
    return _weighted((1, _bundle("model")(m)), (1, _bundle("codes")(m)))


def _data_payloads(m):
    return _weighted(
        (1, _GENERIC), (2, _byte_mutation(m["bytes"]["data"])), (4, _npz_edit(m["npz"]))
    )


def _sweep_payloads(m):
    return _weighted(
        (1, _GENERIC),
        (2, _jsonl_edit(m["text"]["sweep"])),
        (2, _jsonl_edit(m["text"]["result"])),
        (2, _jsonl_edit(m["text"]["metrics"])),
        (1, _bundle("model")(m)),
    )


def _run_payloads(m):
    return _weighted(
        (2, _bundle("model")(m)), (2, _bundle("state")(m)), (1, _jsonl_edit(m["text"]["metrics"]))
    )


_BUNDLE = (".safetensors",)
_STDIN = ("path", "stdin-path", "stdin-bytes")
_RESULTS = _text("results", _jsonl_edit)
TARGETS = [
    Target("prior-logpdf", 40, _npy("npy"), _prior_logpdf, modes=_STDIN),
    Target("prior-plot", 6, _npy("npy2"), _prior_plot, modes=("path", "stdin-bytes")),
    Target("prior-sample --model", 20, _bundle("model"), _with_model("prior-sample"), _BUNDLE),
    Target("prior-logpdf --model", 12, _bundle("model"), _with_model("prior-logpdf"), _BUNDLE),
    Target("encode", 15, _bundle("model"), _encode, _BUNDLE, _STDIN),
    Target("mig", 40, _mixed_bundles, _mig, _BUNDLE, _STDIN),
    Target("score", 10, _mixed_bundles, _score, _BUNDLE, _STDIN),
    Target("traverse model", 6, _bundle("model"), _traverse("model"), _BUNDLE, _STDIN[:2]),
    Target("traverse --codes", 6, _bundle("codes"), _traverse("codes"), _BUNDLE),
    Target("data info", 30, _data_payloads, _data("info"), (".npz", ".pt", ".npy")),
    Target("data render", 20, _data_payloads, _data("render"), (".npz", ".pt")),
    Target("data preview", 5, _data_payloads, _data("preview"), (".npz", ".pt")),
    Target("select", 30, _RESULTS, _results("select"), (".jsonl",)),
    Target("plot scatter", 6, _RESULTS, _results("plot", "scatter"), (".jsonl",)),
    Target("plot mig-dist", 6, _RESULTS, _results("plot", "mig-dist"), (".jsonl",)),
    Target("plot exponents", 6, _RESULTS, _results("plot", "exponents"), (".jsonl",)),
    Target("sweep status", 15, _sweep_payloads, _sweep_folder("status"), _SWEEP_FILES[:3]),
    Target("sweep collect", 15, _sweep_payloads, _sweep_folder("collect"), _SWEEP_FILES),
    Target("sweep run --dry-run", 40, _text("spec", _toml_edit), _spec, (".toml",)),
    Target("train --resume", 10, _run_payloads, _resume, (".safetensors", ".state", ".jsonl")),
]


# -- the test ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def material():
    """The valid seed files (built once through the CLI) and their parsed forms."""
    from isa_core import io as isa_io

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    folder = Path(tempfile.mkdtemp(prefix="isa-fuzz-"))
    try:
        with hostile.memory_cap():
            seeds = hostile.build_seeds(folder / "seeds")
        first_run = sorted((seeds.sweep / "runs").iterdir())[0]
        files = {
            "npy": seeds.points,
            "npy2": seeds.points2,
            "model": seeds.model,
            "codes": seeds.codes,
            "state": seeds.run / "train_state.safetensors",
            "results": seeds.results,
            "spec": seeds.spec,
            "sweep": seeds.sweep / "sweep.json",
            "result": first_run / "result.json",
            "metrics": seeds.run / "metrics.jsonl",
        }
        raw = {name: (path.read_bytes(),) for name, path in files.items()}
        raw["data"] = tuple(p.read_bytes() for p in (seeds.data, seeds.dsprites, seeds.faces))
        text = {name: (files[name].read_text(),) for name in ("results", "result", "metrics")}
        text["sweep"] = (json.dumps(json.loads(files["sweep"].read_text())),)
        text["spec"] = seeds.spec.read_text()
        bundles = {}
        for name in ("model", "codes", "state"):
            bundle = isa_io.load_bundle(files[name])
            bundles[name] = ((dict(bundle.tensors), bundle.metadata),)
        archives = []
        for path in (seeds.data, seeds.dsprites):
            with np.load(path, allow_pickle=False) as npz:
                archives.append({key: npz[key] for key in npz.files})
        yield {
            "seeds": seeds,
            "bytes": raw,
            "text": text,
            "bundles": bundles,
            "npz": tuple(archives),
        }
    finally:
        torch.set_num_threads(threads)
        shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.parametrize("target", TARGETS, ids=lambda t: t.name)
def test_every_input_exits_0_or_2_with_one_line(material, target: Target) -> None:
    seeds = material["seeds"]
    payloads = target.payloads(material)

    @settings(
        max_examples=target.examples,
        derandomize=True,
        database=None,
        deadline=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(
        payload=payloads,
        suffix=st.sampled_from(target.suffixes),
        mode=st.sampled_from(target.modes),
    )
    def check(payload: bytes, suffix: str, mode: str) -> None:
        with tempfile.TemporaryDirectory(dir=seeds.folder) as scratch:
            path = Path(scratch) / f"input{suffix}"
            path.write_bytes(payload)
            argv, stdin = target.run(seeds, path, payload, mode)
            outcome = hostile.run_isolated(argv, stdin, timeout=600)  # a hang guard only
        problems = hostile.contract_problems(outcome)
        assert not problems, (
            f"isa {' '.join(argv)} (mode {mode}, {payload!r}): "
            f"{'; '.join(problems)}\nstderr: {outcome.stderr[-2000:]}"
        )

    check()
