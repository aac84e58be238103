"""Hostile inputs for every file-reading command of `isa`, run through the real entry point.

``python tools/hostile_inputs.py [--out report.json]`` builds tiny valid files (a model trained
for two steps, its codes, a sweep folder, results), runs a catalogue of hand-written bad inputs
through ``isa_cli.main.main``, each in a forked copy of this process (so a segfault or a hang
is one finding, not the end of the run), and prints a tally and every case that broke the
error contract: exit 0 or 2 only, no traceback, and an exit 2 says one ``isa ...: error:`` line.

The harness (``run_isolated``, ``contract_problems``, ``build_seeds``) is shared with
``tests/test_fuzz.py``, which feeds random and mutated files to the same commands.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import pickle
import re
import resource
import select
import shutil
import signal
import sys
import tempfile
import time
import traceback
import warnings
import zipfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

__all__ = [
    "Case",
    "Outcome",
    "Seeds",
    "build_seeds",
    "catalogue",
    "contract_problems",
    "memory_cap",
    "run_isa",
    "run_isolated",
]

_WARNING_LINE = re.compile(r"^isa( [\w -]+)?: warning: ")
_ERROR_LINE = re.compile(r"^isa( [\w -]+)?: error: ")
SENTINEL = "CODE-RAN-FROM-A-FILE"


# -- the harness ---------------------------------------------------------------------------


class CaseTimeout(BaseException):
    """Raised by the per-case alarm; a BaseException so the CLI's handlers do not catch it."""


@dataclass(frozen=True)
class Outcome:
    """What one in-process run of `isa` did: exit status, output, and any escaped exception."""

    argv: tuple[str, ...]
    code: int | None
    stdout: bytes
    stderr: str
    escaped: str = ""  # "Type: message" of an exception that left main(), if any
    where: str = ""  # innermost isa_core/isa_cli frame of that exception
    seconds: float = 0.0


def _exit_status(code: object) -> int:
    if code is None:
        return 0
    return code if isinstance(code, int) else 1


@contextlib.contextmanager
def _deadline(seconds: float | None) -> Iterator[None]:
    """Raise CaseTimeout after ``seconds`` (main thread only; a no-op elsewhere)."""
    import threading

    if not seconds or threading.current_thread() is not threading.main_thread():
        yield
        return

    def expire(_number: int, _frame: object) -> None:
        raise CaseTimeout(f"no answer within {seconds:g} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


_BUILT: dict[int, tuple[object, object]] = {}  # id(typer app) -> (app, its click command)


@contextlib.contextmanager
def _cached_click_command() -> Iterator[None]:
    """Build the click command of the typer app once per process instead of on every call, as
    the CLI does (speed only: parsing and every command body run unchanged)."""
    import typer.main

    original = typer.main.get_command

    def cached(typer_instance):  # the signature of typer.main.get_command
        entry = _BUILT.get(id(typer_instance))
        if entry is None or entry[0] is not typer_instance:
            entry = (typer_instance, original(typer_instance))
            _BUILT[id(typer_instance)] = entry
        return entry[1]

    typer.main.get_command = cached
    try:
        yield
    finally:
        typer.main.get_command = original


def _innermost_isa_frame(error: BaseException) -> str:
    frames = traceback.extract_tb(error.__traceback__)
    for frame in reversed(frames):
        if "/isa_core/" in frame.filename or "/isa_cli/" in frame.filename:
            path = frame.filename[frame.filename.rindex("/isa_c") + 1 :]
            return f"{path}:{frame.lineno} ({frame.name})"
    return ""


def run_isa(
    argv: Sequence[str], stdin: bytes = b"", timeout: float | None = None, debug: bool = False
) -> Outcome:
    """Run ``isa ARGV`` in this process with ``stdin`` bytes; capture exit status and output.

    The standard streams are text wrappers over byte buffers, so the CLI's binary readers and
    writers (``.buffer``) work as with a pipe. ``debug`` sets ISA_DEBUG=1 so that an internal
    error leaves main() and its innermost isa frame is recorded.
    """
    from isa_cli.main import main

    out, err = io.BytesIO(), io.BytesIO()
    streams = (
        io.TextIOWrapper(io.BytesIO(stdin), encoding="utf-8"),
        io.TextIOWrapper(out, encoding="utf-8", write_through=True),
        io.TextIOWrapper(err, encoding="utf-8", errors="backslashreplace", write_through=True),
    )
    saved = (sys.stdin, sys.stdout, sys.stderr, warnings.showwarning)
    saved_debug = os.environ.pop("ISA_DEBUG", None)
    if debug:
        os.environ["ISA_DEBUG"] = "1"
    code: int | None = None
    escaped = where = ""
    start = time.perf_counter()
    sys.stdin, sys.stdout, sys.stderr = streams
    try:
        with _cached_click_command(), _deadline(timeout):
            main(list(argv))
    except SystemExit as done:
        code = _exit_status(done.code)
    except BaseException as error:  # anything that leaves main() is the finding
        escaped = f"{type(error).__name__}: {error}"[:500]
        where = _innermost_isa_frame(error)
    finally:
        for stream in streams[1:]:
            with contextlib.suppress(ValueError):
                stream.flush()
        sys.stdin, sys.stdout, sys.stderr, warnings.showwarning = saved
        os.environ.pop("ISA_DEBUG", None)
        if saved_debug is not None:
            os.environ["ISA_DEBUG"] = saved_debug
    seconds = time.perf_counter() - start
    text = err.getvalue().decode("utf-8", "backslashreplace")
    return Outcome(tuple(argv), code, out.getvalue(), text, escaped, where, seconds)


def run_isolated(
    argv: Sequence[str], stdin: bytes = b"", timeout: float = 60.0, debug: bool = False
) -> Outcome:
    """:func:`run_isa` in a forked copy of this process, with its address space capped.

    A crash (a segfault, an out-of-memory kill, a hang past ``timeout``) then becomes the
    outcome instead of taking the caller down, and no global state leaks between runs.
    """
    from isa_cli.app import app
    from isa_cli.main import main  # noqa: F401  (registers every command before the fork)

    with _cached_click_command():
        import typer.main

        typer.main.get_command(app)  # built once here, inherited by every forked child
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: run, send the outcome back, and leave without cleanup
        try:
            os.close(read_end)
            with memory_cap():
                outcome = run_isa(argv, stdin, timeout=timeout, debug=debug)
            with os.fdopen(write_end, "wb") as pipe:
                pipe.write(pickle.dumps(outcome))
        finally:
            os._exit(0)
    os.close(write_end)
    chunks, killed = [], False
    deadline = time.monotonic() + timeout + 30
    with os.fdopen(read_end, "rb", buffering=0) as pipe:
        while True:
            ready, _, _ = select.select([pipe], [], [], max(deadline - time.monotonic(), 0))
            if not ready:
                os.kill(pid, signal.SIGKILL)
                killed = True
                break
            chunk = pipe.read(1 << 16)
            if not chunk:
                break
            chunks.append(chunk)
    _, status = os.waitpid(pid, 0)
    if chunks and not killed and os.WIFEXITED(status):
        return pickle.loads(b"".join(chunks))
    if os.WIFSIGNALED(status):
        name = signal.Signals(os.WTERMSIG(status)).name
        why = "hung, killed" if killed else f"the process died of {name}"
        return Outcome(tuple(argv), 128 + os.WTERMSIG(status), b"", "", why)
    return Outcome(tuple(argv), None, b"", "", "the process sent back no outcome")


def error_lines(stderr: str) -> list[str]:
    """The lines of stderr that are not one-line warnings."""
    return [line for line in stderr.splitlines() if not _WARNING_LINE.match(line)]


def contract_problems(outcome: Outcome) -> list[str]:
    """How ``outcome`` breaks the error contract (empty when it keeps it). One-line warnings
    (``isa CMD: warning: ...``) may precede the error line."""
    problems = []
    if outcome.escaped:
        problems.append(f"no exit status: {outcome.escaped}")
    elif outcome.code not in (0, 2):
        problems.append(f"exit status {outcome.code}")
    if "Traceback" in outcome.stderr:
        problems.append("traceback on stderr")
    if "internal error" in outcome.stderr:
        problems.append("'internal error' on stderr")
    if outcome.code == 2:
        lines = error_lines(outcome.stderr)
        if len(lines) != 1 or not _ERROR_LINE.match(lines[0]):
            problems.append(f"exit 2 without exactly one 'isa ...: error:' line ({len(lines)})")
    return problems


@contextlib.contextmanager
def memory_cap(extra_bytes: int = 4 << 30) -> Iterator[None]:
    """Cap this process's address space at its current size plus ``extra_bytes``, so that a
    huge allocation fails at once (MemoryError) instead of swapping a shared machine."""
    try:
        status = Path("/proc/self/status").read_text()
        size = int(re.search(r"VmSize:\s+(\d+) kB", status).group(1)) * 1024
    except (OSError, AttributeError):
        yield
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    cap = size + extra_bytes
    if hard != resource.RLIM_INFINITY:
        cap = min(cap, hard)
    resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


# -- valid seed files ----------------------------------------------------------------------


@dataclass(frozen=True)
class Seeds:
    """Small valid files of every kind the CLI reads, built once through the CLI itself."""

    folder: Path
    run: Path  # a run folder: model.safetensors, train_state.safetensors, metrics.jsonl
    model: Path  # conv ISA 2x2 prior with learned exponents, trained 2 steps on dsprites-mini
    data: Path  # generic .npz: six binary 64x64 images, factors a (2) x b (3)
    codes: Path  # the model's codes on ``data``
    points: Path  # (6, 4) float64 NPY drawn from the prior of POINT_FLAGS
    points2: Path  # (6, 2) float64 NPY for the 2-D prior '2(2)'
    faces: Path  # 3D Faces-like .pt tensor (1, 1, 1, 2, 64, 64) uint8
    dsprites: Path  # dSprites-format .npz with a 1x1x1x2x2 grid
    sweep: Path  # a finished sweep folder (sweep.json, runs/*) assembled from the files above
    results: Path  # its `isa sweep collect` rows
    spec: Path  # a valid sweep spec (TOML)

    @property
    def model_flags(self) -> list[str]:
        """Flags that point `encode`/`traverse`/`train --data` at the tiny data set."""
        return ["--data", str(self.data), "--device", "cpu", "-q"]


POINT_FLAGS = ["--layout", "2x2"]
SPEC_TEXT = """\
[sweep]
name = "fuzz"
data = "dsprites-mini"

[base]
steps = 2
batch_size = 16
arch = "conv"

[methods.isa-vae]
prior = "isa"
layout = "2x2"

[methods.beta-vae]
prior = "normal"
latent_dim = 4

[grid]
method = ["isa-vae", "beta-vae"]
beta = [1.0, 2.0]
seed = [0]

[eval]
estimator = "histogram"
"""


def _checked(argv: Sequence[str], stdin: bytes = b"") -> Outcome:
    outcome = run_isa(argv, stdin)
    if outcome.code != 0:
        raise RuntimeError(f"seed command failed: isa {' '.join(argv)}\n{outcome.stderr}")
    return outcome


def _write_tiny_data(path: Path) -> None:
    rng = np.random.default_rng(0)
    factors = np.array([[a, b] for a in range(2) for b in range(3)], dtype=np.int64)
    images = (rng.random((6, 64, 64)) < 0.3).astype(np.uint8)
    np.savez(
        path,
        images=images,
        factors=factors,
        factor_names=np.array(["a", "b"]),
        factor_sizes=np.array([2, 3]),
    )


def _write_tiny_dsprites(path: Path) -> None:
    classes = np.array([[0, 0, 0, 0, x, y] for x in range(2) for y in range(2)], dtype=np.int64)
    values = classes.astype(np.float64) / 2
    imgs = np.zeros((4, 64, 64), dtype=np.uint8)
    imgs[:, 20:30, 20:30] = 1
    np.savez(path, imgs=imgs, latents_classes=classes, latents_values=values)


def _assemble_sweep(folder: Path, seeds_run: Path, codes: Path) -> None:
    """A finished sweep folder with three runs that share one model, as `sweep run` lays out."""
    mig = json.loads(_checked(["mig", str(codes), "-q"]).stdout)
    runs = []
    for method, beta in (("isa-vae", 1.0), ("isa-vae", 2.0), ("beta-vae", 1.0)):
        run_id = f"{method}_beta{beta:g}"
        grid = {"method": method, "beta": beta}
        runs.append({"id": run_id, "method": method, "grid": grid, "flags": {"beta": beta}})
        target = folder / "runs" / run_id
        target.mkdir(parents=True)
        for name in ("model.safetensors", "metrics.jsonl"):
            shutil.copy(seeds_run / name, target / name)
        shutil.copy(codes, target / "codes.safetensors")
        result = {**mig, "id": run_id, "method": method, "grid": grid, "seconds": 1.0}
        (target / "result.json").write_text(json.dumps(result))
    (folder / "sweep.json").write_text(json.dumps({"name": "fuzz", "runs": runs}))


def build_seeds(folder: Path) -> Seeds:
    """Make every seed file under ``folder`` through the CLI (a few seconds on one core)."""
    import torch

    folder.mkdir(parents=True, exist_ok=True)
    data, run, codes = folder / "tiny.npz", folder / "run", folder / "codes.safetensors"
    _write_tiny_data(data)
    train = ["train", "--data", "dsprites-mini", "--steps", "2", "--batch-size", "16"]
    train += ["--arch", "conv", "--layout", "2x2", "--learn-exponents", "--checkpoint-every", "1"]
    _checked([*train, "--log-every", "1", "--seed", "0", "--device", "cpu", "-q", "-o", str(run)])
    model = run / "model.safetensors"
    _checked(["encode", str(model), "-o", str(codes), "--data", str(data), "--device", "cpu"])
    points, points2 = folder / "points.npy", folder / "points2.npy"
    _checked(["prior-sample", "-n", "6", *POINT_FLAGS, "--seed", "1", "-o", str(points)])
    _checked(["prior-sample", "-n", "6", "--tree", "2(2)", "--seed", "1", "-o", str(points2)])
    faces = folder / "faces.pt"
    torch.save(torch.zeros((1, 1, 1, 2, 64, 64), dtype=torch.uint8), faces)
    dsprites = folder / "dsprites.npz"
    _write_tiny_dsprites(dsprites)
    sweep = folder / "sweep" / "fuzz"
    _assemble_sweep(sweep, run, codes)
    results = folder / "results.jsonl"
    _checked(["sweep", "collect", str(sweep), "-o", str(results)])
    spec = folder / "spec.toml"
    spec.write_text(SPEC_TEXT)
    return Seeds(
        folder, run, model, data, codes, points, points2, faces, dsprites, sweep, results, spec
    )


# -- hostile file makers -------------------------------------------------------------------


def npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def npy_with_header(header: str, body: bytes = b"", version: tuple[int, int] = (1, 0)) -> bytes:
    """An NPY file with a hand-written header dict text (padded as numpy pads it)."""
    text = header.encode("latin-1")
    size_bytes = 2 if version == (1, 0) else 4
    total = 6 + 2 + size_bytes + len(text) + 1
    padded = text + b" " * ((64 - total % 64) % 64) + b"\n"
    length = len(padded).to_bytes(size_bytes, "little")
    return b"\x93NUMPY" + bytes(version) + length + padded + body


def safetensors_bytes(header: object, body: bytes = b"", raw_header: bytes | None = None) -> bytes:
    """A safetensors file from a header object (or raw header bytes) and a data section."""
    text = raw_header if raw_header is not None else json.dumps(header).encode()
    return len(text).to_bytes(8, "little") + text + body


class _Evil:
    """Pickles to a call that creates the sentinel file: it exists only if a reader unpickles."""

    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self):
        return (os.system, (f"touch '{self.target}'",))


