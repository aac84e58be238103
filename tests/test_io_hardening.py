"""Issue #11 for io.py: format sniffing, writes through devices and links, OS errors while
writing, stale temporaries of killed writers, and hostile NPY / safetensors input."""

from __future__ import annotations

import errno
import io as stdio
import json
import os
import pickle
import re
import stat
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from numpy.lib import format as npy_format
from safetensors.torch import save

from isa_core import io
from isa_core.errors import IsaError

ROOT = Path(__file__).resolve().parents[1]


def npy_bytes(array: np.ndarray, version: tuple[int, int] | None = None) -> bytes:
    buffer = stdio.BytesIO()
    npy_format.write_array(buffer, array, version=version, allow_pickle=False)
    return buffer.getvalue()


def forged_npy(header: dict, body: bytes = b"") -> bytes:
    """An NPY file with the given header dict, whatever it declares, followed by ``body``."""
    buffer = stdio.BytesIO()
    npy_format.write_array_header_1_0(buffer, header)
    return buffer.getvalue() + body


def temporaries(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.name.endswith(".tmp"))


# --- 1. Sniffing by structure -----------------------------------------------------------------


def test_bundle_loads_back_for_every_header_length_mod_256(tmp_path: Path) -> None:
    path = tmp_path / "model.safetensors"
    tensors = {"w": torch.randn(3, 4), "b": torch.arange(5, dtype=torch.float64)}
    seen = set()
    for pad in range(264):
        metadata = {"config": {"layout": [4, 4]}, "step": 3, "pad": "x" * pad}
        io.save_bundle(path, tensors, metadata)
        data = path.read_bytes()
        seen.add(int.from_bytes(data[:8], "little") % 256)
        bundle = io.load_bundle(path)
        assert bundle.metadata == metadata
        assert bundle.tensors.keys() == tensors.keys()
        assert all(torch.equal(bundle.tensors[k], t) for k, t in tensors.items())
    # safetensors pads its header to a multiple of 8, so these are all the lengths it writes;
    # 128 is the one whose first byte is 0x80, the old "pickle" byte.
    assert {0, 128} <= seen and len(seen) >= 32


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_real_pickles_are_still_refused(tmp_path: Path, protocol: int) -> None:
    data = pickle.dumps({"w": np.zeros(3)}, protocol=protocol)
    path = tmp_path / "model.safetensors"
    path.write_bytes(data)
    with pytest.raises(IsaError, match="pickle"):
        io.load_bundle(path)
    with pytest.raises(IsaError, match="pickle"):
        io.load_npy(path)
    with pytest.raises(IsaError, match="pickle"):
        io.read_array(None, stdio.BytesIO(data))


def test_safetensors_starting_with_0x80_is_named_as_safetensors_everywhere(tmp_path: Path) -> None:
    path = tmp_path / "codes.safetensors"
    for pad in range(64):
        io.save_bundle(path, {"mu": torch.zeros(2)}, {"pad": "x" * pad})
        if path.read_bytes()[:1] == b"\x80":
            break
    data = path.read_bytes()
    assert data[:1] == b"\x80"
    with pytest.raises(IsaError, match="safetensors bundle"):
        io.load_npy(path)
    with pytest.raises(IsaError, match="safetensors bundle"):
        io.read_array(None, stdio.BytesIO(data))
    with pytest.raises(IsaError, match="safetensors bundle"):
        io.read_paths(None, stdio.BytesIO(data))


# --- 2. Devices, FIFOs and symlinks are written through, never replaced -------------------------


def test_symlink_stays_a_link_and_its_target_gets_the_bytes(tmp_path: Path) -> None:
    target = tmp_path / "real.npy"
    target.write_bytes(b"old")
    link = tmp_path / "link.npy"
    link.symlink_to(target.name)
    io.write_array(np.arange(3.0), link, stdio.BytesIO())
    assert link.is_symlink() and os.readlink(link) == target.name
    np.testing.assert_array_equal(np.load(target), np.arange(3.0))

    dangling = tmp_path / "dangling.npy"
    dangling.symlink_to("created.npy")
    io.write_array(np.ones(2), dangling, stdio.BytesIO())
    assert dangling.is_symlink()
    np.testing.assert_array_equal(np.load(tmp_path / "created.npy"), np.ones(2))
    assert temporaries(tmp_path) == []