def evil_pickle(target: Path, protocol: int = 4) -> bytes:
    return pickle.dumps(_Evil(target), protocol=protocol)


def zip_bytes(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in members.items():
            archive.writestr(zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0)), data)
    return buffer.getvalue()


def edited_bundle(source: Path, metadata=None, tensors=None) -> bytes:
    """The bytes of bundle ``source`` with its metadata/tensors changed by the callables."""
    from safetensors.torch import save

    from isa_core import io as isa_io

    bundle = isa_io.load_bundle(source)
    meta = json.loads(json.dumps(bundle.metadata))
    new_tensors = dict(bundle.tensors)
    if metadata is not None:
        meta = metadata(meta)  # may be any JSON value, even a list, unlike io.save_bundle
    if tensors is not None:
        new_tensors = tensors(new_tensors)
    contiguous = {name: t.detach().contiguous().cpu() for name, t in new_tensors.items()}
    return save(contiguous, metadata={"isa": json.dumps(meta)})


def save_bundle_with(path: Path, source: Path, metadata=None, tensors=None) -> Path:
    """Write ``source`` re-saved with changed metadata/tensors to ``path``."""
    path.write_bytes(edited_bundle(source, metadata, tensors))
    return path


def padded_bundle(path: Path, source: Path, residue: int = 128) -> Path:
    """``source`` re-saved with its header length = ``residue`` mod 256 (first byte 0x80)."""
    from safetensors.torch import save

    from isa_core import io as isa_io

    bundle = isa_io.load_bundle(source)
    for pad in range(0, 2048, 4):
        metadata = {"isa": json.dumps({**bundle.metadata, "pad": "x" * pad})}
        data = save(dict(bundle.tensors), metadata=metadata)
        if data[0] == residue:
            path.write_bytes(data)
            return path
    raise RuntimeError("could not pad the header to the wanted length")


# -- the catalogue -------------------------------------------------------------------------


@dataclass
class Case:
    """One hostile input: the argv, stdin bytes, the exits allowed, and a likely owner."""

    argv: list[str]
    stdin: bytes = b""
    expect: tuple[int, ...] = (0, 2)
    owner: str = ""
    check: Callable[[Outcome], list[str]] | None = None
    timeout: float = 60.0
    note: str = ""

    @property
    def command_line(self) -> str:
        line = "isa " + " ".join(_quote(a) for a in self.argv)
        if self.stdin:
            shown = self.stdin[:60]
            line += f"  <<< {shown!r}{'...' if len(self.stdin) > 60 else ''}"
        return line


def _quote(arg: str) -> str:
    shown = arg if len(arg) <= 80 else arg[:40] + f"...({len(arg)} chars)..." + arg[-20:]
    return shown if re.fullmatch(r"[\w./=,:+-]+", shown) else repr(shown)


def _finite_npy_output(outcome: Outcome) -> list[str]:
    if outcome.code != 0:
        return []
    try:
        array = np.load(io.BytesIO(outcome.stdout), allow_pickle=False)
    except Exception as error:
        return [f"exit 0 but stdout is not NPY ({error})"]
    if not np.isfinite(array).all():
        return ["exit 0 but the samples hold NaN or inf"]
    return []


def _unchanged(path: Path) -> Callable[[Outcome], list[str]]:
    before = path.read_bytes()

    def check(outcome: Outcome) -> list[str]:
        if outcome.code != 0 and (not path.exists() or path.read_bytes() != before):
            return [f"a failed command changed {path.name}"]
        return []

    return check


class _Files:
    """Writes the hostile files of the catalogue into one scratch folder."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.count = 0

    def put(self, name: str, data: bytes | str) -> str:
        self.count += 1
        path = self.folder / f"{self.count:03d}-{name}"
        path.write_bytes(data.encode() if isinstance(data, str) else data)
        return str(path)

    def dir(self, name: str) -> Path:
        self.count += 1
        path = self.folder / f"{self.count:03d}-{name}"
        path.mkdir()
        return path


def _prior_flag_cases(out: Path) -> list[Case]:
    """Bad prior flags for prior-sample (cheap; prior-logpdf/plot/train share the parser)."""
    owner = "isa_cli/options.py + isa_core/priors"
    deep = "2(" * 2000 + "1" + ")" * 2000
    flags: list[list[str]] = [
        ["-n", "10000000000000"],
        ["-n", "0"],
        ["-n", "-1"],
        ["-n", "1e3"],
        ["-n", "99999999999999999999999"],
        ["-n", "3", "--layout", "100000000000x1"],
        ["-n", "3", "--layout", "1x100000000000"],
        ["-n", "3", "--layout", "0x4"],
        ["-n", "3", "--layout", "x"],
        ["-n", "3", "--layout", ""],
        ["-n", "3", "--layout", "4,,3"],
        ["-n", "3", "--layout", "-1,2"],
        ["-n", "3", "--layout", "1e3x1"],
        ["-n", "3", "--layout", "2x2x2"],
        ["-n", "3", "--layout", "\x00"],
        ["-n", "3", "--p0", "0"],
        ["-n", "3", "--p0", "-1"],
        ["-n", "3", "--p0", "nan"],
        ["-n", "3", "--p0", "inf"],
        ["-n", "3", "--p0", "1e-300"],
        ["-n", "3", "--p0", "1e300"],
        ["-n", "3", "--p1", "nan"],
        ["-n", "3", "--p1", "1e-300"],
        ["-n", "3", "--p1", "1e300"],
        ["-n", "3", "--p1", "2,2,2", "--layout", "2x2"],
        ["-n", "3", "--p1", ""],
        ["-n", "3", "--p1", "a"],
        ["-n", "3", "--scale", "0"],
        ["-n", "3", "--scale", "nan"],
        ["-n", "3", "--scale", "inf"],
        ["-n", "3", "--scale", "-2"],
        ["-n", "3", "--scale", "1e-300"],
        ["-n", "3", "--scale", "1e300"],
        ["-n", "3", "--tree", deep],
        ["-n", "3", "--tree", "1e300(2)"],
        ["-n", "3", "--tree", "1e-300(2)"],
        ["-n", "3", "--tree", "2(1e300(2))"],
        ["-n", "3", "--tree", "0(2)"],
        ["-n", "3", "--tree", "-1(2)"],
        ["-n", "3", "--tree", "nan(2)"],
        ["-n", "3", "--tree", "inf(2)"],
        ["-n", "3", "--tree", "2(0)"],
        ["-n", "3", "--tree", "2()"],
        ["-n", "3", "--tree", "2(1e20)"],
        ["-n", "3", "--tree", "2(100000000000)"],
        ["-n", "3", "--tree", "2(99999999999999999999999999)"],
        ["-n", "3", "--tree", "2(2"],
        ["-n", "3", "--tree", "(2)"],
        ["-n", "3", "--tree", "2(2))"],
        ["-n", "3", "--tree", "2(2,)"],
        ["-n", "3", "--tree", "abc"],
        ["-n", "3", "--tree", ""],
        ["-n", "3", "--tree", "\uff12(2)"],
        ["-n", "3", "--tree", "2(\u0662)"],
        ["-n", "3", "--tree", "2(2)", "--layout", "2x2"],
        ["-n", "3", "--seed", str(2**70)],
        ["-n", "3", "--seed", "-1"],
        ["-n", "3", "--dtype", "float16"],
        ["-n", "3", "--method", "foo"],
        ["-n", "3", "--method", "isa", "--tree", "2(2(2(1)))"],
        ["-n", "3", "--method", "isa", "--tree", "1.5(3)"],
        ["-n", "3", "--model", str(out)],
        ["-n", "3", "--frobnicate"],
    ]
    cases = [
        Case(["prior-sample", *f], owner=owner, check=_finite_npy_output, timeout=30) for f in flags
    ]
    for exponent in ("--p0", "--p1"):
        for value in ("1e-300", "1e300"):
            cases.append(
                Case(
                    ["prior-sample", "-n", "5", exponent, value],
                    expect=(2,),
                    owner="isa_core/priors (sampling)",
                    check=_finite_npy_output,
                    note="issue 11.9: all-NaN samples with exit 0",
                )
            )
    for tree in ("1e-300(2)", "1e300(2)", "2(1e-300(2))"):
        cases.append(
            Case(
                ["prior-sample", "-n", "5", "--tree", tree],
                expect=(2,),
                owner="isa_core/priors (sampling)",
                check=_finite_npy_output,
            )
        )
    return cases


def _npy_cases(seeds: Seeds, files: _Files) -> list[Case]:
    """Damaged and strange NPY arrays for prior-logpdf and prior-plot, by path and on stdin."""
    good = seeds.points.read_bytes()
    header_end = 10 + int.from_bytes(good[8:10], "little")
    owner = "isa_core/io.py (load_npy)"
    arrays: dict[str, bytes] = {}
    for pos in range(0, header_end, 2):
        flipped = bytearray(good)
        flipped[pos] ^= 0x01 if pos % 4 else 0xFF
        arrays[f"flip{pos}"] = bytes(flipped)
    body = good[header_end:]
    for shape in ("(1000000000000, 4)", "(4611686018427387904, 4)", "(2**40, 4)", "(-1, 4)"):
        header = f"{{'descr': '<f8', 'fortran_order': False, 'shape': {shape}, }}"
        arrays[f"shape{shape}"] = npy_with_header(header, body)
    huge_1d = "{'descr': '<f8', 'fortran_order': False, 'shape': (99999999999999999999,), }"
    arrays["shape-overflow"] = npy_with_header(huge_1d, body)
    arrays["shape-2.0"] = npy_with_header(
        "{'descr': '<f8', 'fortran_order': False, 'shape': (6, 4), }", body, (2, 0)
    )
    for descr in (
        "<U4",
        "|O",
        "<c16",
        "|b1",
        "<i8",
        "<f2",
        ">f8",
        "|V8",
        "<M8[s]",
        "[('a', '<f8')]",
    ):
        header = f"{{'descr': {descr!r}, 'fortran_order': False, 'shape': (6, 4), }}"
        if descr.startswith("["):
            header = f"{{'descr': {descr}, 'fortran_order': False, 'shape': (6, 4), }}"
        arrays[f"descr{descr}"] = npy_with_header(header, body + bytes(1000))
    arrays["fortran"] = npy_with_header(
        "{'descr': '<f8', 'fortran_order': True, 'shape': (6, 4), }", body
    )
    arrays["header-not-dict"] = npy_with_header("[1, 2, 3]", body)
    arrays["header-code"] = npy_with_header("__import__('os').system('false')", body)
    arrays["header-huge-len"] = b"\x93NUMPY\x01\x00\xff\xff" + b" " * 100
    arrays["zero-rows"] = npy_bytes(np.zeros((0, 4)))
    arrays["zero-cols"] = npy_bytes(np.zeros((6, 0)))
    arrays["scalar"] = npy_bytes(np.float64(1.0))
    arrays["1d"] = npy_bytes(np.zeros(4))
    arrays["3d"] = npy_bytes(np.zeros((2, 3, 4)))
    arrays["nan"] = npy_bytes(np.full((3, 4), np.nan))
    arrays["inf"] = npy_bytes(np.full((3, 4), np.inf))
    arrays["1e308"] = npy_bytes(np.full((3, 4), 1e308))
    arrays["1e-320"] = npy_bytes(np.full((3, 4), 1e-320))
    arrays["int64-max"] = npy_bytes(np.full((3, 4), np.iinfo(np.int64).max))
    arrays["uint8"] = npy_bytes(np.ones((3, 4), dtype=np.uint8))
    arrays["bool"] = npy_bytes(np.ones((3, 4), dtype=bool))
    arrays["complex"] = npy_bytes(np.ones((3, 4), dtype=complex))
    arrays["float16"] = npy_bytes(np.ones((3, 4), dtype=np.float16))
    arrays["strings"] = npy_bytes(np.array([["a"] * 4] * 3))
    arrays["wrong-cols"] = npy_bytes(np.zeros((3, 5)))
    arrays["truncated"] = good[: len(good) - 7]
    arrays["header-only"] = good[:header_end]
    arrays["magic-only"] = good[:6]
    arrays["empty"] = b""
    arrays["pickle"] = pickle.dumps(np.zeros((3, 4)), protocol=4)
    arrays["pickle-proto0"] = pickle.dumps([1, 2], protocol=0)
    arrays["evil-pickle"] = evil_pickle(seeds.folder / SENTINEL)
    arrays["object-array"] = _object_npy(seeds.folder / SENTINEL)
    arrays["npz"] = zip_bytes({"arr_0.npy": good})
    arrays["torch-save"] = seeds.faces.read_bytes()
    arrays["safetensors"] = seeds.codes.read_bytes()[:4096]
    arrays["text"] = "hello\nworld\n"
    arrays["binary"] = bytes(range(256))
    cases = []
    for name, data in arrays.items():
        data = data.encode() if isinstance(data, str) else data
        path = files.put(f"{name}.npy", data)
        cases.append(Case(["prior-logpdf", path, *POINT_FLAGS], owner=owner))
        if name in ("zero-rows", "nan", "1e308", "wrong-cols", "pickle", "flip0", "flip8"):
            cases.append(Case(["prior-logpdf", *POINT_FLAGS, "--text"], stdin=data, owner=owner))
    two_d = {
        "zero-rows": npy_bytes(np.zeros((0, 2))),
        "nan": npy_bytes(np.full((3, 2), np.nan)),
        "inf": npy_bytes(np.full((3, 2), np.inf)),
        "1e308": npy_bytes(np.full((3, 2), 1e308)),
        "3d": npy_bytes(np.zeros((2, 2, 2))),
        "strings": arrays["strings"],
        "truncated": arrays["truncated"],
    }
    for name, data in two_d.items():
        path = files.put(f"{name}-2d.npy", data)
        png = str(files.folder / f"plot-{name}.png")
        cases.append(Case(["prior-plot", path, "--tree", "2(2)", "-o", png], owner=owner))
    return cases


def _object_npy(target: Path) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.array([_Evil(target)], dtype=object), allow_pickle=True)
    return buffer.getvalue()


def _stdin_cases(seeds: Seeds, files: _Files) -> list[Case]:
    """What arrives on stdin instead of a file: NUL bytes, long paths, folders, binary."""
    owner = "isa_core/io.py (read_source, read_paths)"
    inputs = {
        "nul-path": b"some\x00path.npy\n",
        "nul-only": b"\x00\n",
        "long-path": ("a" * 5000 + ".npy\n").encode(),
        "long-component": ("/tmp/" + "b" * 300 + "/x.npy\n").encode(),
        "folder": (str(seeds.folder) + "\n").encode(),
        "dev-null": b"/dev/null\n",
        "blank": b"\n\n  \n",
        "empty": b"",
        "not-utf8": b"\xff\xfe\xfd\n",
        "utf16-bom": "x.npy\n".encode("utf-16"),
        "pickle": pickle.dumps({"a": 1}, protocol=2),
        "evil-pickle": evil_pickle(seeds.folder / SENTINEL),
        "zip": zip_bytes({"a.npy": b"x"}),
        "codes-bytes": seeds.codes.read_bytes()[:2048],
        "npy-magic-only": b"\x93NUMPY",
        "many-paths": b"\n".join([str(seeds.codes).encode(), b"missing.safetensors"]),
        "model-path": (str(seeds.model) + "\n").encode(),
        "points-bytes": seeds.points.read_bytes(),
    }
    commands = [
        ["prior-logpdf", *POINT_FLAGS],
        ["prior-plot", "-", "--tree", "2(2)", "-o", str(files.folder / "stdin.png")],
        ["encode", *seeds.model_flags, "-o", str(files.folder / "stdin-codes.safetensors")],
        ["mig", "-q"],
        ["traverse", "-o", str(files.folder / "stdin-traverse.png"), *seeds.model_flags],
    ]
    return [Case(c, stdin=data, owner=owner) for data in inputs.values() for c in commands]


def _bundle_variants(seeds: Seeds, files: _Files, source: Path, stem: str) -> dict[str, Path]:
    """Damaged safetensors versions of ``source`` (a model or a codes file)."""
    import torch

    raw = source.read_bytes()
    header_len = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + header_len])
    some = next(k for k in header if k != "__metadata__")
    variants: dict[str, bytes] = {
        "truncated-8": raw[:8],
        "truncated-header": raw[: 8 + header_len // 2],
        "truncated-data": raw[: len(raw) - 100],
        "empty": b"",
        "header-len-huge": (2**63).to_bytes(8, "little") + raw[8:],
        "header-len-zero": bytes(8) + raw[8:],
        "header-not-json": safetensors_bytes(None, raw[8 + header_len :], b"{not json" + b" " * 7),
        "header-list": safetensors_bytes([1, 2], raw[8 + header_len :]),
        "header-metadata-list": safetensors_bytes(
            {**header, "__metadata__": ["x"]}, raw[8 + header_len :]
        ),
        "header-metadata-nonstring": safetensors_bytes(
            {**header, "__metadata__": {"isa": 5}}, raw[8 + header_len :]
        ),
        "offsets-beyond": safetensors_bytes(
            {**header, some: {**header[some], "data_offsets": [0, 10**12]}}, raw[8 + header_len :]
        ),
        "offsets-reversed": safetensors_bytes(
            {**header, some: {**header[some], "data_offsets": [8, 0]}}, raw[8 + header_len :]
        ),
        "dtype-unknown": safetensors_bytes(
            {**header, some: {**header[some], "dtype": "Q9"}}, raw[8 + header_len :]
        ),
        "shape-huge": safetensors_bytes(
            {**header, some: {**header[some], "shape": [2**62, 2**62]}}, raw[8 + header_len :]
        ),
        "pickle": pickle.dumps({"a": torch.zeros(2)}, protocol=2),
        "evil-pickle": evil_pickle(seeds.folder / SENTINEL),
        "torch-save-zip": seeds.faces.read_bytes(),
        "npy": seeds.points.read_bytes(),
        "text": b"just text\n",
    }
    for flip in (0, 3, 7, 8, 9, 20, 8 + header_len - 1, 8 + header_len + 5):
        data = bytearray(raw)
        data[flip] ^= 0xFF
        variants[f"flip{flip}"] = bytes(data)
    paths = {
        name: Path(files.put(f"{stem}-{name}.safetensors", data)) for name, data in variants.items()
    }
    metadata_edits: dict[str, Callable[[dict], object]] = {
        "meta-list": lambda m: [m],
        "meta-null": lambda m: None,
        "meta-string": lambda m: "x",
        "meta-empty": lambda m: {},
    }
    if stem == "model":
        deep = "2(" * 2000 + "1" + ")" * 2000
        config_edits: dict[str, Callable[[dict], object]] = {
            "config-string": lambda c: "x",
            "config-list": lambda c: [c],
            "config-null": lambda c: None,
            "config-tree-number": lambda c: {**c, "tree": 5},
            "config-tree-bad": lambda c: {**c, "tree": "2(2"},
            "config-tree-deep": lambda c: {**c, "tree": deep},
            "config-tree-mismatch": lambda c: {**c, "tree": "2.1(2(3),2(3))"},
            "config-tree-1e300": lambda c: {**c, "tree": "1e300(2(2),2(2))"},
            "config-arch": lambda c: {**c, "arch": "transformer"},
            "config-arch-number": lambda c: {**c, "arch": 1},
            "config-scale-string": lambda c: {**c, "scale": "2"},
            "config-scale-nan": lambda c: {**c, "scale": float("nan")},
            "config-scale-zero": lambda c: {**c, "scale": 0},
            "config-learn-string": lambda c: {**c, "learn_exponents": "yes"},
            "config-data-number": lambda c: {**c, "data": 7},
            "config-data-missing": lambda c: {k: v for k, v in c.items() if k != "data"},
            "config-unknown-key": lambda c: {**c, "bogus": 1},
            "config-steps-string": lambda c: {**c, "steps": "2"},
            "config-beta-nan": lambda c: {**c, "beta": float("nan")},
            "config-batch-zero": lambda c: {**c, "batch_size": 0},
            "config-seed-huge": lambda c: {**c, "seed": 2**70},
            "config-objective": lambda c: {**c, "objective": "gan"},
        }
        for name, edit in config_edits.items():
            metadata_edits[name] = lambda m, edit=edit: {**m, "config": edit(m["config"])}
        for name, shape in {
            "image-shape-int": 64,
            "image-shape-string": "64x64",
            "image-shape-short": [64],
            "image-shape-zero": [0, 0, 1],
            "image-shape-negative": [-1, 64, 64],
            "image-shape-huge": [10**9, 10**9, 1],
            "image-shape-strings": ["a", "b", "c"],
            "image-shape-float": [1.5, 64, 64],
            "image-shape-null": None,
        }.items():
            metadata_edits[name] = lambda m, shape=shape: {**m, "image_shape": shape}
    else:
        codes_edits: dict[str, Callable[[dict], object]] = {
            "names-string": lambda m: {**m, "factor_names": "ab"},
            "names-numbers": lambda m: {**m, "factor_names": [1, 2]},
            "names-short": lambda m: {**m, "factor_names": ["a"]},
            "names-long": lambda m: {**m, "factor_names": ["a", "b", "c"]},
            "names-null": lambda m: {**m, "factor_names": None},
            "values-string": lambda m: {**m, "factor_values": "x"},
            "values-ragged": lambda m: {**m, "factor_values": [[0.0], [1.0, 2.0]]},
            "sizes-string": lambda m: {**m, "factor_sizes": ["2", "3"]},
            "config-string": lambda m: {**m, "config": "x"},
            "config-tree-deep": lambda m: {**m, "config": {"tree": "2(" * 2000 + "1" + ")" * 2000}},
            "kind-model": lambda m: {**m, "kind": "model"},
        }
        metadata_edits.update(codes_edits)
    for name, edit in metadata_edits.items():
        paths[name] = save_bundle_with(
            files.folder / f"{stem}-{name}.safetensors", source, metadata=edit
        )
    paths["header-128-mod-256"] = padded_bundle(
        files.folder / f"{stem}-padded128.safetensors", source
    )
    return paths


def _codes_tensor_variants(seeds: Seeds, files: _Files) -> dict[str, Path]:
    """Codes files with odd tensors: 0 rows, NaN, narrow posteriors, bad factors."""
    import torch

    def with_tensors(name: str, edit: Callable[[dict], dict]) -> tuple[str, Path]:
        path = files.folder / f"codes-{name}.safetensors"
        return name, save_bundle_with(path, seeds.codes, tensors=edit)

    def rows(n: int) -> Callable[[dict], dict]:
        return lambda t: {k: v[:n] for k, v in t.items()}

    def spread(logvar: float) -> Callable[[dict], dict]:
        def edit(t: dict) -> dict:
            # Item 8: narrow posteriors with means spread over N(0, 2) (repeated to 600 rows).
            factors = t["factors"].repeat(100, 1)
            generator = torch.Generator().manual_seed(0)
            mean = torch.randn(len(factors), t["mean"].shape[1], generator=generator) * 2
            return {
                "mean": mean,
                "logvar": torch.full_like(mean, logvar),
                "factors": factors,
                "logpx": t["logpx"].repeat(100),
            }

        return edit

    edits: dict[str, Callable[[dict], dict]] = {
        "zero-rows": rows(0),
        "one-row": rows(1),
        "no-mean": lambda t: {k: v for k, v in t.items() if k != "mean"},
        "no-factors": lambda t: {k: v for k, v in t.items() if k != "factors"},
        "nan-mean": lambda t: {**t, "mean": torch.full_like(t["mean"], float("nan"))},
        "inf-logvar": lambda t: {**t, "logvar": torch.full_like(t["logvar"], float("inf"))},
        "logvar-1000": lambda t: {**t, "logvar": torch.full_like(t["logvar"], 1000.0)},
        "logvar-minus-1000": lambda t: {**t, "logvar": torch.full_like(t["logvar"], -1000.0)},
        "narrow-24": spread(-24.0),
        "narrow-30": spread(-30.0),
        "mean-1e30": lambda t: {**t, "mean": torch.full_like(t["mean"], 1e30)},
        "mean-int": lambda t: {**t, "mean": torch.ones(t["mean"].shape, dtype=torch.int64)},
        "mean-3d": lambda t: {**t, "mean": t["mean"][None]},
        "mean-1col": lambda t: {**t, "mean": t["mean"][:, :1], "logvar": t["logvar"][:, :1]},
        "factors-float": lambda t: {**t, "factors": t["factors"].double()},
        "factors-negative": lambda t: {**t, "factors": -t["factors"] - 1},
        "factors-huge": lambda t: {**t, "factors": t["factors"] + 10**12},
        "factors-1d": lambda t: {**t, "factors": t["factors"][:, 0]},
        "factors-extra-col": lambda t: {**t, "factors": torch.cat([t["factors"]] * 2, 1)},
        "factors-constant": lambda t: {**t, "factors": torch.zeros_like(t["factors"])},
        "logpx-2d": lambda t: {**t, "logpx": t["logpx"][:, None]},
        "logpx-short": lambda t: {**t, "logpx": t["logpx"][:1]},
        "logpx-nan": lambda t: {**t, "logpx": torch.full_like(t["logpx"], float("nan"))},
    }
    return dict(with_tensors(name, edit) for name, edit in edits.items())


def _model_tensor_variants(seeds: Seeds, files: _Files) -> dict[str, Path]:
    """Models whose prior or network tensors hold NaN, negative or huge values."""
    import torch

    def full(name: str, value: float) -> Callable[[dict], dict]:
        return lambda t: {**t, name: torch.full_like(t[name], value)}

    edits = {
        "tensor-scale-nan": full("prior.scale", float("nan")),
        "tensor-scale-negative": full("prior.scale", -1.0),
        "tensor-p0-nan": full("prior.p0", float("nan")),
        "tensor-p0-zero": full("prior.p0", 0.0),
        "tensor-exponents-nan": full("prior.exponents_unconstrained", float("nan")),
        "tensor-exponents-1e30": full("prior.exponents_unconstrained", 1e30),
        "tensor-exponents-minus-1e30": full("prior.exponents_unconstrained", -1e30),
        "tensor-weights-nan": full("encoder.net.0.weight", float("nan")),
        "tensor-weights-1e38": full("decoder.net.0.weight", 1e38),
    }
    return {
        name: save_bundle_with(files.folder / f"model-{name}.safetensors", seeds.model, None, edit)
        for name, edit in edits.items()
    }


def _model_cases(seeds: Seeds, files: _Files) -> list[Case]:
    """Damaged model files for every command that loads a model."""
    cases = []
    variants = {
        **_bundle_variants(seeds, files, seeds.model, "model"),
        **_model_tensor_variants(seeds, files),
    }
    for name, path in variants.items():
        expect = (0,) if name == "header-128-mod-256" else (0, 2)
        owner = "isa_core/io.py (load_bundle)" if "meta" not in name else "isa_core/checkpoint.py"
        if name.startswith(("config", "image-shape", "tensor")):
            owner = "isa_core/checkpoint.py (load_model)"
        p = str(path)
        cases.append(Case(["prior-sample", "-n", "2", "--model", p], expect=expect, owner=owner))
        cases.append(
            Case(["prior-logpdf", str(seeds.points), "--model", p], expect=expect, owner=owner)
        )
        out = str(files.folder / f"enc-{name}.safetensors")
        cases.append(Case(["encode", p, *seeds.model_flags, "-o", out], expect=expect, owner=owner))
        cases.append(Case(["mig", p, *seeds.model_flags], expect=expect, owner=owner))
        if name.startswith(("config", "image-shape", "header-128", "flip", "meta")):
            png = str(files.folder / f"trav-{name}.png")
            argv = ["traverse", p, "-o", png, "--codes", str(seeds.codes), *seeds.model_flags]
            cases.append(Case(argv, expect=expect, owner=owner))
    return cases


def _codes_cases(seeds: Seeds, files: _Files) -> list[Case]:
    """Damaged codes files for mig (every estimator) and traverse --codes."""
    cases = []
    variants = {
        **_bundle_variants(seeds, files, seeds.codes, "codes"),
        **_codes_tensor_variants(seeds, files),
    }
    for name, path in variants.items():
        p = str(path)
        expect = (0,) if name in ("header-128-mod-256", "narrow-24", "narrow-30") else (0, 2)
        owner = "isa_core/codes.py + isa_core/metrics.py"
        if name.startswith(("truncated", "header", "offsets", "dtype", "shape", "flip")):
            owner = "isa_core/io.py (load_bundle)"
        cases.append(Case(["mig", p, "-q"], expect=expect, owner=owner))
        argv = ["score", p, "-q", "--metric", "mig,factorvae,betavae"]
        # the seed codes repeat factor combinations, so the grid scores may refuse them (2)
        cases.append(Case(argv, expect=(0, 2), owner="isa_core/scores + " + owner))
        if name in ("zero-rows", "one-row", "narrow-24", "logvar-1000", "factors-constant"):
            for estimator in ("sampling", "histogram"):
                argv = ["mig", p, "-q", "--estimator", estimator, "--samples", "200"]
                cases.append(Case(argv, expect=expect, owner=owner))
        if name in ("zero-rows", "nan-mean", "mean-1col", "names-string", "factors-1d", "flip9"):
            png = str(files.folder / f"trav-codes-{name}.png")
            argv = ["traverse", str(seeds.model), "-o", png, "--codes", p, *seeds.model_flags]
            cases.append(Case(argv, owner=owner))
        if name in ("header-128-mod-256", "zero-rows"):
            cases.append(Case(["mig", "-q"], stdin=(p + "\n").encode(), expect=expect, owner=owner))
    return cases


def _mig_flag_cases(seeds: Seeds) -> list[Case]:
    owner = "isa_cli/evaluate.py + isa_core/metrics.py"
    codes = str(seeds.codes)
    flags = [
        ["--bins", "1e11"],
        ["--bins", "100000000000"],
        ["--bins", "0"],
        ["--bins", "-1"],
        ["--bins", "1"],
        ["--samples", "0"],
        ["--samples", "-5"],
        ["--samples", "100000000000"],
        ["--seed", str(2**70)],
        ["--seed", "-1"],
        ["--estimator", "foo"],
        ["--factors", ""],
        ["--factors", ","],
        ["--factors", "nope"],
        ["--factors", "a,a"],
        ["--group", "subspaces"],
        ["--group", "bogus"],
    ]
    cases = []
    for f in flags:
        estimator = "histogram" if "--bins" in f else "sampling"
        cases.append(Case(["mig", codes, "-q", "--estimator", estimator, *f], owner=owner))
    model_flags = [
        ["--batch-size", "0"],
        ["--batch-size", "-1"],
        ["--batch-size", "100000000000"],
        ["--device", "foo"],
        ["--device", "cuda:99"],
        ["--device", "meta"],
        ["--data", "nonexistent-data"],
        ["--data", str(seeds.faces)],
    ]
    for f in model_flags:
        out = str(seeds.folder / "flags-codes.safetensors")
        cases.append(Case(["encode", str(seeds.model), "-q", "-o", out, *f], owner=owner))
        cases.append(Case(["mig", str(seeds.model), "-q", *f], owner=owner))
    png = str(seeds.folder / "flags.png")
    traverse_flags = [
        ["--index", "99999999999999999999999"],
        ["--index", "-1"],
        ["--index", "100000"],
        ["--steps", "1"],
        ["--steps", "100000"],
        ["--range", "nan"],
        ["--range", "inf"],
        ["--range", "1e308"],
        ["--max-rows", "0"],
        ["--kind", "latent-vs-true"],
        ["--kind", "bogus"],
        ["--kind", "reconstructions", "--count", "0"],
        ["--kind", "reconstructions", "--count", "99"],
        ["--kind", "reconstructions", "--index", "5", "--count", "4"],
        ["--kind", "samples", "--count", "-3"],
        ["--kind", "samples", "--seed", "-1"],
        ["--span", "bogus"],
        ["--quantile", "0"],
        ["--quantile", "0.5"],
        ["--quantile", "nan"],
        ["--quantile", "-1e308"],
        ["--all-latents", "--max-rows", "100"],
    ]
    for f in traverse_flags:
        argv = ["traverse", str(seeds.model), "-o", png, "--codes", codes, *seeds.model_flags, *f]
        cases.append(Case(argv, owner="isa_cli/evaluate.py (traverse)"))
    cases.append(
        Case(["traverse", str(seeds.model), "-o", str(seeds.folder / "x.txt")], owner=owner)
    )
    gif = str(seeds.folder / "hostile.gif")
    for kind in ("samples", "reconstructions", "latent-vs-true"):
        argv = ["traverse", str(seeds.model), "-o", gif, "--kind", kind, *seeds.model_flags]
        cases.append(Case(argv, owner="isa_cli/evaluate.py (traverse)"))
    return cases


def _data_variants(seeds: Seeds, files: _Files) -> dict[str, str]:
    """Damaged data files: generic .npz, dSprites .npz, 3D Faces .pt, Cars3D folders."""
    import torch

    good_npz = seeds.data.read_bytes()
    factors = np.array([[a, b] for a in range(2) for b in range(3)], dtype=np.int64)
    images = np.zeros((6, 64, 64), dtype=np.uint8)

    def generic(**changes: object) -> bytes:
        entries: dict[str, object] = {
            "images": images,
            "factors": factors,
            "factor_names": np.array(["a", "b"]),
            "factor_sizes": np.array([2, 3]),
        }
        entries.update(changes)
        buffer = io.BytesIO()
        np.savez(buffer, **{k: v for k, v in entries.items() if v is not None})
        return buffer.getvalue()

    def pt(value: object) -> bytes:
        buffer = io.BytesIO()
        torch.save(value, buffer)
        return buffer.getvalue()

    npz: dict[str, bytes] = {
        "sizes-strings": generic(factor_sizes=np.array(["2", "3"])),
        "sizes-words": generic(factor_sizes=np.array(["two", "three"])),
        "sizes-float": generic(factor_sizes=np.array([2.5, 3.0])),
        "sizes-huge": generic(factor_sizes=np.array([2**62, 3])),
        "sizes-2d": generic(factor_sizes=np.array([[2, 3]])),
        "values-strings": generic(factor_values_a=np.array(["x", "y"])),
        "values-wrong-shape": generic(factor_values_a=np.zeros(5)),
        "values-nan": generic(factor_values_a=np.array([np.nan, 1.0])),
        "names-numbers": generic(factor_names=np.array([1, 2])),
        "names-dup": generic(factor_names=np.array(["a", "a"])),
        "names-empty": generic(factor_names=np.array([], dtype=str), factor_sizes=np.array([])),
        "factors-float": generic(factors=factors.astype(float)),
        "factors-negative": generic(factors=factors - 1),
        "factors-1d": generic(factors=factors[:, 0]),
        "factors-dup": generic(factors=np.zeros_like(factors)),
        "images-float": generic(images=images.astype(np.float32)),
        "images-2d": generic(images=images[:, 0]),
        "images-5d": generic(images=images[:, None, None]),
        "images-empty": generic(images=np.zeros((6, 0, 0), dtype=np.uint8)),
        "images-tiny": generic(images=np.zeros((6, 1, 1), dtype=np.uint8)),
        "images-count": generic(images=images[:3]),
        "zero-images": generic(
            images=images[:0], factors=factors[:0], factor_sizes=np.array([0, 0])
        ),
        "no-factors": generic(factors=None),
        "no-names": generic(factor_names=None),
        "object-member": _npz_with_object(seeds.folder / SENTINEL),
        "truncated": good_npz[: len(good_npz) // 2],
        "flip-local-header": bytes([good_npz[0] ^ 0xFF]) + good_npz[1:],
        "empty-zip": zip_bytes({}),
        "zip-bad-npy": zip_bytes({"images.npy": b"\x93NUMPY\x01\x00garbage"}),
        "zip-huge-shape": zip_bytes(
            {
                "images.npy": npy_with_header(
                    "{'descr': '|u1', 'fortran_order': False, 'shape': (10**12, 64, 64), }"
                ),
                "factors.npy": npy_bytes(factors),
            }
        ),
        "pickle": pickle.dumps({"images": images}, protocol=4),
        "evil-pickle": evil_pickle(seeds.folder / SENTINEL),
        "text": b"not a zip\n",
        "empty": b"",
        "dsprites-bad-shapes": _npz_bytes(
            imgs=np.zeros((4, 64, 64), np.uint8), latents_classes=np.zeros((4, 5), np.int64)
        ),
        "dsprites-imgs-wrong": _npz_bytes(
            imgs=np.zeros((4, 32, 32), np.uint8),
            latents_classes=np.array(
                [[0, 0, 0, 0, x, y] for x in range(2) for y in range(2)], np.int64
            ),
            latents_values=np.zeros((4, 6)),
        ),
        "dsprites-imgs-255": _npz_bytes(
            imgs=np.full((4, 64, 64), 255, np.uint8),
            latents_classes=np.array(
                [[0, 0, 0, 0, x, y] for x in range(2) for y in range(2)], np.int64
            ),
            latents_values=np.zeros((4, 6)),
        ),
        "dsprites-classes-float": _npz_bytes(
            imgs=np.zeros((4, 64, 64), np.uint8),
            latents_classes=np.zeros((4, 6)),
            latents_values=np.zeros((4, 6)),
        ),
        "dsprites-values-strings": _npz_bytes(
            imgs=np.zeros((4, 64, 64), np.uint8),
            latents_classes=np.array(
                [[0, 0, 0, 0, x, y] for x in range(2) for y in range(2)], np.int64
            ),
            latents_values=np.full((4, 6), "a"),
        ),
        "faces-npz-float-nan": _npz_bytes(images=np.full((1, 1, 1, 2, 64, 64), np.nan)),
        "faces-npz-wrong-rank": _npz_bytes(images=np.zeros((2, 64, 64), np.uint8)),
    }
    paths = {name: files.put(f"{name}.npz", data) for name, data in npz.items()}
    good_pt = seeds.faces.read_bytes()
    pts: dict[str, bytes] = {
        "pt-truncated": good_pt[: len(good_pt) // 2],
        "pt-truncated-end": good_pt[:-10],
        "pt-empty": b"",
        "pt-dict": pt({"images": torch.zeros(2)}),
        "pt-list": pt([torch.zeros(1)]),
        "pt-int": pt(5),
        "pt-wrong-rank": pt(torch.zeros((2, 64, 64))),
        "pt-float-nan": pt(torch.full((1, 1, 1, 2, 64, 64), float("nan"))),
        "pt-huge-values": pt(torch.full((1, 1, 1, 2, 64, 64), 1e30)),
        "pt-zero-faces": pt(torch.zeros((0, 1, 1, 2, 64, 64))),
        "pt-complex": pt(torch.zeros((1, 1, 1, 2, 64, 64), dtype=torch.complex64)),
        "pt-evil": pt(_Evil(seeds.folder / SENTINEL)),
        "pt-raw-pickle": pickle.dumps(torch.zeros(2), protocol=2),
        "pt-text": b"hello",
        "pt-npz": good_npz,
    }
    paths.update({name: files.put(f"{name}.pt", data) for name, data in pts.items()})
    folders = {
        "cars-empty": files.dir("cars-empty"),
        "cars-garbage": files.dir("cars-garbage"),
        "cars-wrong-shape": files.dir("cars-wrong-shape"),
        "cars-subfolder": files.dir("cars-subfolder"),
    }
    (folders["cars-garbage"] / "car_0.mat").write_bytes(b"MATLAB 5.0 garbage" + bytes(200))
    from scipy.io import savemat

    savemat(folders["cars-wrong-shape"] / "car_0.mat", {"im": np.zeros((4, 4), np.uint8)})
    (folders["cars-subfolder"] / "car_0.mat").mkdir()
    paths.update({name: str(path) for name, path in folders.items()})
    paths["unknown-suffix"] = files.put("data.h5", b"\x89HDF\r\n")
    paths["missing"] = str(files.folder / "no-such-data.npz")
    paths["bare-name"] = "nosuchdataset"
    paths["nul-name"] = "dsprites\x00"
    return paths


def _npz_bytes(**entries: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **entries)
    return buffer.getvalue()


def _npz_with_object(target: Path) -> bytes:
    return zip_bytes(
        {
            "images.npy": _object_npy(target),
            "factors.npy": npy_bytes(np.zeros((1, 1), np.int64)),
        }
    )


def _data_cases(seeds: Seeds, files: _Files) -> list[Case]:
    owner = "isa_core/data (formats.py and its readers), isa_core/io.py"
    cases = []
    for name, path in _data_variants(seeds, files).items():
        cases.append(Case(["data", "info", path], owner=owner))
        cases.append(Case(["data", "render", path, "--index", "0"], owner=owner))
        if name in ("sizes-strings", "values-nan", "images-tiny", "pt-float-nan", "cars-empty"):
            png = str(files.folder / f"preview-{name}.png")
            cases.append(Case(["data", "preview", path, "-o", png], owner=owner))
        if name in ("sizes-strings", "images-tiny", "truncated", "pt-truncated", "zero-images"):
            out = str(files.folder / f"enc-data-{name}.safetensors")
            argv = ["encode", str(seeds.model), "--data", path, "-q", "-o", out, "--device", "cpu"]
            cases.append(Case(argv, owner=owner))
            run = str(files.folder / f"train-data-{name}")
            argv = ["train", "--data", path, "--steps", "1", "--batch-size", "4", "--arch", "conv"]
            argv += ["--layout", "1x2", "--device", "cpu", "-q", "-o", run]
            cases.append(Case(argv, owner=owner))
    data = str(seeds.data)
    render_flags = [
        ["--index", "99999999999999999999999"],
        ["--index", "-99999999999999999999999"],
        ["--index", "-1"],
        ["--index", "6"],
        ["--index", ""],
        ["--index", ","],
        ["--index", "1e3"],
        ["--index", "0x1"],
        ["--index", "0," * 100000 + "0"],
        ["--factors", "a=0"],
        ["--factors", "a=0,b=99999999999999999999999"],
        ["--factors", "a=0,b=-1"],
        ["--factors", "a=0,b=x"],
        ["--factors", "a,b"],
        ["--factors", "a=0,b=0,c=0"],
        ["--factors", "a=0,a=1,b=0"],
        ["--factors", ""],
        ["--index", "0", "--factors", "a=0,b=0"],
        [],
    ]
    for f in render_flags:
        cases.append(Case(["data", "render", data, *f], owner="isa_cli/data.py"))
    for f in (["--columns", "0"], ["--columns", "1000"], ["-o", str(files.folder / "x.jpg")]):
        argv = ["data", "preview", data, "-o", str(files.folder / "pv.png"), *f]
        cases.append(Case(argv, owner="isa_cli/data.py"))
    cases.append(Case(["data", "info", "dsprites-mini", "extra"], owner="isa_cli/data.py"))
    cases.append(Case(["data", "bogus"], owner="isa_cli/data.py"))
    return cases


def _results_cases(seeds: Seeds, files: _Files) -> list[Case]:
    """Results files for select and every plot: rows that are not objects, odd mig values."""
    rows = [json.loads(line) for line in seeds.results.read_text().splitlines()]
    first = rows[0]

    def lines(*objects: object) -> str:
        return "".join(json.dumps(o) + "\n" for o in objects)

    texts: dict[str, str | bytes] = {
        "row-list": lines([1, 2], *rows),
        "row-number": lines(5, *rows),
        "row-string": lines("x", *rows),
        "row-null": lines(None, *rows),
        "rows-all-lists": lines([1], [2]),
        "mig-string": lines({**first, "mig": "high"}, *rows[1:]),
        "mig-nan": lines({**first, "mig": float("nan")}, *rows[1:]),
        "mig-inf": lines({**first, "mig": float("inf")}, *rows[1:]),
        "mig-all-nan": lines(*({**r, "mig": float("nan")} for r in rows)),
        "mig-null": lines({**first, "mig": None}, *rows[1:]),
        "mig-list": lines({**first, "mig": [0.1]}, *rows[1:]),
        "mig-missing": lines({k: v for k, v in first.items() if k != "mig"}, *rows[1:]),
        "mig-bool": lines({**first, "mig": True}, *rows[1:]),
        "mig-huge": lines({**first, "mig": 1e308}, {**first, "mig": -1e308}),
        "logpx-string": lines({**first, "logpx": "x"}, *rows[1:]),
        "logpx-nan": lines(*({**r, "logpx": float("nan")} for r in rows)),
        "beta-string": lines({**first, "beta": "one"}, *rows[1:]),
        "beta-list": lines({**first, "beta": [1]}, *rows[1:]),
        "beta-dict": lines({**first, "beta": {"a": 1}}, *rows[1:]),
        "beta-nan": lines({**first, "beta": float("nan")}, *rows[1:]),
        "beta-mixed": lines({**first, "beta": "1"}, {**first, "beta": 1.0}),
        "method-list": lines({**first, "method": [1]}, *rows[1:]),
        "method-null": lines(*({**r, "method": None} for r in rows)),
        "config-string": lines(*({**r, "config": "x"} for r in rows)),
        "exponents-string": lines(*({**r, "exponents": "2,2"} for r in rows)),
        "exponents-ragged": lines(
            {**first, "exponents": [2.1, 2.0]}, {**first, "exponents": [2.1]}
        ),
        "exponents-short": lines(*({**r, "exponents": [2.1]} for r in rows)),
        "exponents-nested": lines(*({**r, "exponents": [[2.1], [2.0]]} for r in rows)),
        "exponents-nan": lines(*({**r, "exponents": [2.1, float("nan"), 2.0]} for r in rows)),
        "exponents-strings": lines(*({**r, "exponents": ["a", "b"]} for r in rows)),
        "one-row": lines(first),
        "many-identical": lines(*([first] * 200)),
        "empty": "",
        "blank-lines": "\n\n \n",
        "not-json": "mig=0.1\n",
        "truncated-json": json.dumps(first)[:40] + "\n",
        "json-array-file": json.dumps(rows) + "\n",
        "deep-json": "[" * 100000 + "]" * 100000 + "\n",
        "huge-int": lines({**first, "mig": 10**400}),
        "not-utf8": b"\xff\xfe" + b"\x00" * 10,
        "nul-bytes": b'{"mig": 0.1}\x00\n',
        "binary-model": seeds.model.read_bytes()[:5000],
    }
    paths = {name: files.put(f"{name}.jsonl", text) for name, text in texts.items()}
    paths["folder"] = str(seeds.folder)
    paths["missing"] = str(files.folder / "missing.jsonl")
    paths["dev-null"] = "/dev/null"
    owner = "isa_core/sweeps/results.py (read_results) + isa_core/plots/sweep.py"
    cases = []
    for name, path in paths.items():
        cases.append(Case(["select", path], owner=owner))
        for kind in ("scatter", "mig-dist", "exponents"):
            png = str(files.folder / f"{kind}-{name}.png")
            cases.append(Case(["plot", kind, path, "-o", png], owner=owner))
    results = str(seeds.results)
    for f in (
        ["--quantile", "1"],
        ["--quantile", "-1"],
        ["--quantile", "nan"],
        ["--by", ""],
        ["--by", "nonexistent"],
        ["--by", "config"],
        ["--by", ","],
    ):
        cases.append(Case(["select", results, *f], owner=owner))
    for f in (["--beta", "99"], ["--beta", "nan"], ["--beta", "inf"]):
        png = str(files.folder / "md.png")
        cases.append(Case(["plot", "mig-dist", results, "-o", png, *f], owner=owner))
    for f in (
        ["--tree", "2" + "(2" * 2000 + ")" * 2000],
        ["--tree", "1e300(2)"],
        ["--tree", "2(3)"],
        ["--scale", "0"],
        ["--scale", "nan"],
        ["--scale", "1e300"],
    ):
        png = str(files.folder / "pc.png")
        cases.append(Case(["plot", "prior-contours", "-o", png, *f], owner="isa_cli/plot.py"))
    cases.append(Case(["plot", "scatter", results, "-o", str(files.folder / "s.svg")], owner=owner))
    return cases


def _sweep_folder_cases(seeds: Seeds, files: _Files) -> list[Case]:
    """Damaged sweep folders for sweep status and sweep collect."""
    manifest = json.loads((seeds.sweep / "sweep.json").read_text())
    run_id = manifest["runs"][0]["id"]
    variants: dict[str, Callable[[Path], None]] = {
        "sweep-json-not-json": lambda f: (f / "sweep.json").write_text("{not json"),
        "sweep-json-empty": lambda f: (f / "sweep.json").write_text(""),
        "sweep-json-list": lambda f: (f / "sweep.json").write_text("[1, 2]"),
        "sweep-json-no-runs": lambda f: (f / "sweep.json").write_text('{"name": "x"}'),
        "sweep-json-runs-dict": lambda f: (f / "sweep.json").write_text('{"runs": {"a": 1}}'),
        "sweep-json-run-string": lambda f: (f / "sweep.json").write_text('{"runs": ["a"]}'),
        "sweep-json-run-no-id": lambda f: (f / "sweep.json").write_text('{"runs": [{}]}'),
        "sweep-json-id-number": lambda f: (f / "sweep.json").write_text('{"runs": [{"id": 5}]}'),
        "sweep-json-id-traversal": lambda f: (f / "sweep.json").write_text(
            json.dumps({"runs": [{**manifest["runs"][0], "id": "../../../etc"}]})
        ),
        "sweep-json-id-nul": lambda f: (f / "sweep.json").write_text(
            json.dumps({"runs": [{**manifest["runs"][0], "id": "a\x00b"}]})
        ),
        "sweep-json-no-grid": lambda f: (f / "sweep.json").write_text(
            json.dumps({"runs": [{"id": run_id, "method": "x"}]})
        ),
        "sweep-json-grid-list": lambda f: (f / "sweep.json").write_text(
            json.dumps({"runs": [{"id": run_id, "method": "x", "grid": [1]}]})
        ),
        "sweep-json-binary": lambda f: (f / "sweep.json").write_bytes(b"\xff\xfe\x00"),
        "sweep-json-folder": lambda f: ((f / "sweep.json").unlink(), (f / "sweep.json").mkdir()),
        "sweep-json-deep": lambda f: (f / "sweep.json").write_text("[" * 100000 + "]" * 100000),
        "result-not-json": lambda f: (f / "runs" / run_id / "result.json").write_text("{"),
        "result-list": lambda f: (f / "runs" / run_id / "result.json").write_text("[]"),
        "result-no-mig": lambda f: (f / "runs" / run_id / "result.json").write_text("{}"),
        "result-factors-string": lambda f: (f / "runs" / run_id / "result.json").write_text(
            '{"mig": 0.1, "factors": "x"}'
        ),
        "result-folder": lambda f: (
            (f / "runs" / run_id / "result.json").unlink(),
            (f / "runs" / run_id / "result.json").mkdir(),
        ),
        "result-binary": lambda f: (f / "runs" / run_id / "result.json").write_bytes(b"\xff\x00"),
        "metrics-garbage": lambda f: (f / "runs" / run_id / "metrics.jsonl").write_text("x\n{\n"),
        "metrics-list-lines": lambda f: (f / "runs" / run_id / "metrics.jsonl").write_text("[1]\n"),
        "metrics-step-string": lambda f: (f / "runs" / run_id / "metrics.jsonl").write_text(
            '{"step": "x", "loss": "y"}\n'
        ),
        "metrics-binary": lambda f: (f / "runs" / run_id / "metrics.jsonl").write_bytes(
            b"\xff\xfe\n"
        ),
        "metrics-missing": lambda f: (f / "runs" / run_id / "metrics.jsonl").unlink(),
        "model-truncated": lambda f: _truncate(f / "runs" / run_id / "model.safetensors"),
        "model-missing": lambda f: (f / "runs" / run_id / "model.safetensors").unlink(),
        "model-no-config": lambda f: save_bundle_with(
            f / "runs" / run_id / "model.safetensors",
            seeds.model,
            metadata=lambda m: {k: v for k, v in m.items() if k != "config"},
        ),
        "error-binary": lambda f: (
            (f / "runs" / run_id / "result.json").unlink(),
            (f / "runs" / run_id / "error.txt").write_bytes(b"\xff\xfe"),
        ),
        "error-empty": lambda f: (
            (f / "runs" / run_id / "result.json").unlink(),
            (f / "runs" / run_id / "error.txt").write_text(""),
        ),
        "runs-is-file": lambda f: (shutil.rmtree(f / "runs"), (f / "runs").write_text("x")),
    }
    owner = "isa_cli/sweep.py (status, collect) + isa_core/sweeps/execute.py (run_state)"
    cases = []
    for name, damage in variants.items():
        folder = files.folder / f"sweep-{name}"
        shutil.copytree(seeds.sweep, folder)
        damage(folder)
        cases.append(Case(["sweep", "status", str(folder)], owner=owner))
        out = str(files.folder / f"collected-{name}.jsonl")
        cases.append(Case(["sweep", "collect", str(folder), "-o", out], owner=owner))
    for path in (str(files.folder / "missing-sweep"), str(seeds.results), "/dev/null", ""):
        cases.append(Case(["sweep", "status", path], owner=owner))
        cases.append(Case(["sweep", "collect", path], owner=owner))
    cases.append(Case(["sweep", "collect", str(seeds.sweep), "-o", str(seeds.folder)], owner=owner))
    report = "isa_cli/report.py + isa_core/report.py"
    for name in ("sweep-json-not-json", "sweep-json-no-runs", "runs-is-file"):
        page = str(files.folder / f"report-{name}.html")
        folder = str(files.folder / f"sweep-{name}")
        cases.append(Case(["report", folder, "-o", page, "-q"], owner=report))
    for path in (str(files.folder / "missing-sweep"), str(seeds.results), "/dev/null"):
        cases.append(Case(["report", path, "-o", str(files.folder / "r.html")], owner=report))
    for out in (str(seeds.folder / "report.png"), str(seeds.folder), ""):
        cases.append(Case(["report", str(seeds.sweep), "-o", out, "-q"], owner=report))
    return cases


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])


def _spec_cases(seeds: Seeds, files: _Files) -> list[Case]:
    """Hostile sweep specs, run with --dry-run (nothing starts)."""
    grid_bomb = "[grid]\n" + "".join(
        f"{k} = [{', '.join(map(str, range(40)))}]\n"
        for k in (
            "seed",
            "beta",
            "gamma",
            "lr",
            "steps",
            "batch_size",
            "latent_dim",
            "anneal_steps",
        )
    )
    texts: dict[str, str | bytes] = {
        "not-toml": "this is = = not toml",
        "empty": "",
        "sweep-not-table": "sweep = 1\n[grid]\nseed = [0]\n",
        "base-not-table": 'base = "x"\n[grid]\nseed = [0]\n',
        "grid-not-table": "grid = [1, 2]\n",
        "grid-string": 'grid = "seed"\n',
        "eval-not-table": "eval = true\n[grid]\nseed = [0]\n",
        "methods-not-table": "methods = 3\n[grid]\nseed = [0]\n",
        "methods-array-of-tables": "[[methods]]\nx = 1\n[grid]\nseed = [0]\n",
        "method-not-table": "[methods]\nx = 1\n[grid]\nmethod = ['x']\n",
        "name-date": "[sweep]\nname = 1979-05-27\n[grid]\nseed = [0]\n",
        "data-datetime": "[sweep]\ndata = 1979-05-27T07:32:00Z\n[grid]\nseed = [0]\n",
        "grid-date": "[grid]\nseed = [1979-05-27]\n",
        "base-time": "[base]\nlr = 07:32:00\n[grid]\nseed = [0]\n",
        "grid-datetime-local": "[grid]\nbeta = [1979-05-27T07:32:00]\n",
        "name-number": "[sweep]\nname = 5\n[grid]\nseed = [0]\n",
        "name-absolute": '[sweep]\nname = "/tmp/isa-hostile-victim"\n[grid]\nseed = [0]\n',
        "name-traversal": '[sweep]\nname = "../../victim"\n[grid]\nseed = [0]\n',
        "name-empty": '[sweep]\nname = ""\n[grid]\nseed = [0]\n',
        "name-nul": '[sweep]\nname = "a\\u0000b"\n[grid]\nseed = [0]\n',
        "name-long": f'[sweep]\nname = "{"n" * 300}"\n[grid]\nseed = [0]\n',
        "method-traversal": "[methods.'../../../../victim']\nbeta = 1\n"
        "[grid]\nmethod = ['../../../../victim']\n",
        "method-number": "[methods.x]\nbeta = 1\n[grid]\nmethod = [1]\n",
        "method-list-value": "[methods.x]\nbeta = 1\n[grid]\nmethod = [['x']]\n",
        "method-table-value": "[methods.x]\nbeta = 1\n[grid]\nmethod = [{a = 1}]\n",
        "grid-value-table": "[grid]\nseed = [{a = 1}]\n",
        "grid-value-list": "[grid]\nseed = [[1, 2]]\n",
        "grid-value-long": f"[grid]\nseed = ['{'s' * 300}']\n",
        "grid-value-slash": "[grid]\ndata = ['../../x', '/etc/passwd']\n",
        "grid-value-nan": "[grid]\nbeta = [nan, inf, -inf]\n",
        "grid-value-huge-int": "[grid]\nseed = [9223372036854775807]\n",
        "grid-value-bool": "[grid]\nlearn_exponents = [true, false]\n",
        "grid-duplicate-ids": "[grid]\nseed = [1, 1.0]\n",
        "grid-empty-list": "[grid]\nseed = []\n",
        "grid-empty": "[grid]\n",
        "grid-unknown-key": "[grid]\nbogus = [1]\n",
        "grid-bomb": grid_bomb,
        "base-unknown": "[base]\nbogus = 1\n[grid]\nseed = [0]\n",
        "base-nested": "[base.inner]\nx = 1\n[grid]\nseed = [0]\n",
        "base-list": "[base]\nbeta = [1, 2]\n[grid]\nseed = [0]\n",
        "eval-unknown": "[eval]\nbogus = 1\n[grid]\nseed = [0]\n",
        "eval-list": "[eval]\nfactors = ['a']\n[grid]\nseed = [0]\n",
        "sweep-extra": "[sweep]\nbogus = 1\n[grid]\nseed = [0]\n",
        "unknown-section": "[bogus]\nx = 1\n[grid]\nseed = [0]\n",
        "data-missing-file": '[sweep]\ndata = "/no/such/data.npz"\n[grid]\nseed = [0]\n',
        "deep-inline": "[grid]\nseed = " + "[" * 5000 + "]" * 5000 + "\n",
        "not-utf8": b"\xff\xfe[grid]\n",
        "nul": "[grid]\nseed = [0]\n\x00",
        "binary-model": seeds.model.read_bytes()[:3000],
    }
    owner = "isa_core/sweeps/spec.py (load_spec) + isa_cli/sweep.py"
    cases = []
    for name, text in texts.items():
        path = files.put(f"{name}.toml", text)
        expect = (
            (2,) if name in ("data-missing-file", "name-absolute", "name-traversal") else (0, 2)
        )
        timeout = 20.0 if name == "grid-bomb" else 60.0
        cases.append(
            Case(
                ["sweep", "run", path, "--dry-run", "-o", str(files.folder)],
                expect=expect,
                owner=owner,
                timeout=timeout,
            )
        )
    spec = str(seeds.spec)
    # beta = [1.0, 2.0]: `beta=1` matches 1.0 (values compare by type); `beta=3` matches none.
    filters = ("beta=1", "beta=3", "beta", "=1", "x=y")
    for f in (["--only", value] for value in filters):
        expect = {"beta=1": (0,), "beta=3": (2,), "x=y": (2,)}.get(f[1], (0, 2))
        cases.append(
            Case(["sweep", "run", spec, "--dry-run", *f], expect=expect, owner="isa_cli/sweep.py")
        )
    for path in (str(files.folder / "missing.toml"), str(seeds.folder), "/dev/null"):
        cases.append(Case(["sweep", "run", path, "--dry-run"], owner=owner))
    return cases


def _train_argv(base: dict[str, str], changes: dict[str, str | None]) -> list[str]:
    """`train` flags: ``base`` with ``changes`` applied (None drops a flag, "" is a switch)."""
    flags = {**base, **changes}
    argv = ["train"]
    for flag, value in flags.items():
        if value is not None:
            argv += [flag] if value == "" else [flag, value]
    return argv


def _train_cases(seeds: Seeds, files: _Files) -> list[Case]:
    """Bad train flags (each run tiny) and damaged run folders for --resume."""
    owner = "isa_cli/train.py + isa_core/config.py"
    base = {
        "--data": str(seeds.data),
        "--steps": "1",
        "--batch-size": "4",
        "--arch": "conv",
        "--layout": "1x2",
        "--device": "cpu",
        "-q": "",
    }
    deep = "2(" * 2000 + "1" + ")" * 2000
    changes: list[tuple[dict[str, str | None], tuple[int, ...]]] = [
        ({"--anneal-steps": "-5"}, (2,)),
        ({"--log": "bogus"}, (2,)),
        ({"--image-every": "-1"}, (2,)),
        ({"--log": "tensorboard", "--image-every": "1"}, (0,)),
        ({"--epochs": "nan", "--steps": None}, (2,)),
        ({"--epochs": "inf", "--steps": None}, (2,)),
        ({"--epochs": "-1", "--steps": None}, (2,)),
        ({"--epochs": "1e300", "--steps": None}, (2,)),
        ({"--steps": "0"}, (2,)),
        ({"--steps": "-1"}, (2,)),
        ({"--steps": "99999999999999999999999"}, (2,)),
        ({"--batch-size": "0"}, (2,)),
        ({"--batch-size": "-1"}, (2,)),
        ({"--batch-size": "100000000000"}, (0, 2)),
        ({"--lr": "nan"}, (2,)),
        ({"--lr": "0"}, (2,)),
        ({"--lr": "inf"}, (2,)),
        ({"--beta": "-1"}, (2,)),
        ({"--beta": "nan"}, (2,)),
        ({"--beta": "inf"}, (2,)),
        ({"--gamma": "nan"}, (2,)),
        ({"--exponent-lr": "nan"}, (2,)),
        ({"--scale": "1e-300"}, (2,)),
        ({"--scale": "nan"}, (2,)),
        ({"--seed": str(2**70)}, (2,)),
        ({"--seed": "-1"}, (0, 2)),
        ({"--checkpoint-every": "0"}, (2,)),
        ({"--log-every": "0"}, (2,)),
        ({"--latent-dim": "0", "--layout": None, "--prior": "normal"}, (2,)),
        ({"--latent-dim": "100000000000", "--layout": None, "--prior": "normal"}, (0, 2)),
        ({"--latent-dim": "3"}, (2,)),
        ({"--tree": deep, "--layout": None}, (2,)),
        ({"--tree": "1e300(2)", "--layout": None}, (2,)),
        ({"--prior": "normal", "--p0": "2", "--layout": None}, (2,)),
        ({"--closed-form-kl": ""}, (2,)),
        ({"--objective": "gan"}, (2,)),
        ({"--arch": "resnet"}, (2,)),
        ({"--device": "cuda:99"}, (2,)),
        ({"--device": "tpu"}, (2,)),
        ({"--data": "nonexistent"}, (2,)),
        ({"--data": str(seeds.faces)}, (0, 2)),
        ({"--data": "/dev/null"}, (2,)),
        ({"--resume": "", "--force": ""}, (2,)),
    ]
    cases = []
    for number, (change, expect) in enumerate(changes):
        argv = [*_train_argv(base, change), "-o", str(files.folder / f"train-{number}")]
        note = "issue 11.9" if "--anneal-steps" in change or "--scale" in change else ""
        cases.append(Case(argv, expect=expect, owner=owner, timeout=60, note=note))
    target = files.put("a-file", b"x")
    cases.append(Case(_train_argv(base, {"-o": target}), expect=(2,), owner=owner))
    nested = str(files.folder / "new" / "parents" / "run")
    cases.append(Case(_train_argv(base, {"-o": nested}), owner=owner))
    cases += _resume_cases(seeds, files)
    return cases


def _resume_cases(seeds: Seeds, files: _Files) -> list[Case]:
    owner = "isa_core/checkpoint.py (resume) + isa_cli/train.py"
    deep = "2(" * 2000 + "1" + ")" * 2000
    model, state = "model.safetensors", "train_state.safetensors"

    def put(name: str) -> Callable[[Path], None]:
        return lambda f: (f / name).write_bytes(b"")

    damages: dict[str, Callable[[Path], None]] = {
        "model-empty": put(model),
        "state-empty": put(state),
        "model-truncated": lambda f: _truncate(f / model),
        "state-truncated": lambda f: _truncate(f / state),
        "state-pickle": lambda f: (f / state).write_bytes(evil_pickle(seeds.folder / SENTINEL)),
        "model-missing": lambda f: (f / model).unlink(),
        "state-missing": lambda f: (f / state).unlink(),
        "metrics-garbage": lambda f: (f / "metrics.jsonl").write_text("not json\n{\n"),
        "metrics-binary": lambda f: (f / "metrics.jsonl").write_bytes(b"\xff\x00\xfe"),
        "metrics-folder": lambda f: ((f / "metrics.jsonl").unlink(), (f / "metrics.jsonl").mkdir()),
        "model-config-string": lambda f: save_bundle_with(
            f / model, seeds.model, metadata=lambda m: {**m, "config": "x"}
        ),
        "model-config-deep-tree": lambda f: save_bundle_with(
            f / model,
            seeds.model,
            metadata=lambda m: {**m, "config": {**m["config"], "tree": deep}},
        ),
        "model-step-string": lambda f: save_bundle_with(
            f / model, seeds.model, metadata=lambda m: {**m, "step": "two"}
        ),
        "model-data-missing": lambda f: save_bundle_with(
            f / model,
            seeds.model,
            metadata=lambda m: {**m, "config": {**m["config"], "data": "/no/data.npz"}},
        ),
        "state-meta-list": lambda f: save_bundle_with(f / state, f / state, metadata=lambda m: [m]),
        "state-no-model-meta": lambda f: save_bundle_with(
            f / state, f / state, metadata=lambda m: {k: v for k, v in m.items() if k != "model"}
        ),
        "state-step-ahead": lambda f: save_bundle_with(
            f / state, f / state, metadata=lambda m: {**m, "step": 99}
        ),
        "state-rng-garbage": lambda f: save_bundle_with(f / state, f / state, tensors=_garbage_rng),
        "state-optimizer-shapes": lambda f: save_bundle_with(
            f / state, f / state, tensors=_shrink_optimizer
        ),
        "model-header-128": lambda f: _pad_in_place(f / model),
        "state-header-128": lambda f: _pad_in_place(f / state),
    }
    cases = []
    for name, damage in damages.items():
        folder = files.folder / f"resume-{name}"
        shutil.copytree(seeds.run, folder)
        damage(folder)
        expect = (0,) if "header-128" in name else (0, 2)
        argv = ["train", "--resume", "-o", str(folder), "--steps", "3", "-q", "--device", "cpu"]
        cases.append(Case(argv, expect=expect, owner=owner, timeout=120))
    folder = files.folder / "resume-changed-beta"
    shutil.copytree(seeds.run, folder)
    argv = ["train", "--resume", "-o", str(folder), "--beta", "100", "--objective", "tcvae", "-q"]
    cases.append(Case(argv, expect=(2,), owner=owner, note="issue 11.6"))
    argv = ["train", "--resume", "-o", str(files.folder / "no-such-run"), "-q"]
    cases.append(Case(argv, expect=(2,), owner=owner))
    return cases


def _pad_in_place(path: Path) -> None:
    padded = padded_bundle(path.with_name("padded.safetensors"), path)
    padded.replace(path)


def _garbage_rng(tensors: dict) -> dict:
    import torch

    return {
        k: (torch.zeros(3, dtype=torch.uint8) if k.startswith("rng.") else v)
        for k, v in tensors.items()
    }


def _shrink_optimizer(tensors: dict) -> dict:
    return {k: (v[:1] if k.startswith("opt.") and v.ndim else v) for k, v in tensors.items()}


def _toy_cases(files: _Files) -> list[Case]:
    owner = "isa_cli/toy.py + isa_core/toy_fa.py, toy_ica.py"
    fa = [
        ["--points", "100000000000"],
        ["--points", "1"],
        ["--points", "-5"],
        ["--beta", "nan"],
        ["--beta", "0"],
        ["--beta", "1e-300"],
        ["--beta", "1e300"],
        ["--experiment", "foo"],
        ["-o", str(files.folder / "fa.txt")],
    ]
    cases = [Case(["toy-fa", "--points", "3", *f], owner=owner) for f in fa]
    small = ["--n", "10", "--iterations", "1", "--beta", "1"]
    ica = [
        (["--seed", "-1"], (2,)),
        (["--seed", str(2**70)], (2,)),
        (["--n", "100000000000"], (0, 2)),
        (["--n", "1"], (2,)),
        (["--nu", "nan"], (2,)),
        (["--nu", "1e-300"], (0, 2)),
        (["--noise", "inf"], (2,)),
        (["--noise", "1e-300"], (0, 2)),
        (["--directions", "a,b"], (2,)),
        (["--directions", "1"], (2,)),
        (["--directions", "nan,1"], (2,)),
        (["--directions", "1e400,1"], (2,)),
        (["--directions", "0,0"], (0, 2)),
        (["--directions", ",".join(["1"] * 10000)], (0, 2)),
        (["--iterations", "-1"], (2,)),
        (["--beta", "nan"], (2,)),
        (["-o", str(files.folder / "ica.jpg")], (2,)),
    ]
    for f, expect in ica:
        argv = ["toy-ica", *small, *f]
        cases.append(Case(argv, expect=expect, owner=owner, timeout=60))
    return cases


def _prior_plot_cases(seeds: Seeds, files: _Files) -> list[Case]:
    owner = "isa_cli/prior.py (prior-plot) + isa_core/plots/prior.py"
    png = str(files.folder / "pp.png")
    flags = [
        (["--extent", "inf"], (2,)),
        (["--extent", "nan"], (2,)),
        (["--extent", "-1"], (2,)),
        (["--extent", "0"], (2,)),
        (["--extent", "1e-300"], (0, 2)),
        (["--extent", "1e300"], (0, 2)),
        (["--samples", "100000000000"], (0, 2)),
        (["--samples", "0"], (0, 2)),
        (["--samples", "-1"], (2,)),
        (["--seed", str(2**70)], (2,)),
        (["--tree", "2(3)"], (2,)),
        (["--tree", "1e-300(2)"], (0, 2)),
        (["--tree", "1e300(2)"], (0, 2)),
        (["--tree", "0.01(2)"], (0, 2)),
    ]
    cases = []
    for f, expect in flags:
        argv = ["prior-plot", "-o", png, *f]
        if "--tree" not in f:
            argv += ["--tree", "2(2)"]
        cases.append(Case(argv, expect=expect, owner=owner))
    cases.append(
        Case(["prior-plot", str(seeds.points2), "--tree", "2(2)", "-o", "x.pdf"], owner=owner)
    )
    return cases


def _output_cases(seeds: Seeds, files: _Files) -> list[Case]:
    """Failed commands must leave an existing output file as it was."""
    existing = Path(files.put("existing.npy", npy_bytes(np.arange(4.0))))
    cases = [
        Case(["prior-sample", "-n", "0", "-o", str(existing)], check=_unchanged(existing)),
        Case(
            ["prior-logpdf", str(files.folder / "missing.npy"), "-o", str(existing)],
            check=_unchanged(existing),
        ),
        Case(
            ["data", "render", str(seeds.data), "--index", "99", "-o", str(existing)],
            check=_unchanged(existing),
        ),
        Case(["prior-sample", "-n", "2", "-o", str(files.folder / "no" / "dir" / "x.npy")]),
        Case(["prior-sample", "-n", "2", "-o", str(files.folder)]),
        Case(["prior-sample", "-n", "2", "-o", str(files.folder / ("x" * 300 + ".npy"))]),
        Case(["prior-sample", "-n", "2", "-o", "bad\x00name.npy"]),
    ]
    for case in cases:
        case.owner = "isa_core/io.py (atomic_write)"
    return cases


def _generic_cases() -> list[Case]:
    owner = "isa_cli/main.py"
    return [
        Case(["bogus-command"], owner=owner),
        Case(["--bogus"], owner=owner),
        Case(["prior-sample"], owner=owner),
        Case(["prior-sample", "-n"], owner=owner),
        Case(["prior-sample", "-n", "3", "--dtype"], owner=owner),
        Case(["--help"], owner=owner),
        Case(["--version"], owner=owner),
        Case(["sweep"], owner=owner),
        Case(["plot", "scatter"], owner=owner),
        Case(["mig", "--estimator"], owner=owner),
        Case(["prior-sample", "-n", "3", "--layout", "2x2", "--layout", "\udcff"], owner=owner),
    ]


def catalogue(seeds: Seeds, folder: Path) -> list[Case]:
    """Every hand-written hostile case; the files they need are written under ``folder``."""
    files = _Files(folder)
    return [
        *_generic_cases(),
        *_prior_flag_cases(files.folder / "no-such-model.safetensors"),
        *_npy_cases(seeds, files),
        *_stdin_cases(seeds, files),
        *_prior_plot_cases(seeds, files),
        *_model_cases(seeds, files),
        *_codes_cases(seeds, files),
        *_mig_flag_cases(seeds),
        *_data_cases(seeds, files),
        *_results_cases(seeds, files),
        *_sweep_folder_cases(seeds, files),
        *_spec_cases(seeds, files),
        *_train_cases(seeds, files),
        *_toy_cases(files),
        *_output_cases(seeds, files),
    ]


# -- running the catalogue -----------------------------------------------------------------


@dataclass
class Finding:
    case: Case
    outcome: Outcome
    problems: list[str]
    where: str = ""

    def as_dict(self) -> dict:
        return {
            "command": self.case.command_line,
            "exit": self.outcome.code,
            "problems": self.problems,
            "stderr_first_line": self.first_line[:400],
            "owner": self.owner,
            "where": self.where,
            "note": self.case.note,
        }

    @property
    def first_line(self) -> str:
        """The first stderr line that is not a warning (or the first line)."""
        lines = error_lines(self.outcome.stderr) or self.outcome.stderr.splitlines() or [""]
        return lines[0]

    @property
    def owner(self) -> str:
        if self.where:
            return self.where.split(":")[0]
        return self.case.owner or "unknown"


@dataclass
class Tally:
    tried: int = 0
    by_exit: dict[str, int] = field(default_factory=dict)
    findings: list[Finding] = field(default_factory=list)

    def count(self, outcome: Outcome) -> None:
        self.tried += 1
        key = "crash or escape" if outcome.escaped else f"exit {outcome.code}"
        self.by_exit[key] = self.by_exit.get(key, 0) + 1


def run_case(case: Case, sentinel: Path) -> tuple[Outcome, Finding | None]:
    """Run one case; its outcome, and a Finding when it breaks the contract or expectation."""
    outcome = run_isolated(case.argv, case.stdin, timeout=case.timeout)
    problems = contract_problems(outcome)
    if outcome.code is not None and outcome.code not in case.expect and not problems:
        problems.append(f"exit {outcome.code}, expected {' or '.join(map(str, case.expect))}")
    if case.check is not None:
        problems += case.check(outcome)
    if sentinel.exists():
        problems.append("CODE RAN FROM AN INPUT FILE (the sentinel file was created)")
        sentinel.unlink()
    if not problems:
        return outcome, None
    where = outcome.where
    if outcome.code == 1 and not where:
        where = run_isolated(case.argv, case.stdin, timeout=case.timeout, debug=True).where
    return outcome, Finding(case, outcome, problems, where)


def run_catalogue(
    folder: Path,
    progress: Callable[[str], None] = lambda _: None,
    match: str = "",
    verbose: bool = False,
) -> Tally:
    """Build the seeds and the catalogue under ``folder`` and run every case (or those whose
    command line contains ``match``)."""
    seeds = build_seeds(folder / "seeds")
    cases = [c for c in catalogue(seeds, folder / "cases") if match in c.command_line]
    progress(f"{len(cases)} cases")
    tally = Tally()
    sentinel = seeds.folder / SENTINEL
    for number, case in enumerate(cases, 1):
        if verbose:
            progress(f"[{number}] {case.command_line}")
        outcome, finding = run_case(case, sentinel)
        tally.count(outcome)
        if finding:
            tally.findings.append(finding)
        if number % 50 == 0:
            progress(f"{number}/{len(cases)} cases, {len(tally.findings)} findings")
    return tally


def report(tally: Tally) -> str:
    """The tally and every finding, grouped by the module that likely owns the fix."""
    exits = ", ".join(f"{key}: {count}" for key, count in sorted(tally.by_exit.items()))
    lines = [f"{tally.tried} inputs tried; {exits}; {len(tally.findings)} findings"]
    groups: dict[str, list[Finding]] = {}
    for finding in tally.findings:
        groups.setdefault(finding.owner, []).append(finding)
    for owner in sorted(groups):
        lines.append(f"\n== {owner} ({len(groups[owner])})")
        for finding in groups[owner]:
            first = finding.first_line[:300]
            lines.append(f"- {finding.case.command_line}")
            lines.append(f"    {'; '.join(finding.problems)}")
            if first:
                lines.append(f"    stderr: {first}")
            if finding.where:
                lines.append(f"    at {finding.where}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the catalogue; print the tally and findings; 1 when anything broke the contract."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, help="also write the findings as JSON here")
    parser.add_argument("--keep", type=Path, help="build the files in this folder and keep them")
    parser.add_argument("--match", default="", help="run only cases whose command has this text")
    parser.add_argument("--verbose", action="store_true", help="print each case as it starts")
    args = parser.parse_args(argv)
    if args.keep and args.keep.exists() and any(args.keep.iterdir()):
        parser.error(f"--keep {args.keep} is not empty; give a new or empty folder")
    import torch

    torch.set_num_threads(1)
    started = time.perf_counter()
    with contextlib.ExitStack() as stack:
        folder = args.keep or Path(stack.enter_context(tempfile.TemporaryDirectory()))
        say = lambda text: print(text, file=sys.stderr, flush=True)  # noqa: E731
        tally = run_catalogue(folder, say, args.match, args.verbose)
    print(report(tally))
    print(f"\n({time.perf_counter() - started:.0f} s)")
    if args.out:
        document = {
            "tried": tally.tried,
            "by_exit": tally.by_exit,
            "findings": [f.as_dict() for f in tally.findings],
        }
        args.out.write_text(json.dumps(document, indent=1) + "\n")
    return 1 if tally.findings else 0


if __name__ == "__main__":
    sys.exit(main())