def char_device(tmp_path: Path, name: str) -> Path:
    """/dev/null or /dev/full to write to. As root, a private node with the same numbers, so a
    bug that replaces devices damages only the test's folder (a non-root process cannot
    replace the real ones)."""
    if os.geteuid() != 0:
        return Path("/dev") / name
    node = tmp_path / name
    minor = {"null": 3, "full": 7}[name]
    try:
        os.mknod(node, 0o666 | stat.S_IFCHR, os.makedev(1, minor))
    except PermissionError:
        pytest.skip("this container may not create device nodes")
    return node


def test_dev_null_is_written_not_replaced(tmp_path: Path) -> None:
    null = char_device(tmp_path, "null")
    io.write_array(np.zeros(4), null, stdio.BytesIO())
    io.write_text("hello\n", str(null), stdio.BytesIO())
    assert stat.S_ISCHR(null.lstat().st_mode)
    assert temporaries(null.parent) == []


def test_link_to_a_device_writes_the_device(tmp_path: Path) -> None:
    null = char_device(tmp_path, "null")
    link = tmp_path / "link"
    link.symlink_to(null)
    io.write_array(np.zeros(4), link, stdio.BytesIO())
    assert link.is_symlink() and stat.S_ISCHR(null.lstat().st_mode)


def test_fifo_stays_a_fifo_and_the_reader_gets_the_array(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.npy"
    os.mkfifo(fifo)
    received: list[bytes] = []
    reader = threading.Thread(target=lambda: received.append(fifo.read_bytes()), daemon=True)
    reader.start()
    io.write_array(np.arange(4.0), fifo, stdio.BytesIO())
    reader.join(timeout=600)  # a hang guard: the writer blocks until the reader opens
    assert stat.S_ISFIFO(fifo.lstat().st_mode)
    np.testing.assert_array_equal(np.load(stdio.BytesIO(received[0])), np.arange(4.0))


def test_dev_stdout_reaches_a_pipe_or_a_redirected_file(tmp_path: Path) -> None:
    # a link made like /dev/stdout, so a bug cannot replace the real one
    stdout_link = tmp_path / "stdout"
    stdout_link.symlink_to("/proc/self/fd/1")
    code = (
        "import sys, numpy as np; from isa_core import io; "
        "io.write_array(np.arange(3.0), sys.argv[1], sys.stdout.buffer)"
    )
    command = [sys.executable, "-c", code, str(stdout_link)]
    piped = subprocess.run(command, capture_output=True, check=True, cwd=ROOT)
    np.testing.assert_array_equal(np.load(stdio.BytesIO(piped.stdout)), np.arange(3.0))
    redirected = tmp_path / "out.npy"
    with redirected.open("wb") as stdout:
        subprocess.run(command, stdout=stdout, check=True, cwd=ROOT)
    np.testing.assert_array_equal(np.load(redirected), np.arange(3.0))
    assert stdout_link.is_symlink()


# --- 3. OS errors while writing -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "fix"),
    [
        (errno.ENOSPC, "free space or write elsewhere"),
        (errno.EDQUOT, "quota"),
        (errno.EROFS, "write elsewhere"),
        (errno.EACCES, "permissions"),
        (errno.EFBIG, "too large"),
    ],
)
def test_failing_fsync_keeps_the_old_file_and_no_temporary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: int, fix: str
) -> None:
    path = tmp_path / "keep.npy"
    path.write_bytes(b"precious")

    def failing_fsync(fd: int) -> None:
        raise OSError(code)  # as bare as it comes: errno attribute unset

    monkeypatch.setattr(os, "fsync", failing_fsync)
    with pytest.raises(IsaError) as caught:
        io.write_array(np.zeros(3), path, stdio.BytesIO())
    message = str(caught.value)
    assert str(path) in message and os.strerror(code) in message and fix in message
    assert path.read_bytes() == b"precious"
    assert temporaries(tmp_path) == []


def test_failing_write_keeps_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    path = tmp_path / "keep.npy"
    path.write_bytes(b"precious")
    with (
        pytest.raises(IsaError, match="No space left on device; free space"),
        io.atomic_write(path) as handle,
    ):
        handle.write(b"partial")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    assert path.read_bytes() == b"precious"
    assert temporaries(tmp_path) == []


def test_dev_full_gives_an_error_and_stays_a_device(tmp_path: Path) -> None:
    full = char_device(tmp_path, "full")
    with pytest.raises(IsaError, match=f"{full}: No space left on device; free space"):
        io.write_array(np.zeros(10), full, stdio.BytesIO())
    assert stat.S_ISCHR(full.lstat().st_mode)


def test_cli_out_dev_full_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from isa_cli.main import main

    full = char_device(tmp_path, "full")
    with pytest.raises(SystemExit) as done:
        main(["prior-sample", "-n", "3", "--layout", "2", "-o", str(full)])
    err = capsys.readouterr().err
    assert done.value.code == 2 and "No space left on device" in err and "internal" not in err
    assert stat.S_ISCHR(full.lstat().st_mode)


def test_names_too_long(tmp_path: Path) -> None:
    with pytest.raises(IsaError, match="shorter"):
        io.write_array(np.zeros(2), tmp_path / ("a" * 300), stdio.BytesIO())
    # the longest legal name still gets a temporary whose name fits
    longest = tmp_path / ("b" * 255)
    io.write_array(np.zeros(2), longest, stdio.BytesIO())
    np.testing.assert_array_equal(np.load(longest), np.zeros(2))


# --- 4. Stale temporaries of killed writers -----------------------------------------------------

KILLED_WRITER = (
    "import os, signal, sys\n"
    "from isa_core import io\n"
    "writer = io.atomic_write(sys.argv[1])\n"
    "handle = writer.__enter__()\n"
    "handle.write(b'partial')\n"
    "handle.flush()\n"
    "os.kill(os.getpid(), signal.SIGKILL)\n"
)


def killed_write(target: Path) -> tuple[Path, int]:
    """Run a writer that is SIGKILLed mid-write; return the temporary it left and its pid."""
    before = set(temporaries(target.parent))
    writer = subprocess.Popen([sys.executable, "-c", KILLED_WRITER, str(target)], cwd=ROOT)
    assert writer.wait() == -9
    (left,) = set(temporaries(target.parent)) - before
    return left, writer.pid


def test_killed_write_leaves_the_old_file_and_the_next_write_cleans_up(tmp_path: Path) -> None:
    target = tmp_path / "model.npy"
    target.write_bytes(b"precious")
    stale, dead_pid = killed_write(target)
    assert target.read_bytes() == b"precious"
    assert f"-{dead_pid}-" in stale.name
    live = stale.with_name(stale.name.replace(f"-{dead_pid}-", f"-{os.getpid()}-"))
    live.write_bytes(b"a write in progress")
    foreign = stale.with_name(re.sub(r"\.isa-[0-9a-f]{8}-", ".isa-zzzzzzzz-", stale.name))
    foreign.write_bytes(b"another host's write")
    other_host = stale.with_name(re.sub(r"\.isa-[0-9a-f]{8}-", ".isa-00000000-", stale.name))
    other_host.write_bytes(b"another host's write")

    io.write_array(np.ones(2), target, stdio.BytesIO())
    np.testing.assert_array_equal(np.load(target), np.ones(2))
    assert not stale.exists()
    assert live.exists() and foreign.exists() and other_host.exists()


def test_remove_stale_temporaries_of_every_target_in_a_folder(tmp_path: Path) -> None:
    first, _ = killed_write(tmp_path / "model.safetensors")
    second, dead_pid = killed_write(tmp_path / "state.safetensors")
    live = second.with_name(second.name.replace(f"-{dead_pid}-", f"-{os.getpid()}-"))
    live.write_bytes(b"")
    unrelated = tmp_path / ".notes.tmp"
    unrelated.write_bytes(b"")
    assert sorted(io.remove_stale_temporaries(tmp_path)) == sorted([first, second])
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([live.name, unrelated.name])
    assert io.remove_stale_temporaries(tmp_path / "missing") == []


# --- 5. Hostile NPY and safetensors input -------------------------------------------------------


def test_every_flipped_header_byte_loads_or_is_refused() -> None:
    data = npy_bytes(np.arange(12.0).reshape(3, 4))
    header_end = data.index(b"\n") + 1
    for position in range(header_end):
        for mask in (0x01, 0x10, 0x20, 0x80):
            mutated = bytearray(data)
            mutated[position] ^= mask
            try:
                io.load_npy(bytes(mutated), "flipped.npy")
            except IsaError as error:
                assert "\n" not in str(error)


@pytest.mark.parametrize(
    "shape", [(10**6, 10**6), (2**62,), (2**70,), (0, 2**70), (3, -2), (10**4,) * 8]
)
def test_a_huge_or_bad_shape_is_refused_before_allocating(shape: tuple[int, ...]) -> None:
    data = forged_npy({"descr": "<f8", "fortran_order": False, "shape": shape}, b"\0" * 64)
    with pytest.raises(IsaError, match="corrupt"):
        io.load_npy(data, "forged.npy")


@pytest.mark.parametrize(
    "descr",
    ["|O", [("a", "<f8"), ("b", "<i4")], "<U3", "|S4", "<M8[s]", "|V8", [("x", "<f8", (2,))]],
)
def test_non_numeric_dtypes_are_refused(descr: object) -> None:
    data = forged_npy({"descr": descr, "fortran_order": False, "shape": (2,)}, b"\0" * 64)
    with pytest.raises(IsaError, match=r"object array|numeric"):
        io.load_npy(data, "odd.npy")


def test_fortran_order_and_version_2_arrays_load() -> None:
    array = np.asfortranarray(np.arange(12.0).reshape(3, 4))
    np.testing.assert_array_equal(io.load_npy(npy_bytes(array)), array)
    np.testing.assert_array_equal(io.load_npy(npy_bytes(array, version=(2, 0))), array)
    for dtype in (np.float32, np.int64, np.uint8, np.bool_, np.complex64):
        plain = np.ones((2, 3), dtype=dtype)
        np.testing.assert_array_equal(io.load_npy(npy_bytes(plain)), plain)


def safetensors_with_header(header: dict, body: bytes) -> bytes:
    text = json.dumps(header).encode()
    return len(text).to_bytes(8, "little") + text + body


@pytest.mark.parametrize(
    ("header", "body", "message"),
    [
        ({"__metadata__": {"isa": "[1, 2]"}}, b"", "not a JSON object"),
        ({"__metadata__": {"isa": "3"}}, b"", "not a JSON object"),
        ({"__metadata__": {"isa": "[[[[" * 5000}}, b"", "not JSON"),
        ({"__metadata__": {"other": "{}"}}, b"", "no 'isa' metadata"),
        (
            {
                "__metadata__": {"isa": "{}"},
                "w": {"dtype": "F32", "shape": [1000], "data_offsets": [0, 4000]},
            },
            b"\0" * 16,
            "corrupt or truncated",
        ),
        (
            {"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}, "__metadata__": 5},
            b"\0" * 16,
            "corrupt or truncated",
        ),
    ],
)
def test_bad_safetensors_headers(tmp_path: Path, header: dict, body: bytes, message: str) -> None:
    path = tmp_path / "bad.safetensors"
    path.write_bytes(safetensors_with_header(header, body))
    with pytest.raises(IsaError, match=message):
        io.load_bundle(path)


def test_header_that_is_not_an_object_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "list.safetensors"
    text = b"[1, 2, 3]"
    path.write_bytes(len(text).to_bytes(8, "little") + text)
    with pytest.raises(IsaError, match="not a safetensors file"):
        io.load_bundle(path)


def test_nul_bytes_in_paths(tmp_path: Path) -> None:
    with pytest.raises(IsaError, match="NUL byte"):
        io.read_array("a\0b.npy", stdio.BytesIO())
    with pytest.raises(IsaError, match="NUL byte"):
        io.read_array(None, stdio.BytesIO(b"runs/a\0/codes.npy\n"))
    with pytest.raises(IsaError, match="NUL byte"):
        io.read_paths(None, stdio.BytesIO(b"ok.safetensors\nbad\0.safetensors\n"))
    with pytest.raises(IsaError, match="NUL byte"):
        io.load_bundle("model\0.safetensors")
    with pytest.raises(IsaError, match="NUL byte"):
        io.load_npy(Path("x\0.npy"))
    with pytest.raises(IsaError, match="NUL byte"):
        io.write_array(np.zeros(2), str(tmp_path / "out\0.npy"), stdio.BytesIO())


# --- Fuzz: random and mutated files either load or raise IsaError -------------------------------


def _seed_npys() -> list[bytes]:
    return [
        npy_bytes(np.arange(12.0).reshape(3, 4)),
        npy_bytes(np.asfortranarray(np.arange(6, dtype=np.float32).reshape(2, 3))),
        npy_bytes(np.array(3, dtype=np.int64)),
        npy_bytes(np.zeros((0, 5))),
        npy_bytes(np.ones(4, dtype=np.bool_), version=(2, 0)),
    ]


def _seed_bundles() -> list[bytes]:
    metadata = json.dumps({"config": {"layout": [2, 2], "tree": "2(2(2),2(2))"}, "step": 5})
    return [
        save({"w": torch.randn(3, 2), "b": torch.zeros(2)}, metadata={"isa": metadata}),
        save({"mu": torch.arange(4.0, dtype=torch.float64)}, metadata={"isa": "{}"}),
    ]


HEADER_BYTES = b"0123456789(),'{}[]: -.e\"<>|fFTU\x00\x80\xff"


@st.composite
def mutated(draw: st.DrawFn, seeds: list[bytes]) -> bytes:
    """A valid file with a few bytes flipped, cut, spliced in or deleted, mostly in its header."""
    data = bytearray(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(1, 4))):
        if not data:
            break
        end = len(data) if draw(st.booleans()) else min(len(data), 160)
        at = draw(st.integers(0, end - 1))
        op = draw(st.sampled_from(["flip", "set", "truncate", "splice", "delete"]))
        if op == "flip":
            data[at] ^= draw(st.integers(1, 255))
        elif op == "set":
            data[at] = draw(st.sampled_from(HEADER_BYTES))
        elif op == "truncate":
            del data[at:]
        elif op == "splice":
            data[at:at] = draw(st.binary(min_size=1, max_size=24))
        else:
            del data[at : at + draw(st.integers(1, 24))]
    return bytes(data)


def random_files(seeds: list[bytes]) -> st.SearchStrategy[bytes]:
    prefixed = st.tuples(st.sampled_from([io.NPY_MAGIC, b"\x80\x04", b"PK\x03\x04"]), st.binary())
    lengthy = st.tuples(st.integers(0, 2**64 - 1), st.binary(max_size=200))
    return st.one_of(
        mutated(seeds),
        st.binary(max_size=300),
        prefixed.map(b"".join),
        lengthy.map(lambda t: t[0].to_bytes(8, "little") + b"{" + t[1]),
    )


FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def loads_or_refuses(loader, data: bytes, folder: Path) -> None:
    path = folder / "input.bin"
    path.write_bytes(data)
    try:
        loader(path)
    except IsaError as error:
        assert "\n" not in str(error)


@pytest.fixture(scope="module")
def fuzz_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


@FUZZ
@given(data=random_files(_seed_npys() + _seed_bundles()))
def test_fuzz_load_npy(fuzz_folder: Path, data: bytes) -> None:
    loads_or_refuses(io.load_npy, data, fuzz_folder)


@FUZZ
@given(data=random_files(_seed_bundles() + _seed_npys()[:1]))
def test_fuzz_load_bundle(fuzz_folder: Path, data: bytes) -> None:
    loads_or_refuses(io.load_bundle, data, fuzz_folder)
