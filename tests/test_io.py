"""File formats and streams: NPY in and out, safetensors bundles, atomic writes, refusals."""

from __future__ import annotations

import io as stdio
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save

from isa_core import io
from isa_core.errors import IsaError


class FakeTerminal(stdio.BytesIO):
    def isatty(self) -> bool:
        return True


def npy_bytes(array: np.ndarray) -> bytes:
    buffer = stdio.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def test_read_array_from_path_dash_and_stdin(tmp_path: Path) -> None:
    array = np.arange(6.0).reshape(3, 2)
    path = tmp_path / "a.npy"
    np.save(path, array)
    np.testing.assert_array_equal(io.read_array(str(path), stdio.BytesIO()), array)
    np.testing.assert_array_equal(io.read_array("-", stdio.BytesIO(npy_bytes(array))), array)
    np.testing.assert_array_equal(io.read_array(None, stdio.BytesIO(npy_bytes(array))), array)
    # stdin holding a path: the first non-empty line
    stdin = stdio.BytesIO(f"\n  {path}\nignored\n".encode())
    np.testing.assert_array_equal(io.read_array(None, stdin), array)


def test_stdin_problems() -> None:
    with pytest.raises(IsaError, match="empty"):
        io.read_array(None, stdio.BytesIO(b""))
    with pytest.raises(IsaError, match="no input"):
        io.read_array(None, FakeTerminal())
    with pytest.raises(IsaError, match="pickle"):
        io.read_array(None, stdio.BytesIO(pickle.dumps([1, 2, 3])))


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (pickle.dumps(np.zeros(3)), "pickle"),
        (b"PK\x03\x04rest-of-a-zip", "zip archive"),
        (b"hello world\n", "not an NPY file"),
        (npy_bytes(np.zeros((100, 3)))[:150], "truncated or corrupt"),
        (npy_bytes(np.array([{"a": 1}], dtype=object)), "object array"),
    ],
)
def test_bad_npy_files(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "bad.npy"
    path.write_bytes(content)
    with pytest.raises(IsaError, match=message):
        io.read_array(str(path), stdio.BytesIO())


def test_missing_file_and_folder(tmp_path: Path) -> None:
    with pytest.raises(IsaError, match="no such file"):
        io.read_array(str(tmp_path / "missing.npy"), stdio.BytesIO())
    with pytest.raises(IsaError, match="folder"):
        io.read_array(str(tmp_path), stdio.BytesIO())


def test_write_array_to_stdout_refuses_terminal(tmp_path: Path) -> None:
    out = stdio.BytesIO()
    io.write_array(np.ones(3), None, out)
    np.testing.assert_array_equal(np.load(stdio.BytesIO(out.getvalue())), np.ones(3))
    with pytest.raises(IsaError, match="terminal"):
        io.write_array(np.ones(3), None, FakeTerminal())


def test_atomic_write_never_damages_existing_file(tmp_path: Path) -> None:
    path = tmp_path / "keep.npy"
    path.write_bytes(b"precious")
    with pytest.raises(RuntimeError), io.atomic_write(path) as handle:
        handle.write(b"partial")
        raise RuntimeError("crash mid-write")
    assert path.read_bytes() == b"precious"
    assert [p.name for p in tmp_path.iterdir()] == ["keep.npy"]  # no temporary left behind
    io.write_array(np.zeros(2), path, stdio.BytesIO())
    np.testing.assert_array_equal(np.load(path), np.zeros(2))
    with pytest.raises(IsaError, match="does not exist"):
        io.write_array(np.zeros(2), tmp_path / "no" / "x.npy", stdio.BytesIO())


def test_bundle_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "model.safetensors"
    tensors = {"w": torch.randn(3, 4), "p": torch.tensor([2.1, 2.2], dtype=torch.float64)}
    metadata = {"config": {"layout": [4, 4]}, "step": 7}
    io.save_bundle(path, tensors, metadata)
    bundle = io.load_bundle(path)
    assert bundle.metadata == metadata
    for name, tensor in tensors.items():
        assert torch.equal(bundle.tensors[name], tensor)


def test_bad_bundles(tmp_path: Path) -> None:
    good = tmp_path / "good.safetensors"
    io.save_bundle(good, {"w": torch.zeros(100)}, {"a": 1})
    data = good.read_bytes()
    cases = {
        "truncated.safetensors": (data[: len(data) - 50], "truncated"),
        "tiny.safetensors": (b"abc", "truncated"),
        "garbage.safetensors": (b"\x10\x00\x00\x00\x00\x00\x00\x00{not json here!!", "corrupt"),
        "pickle.safetensors": (pickle.dumps({"w": 1}), "pickle"),
        "torch.safetensors": (b"PK\x03\x04....", "zip archive"),
        "array.safetensors": (npy_bytes(np.zeros(3)), "NPY array"),
        "foreign.safetensors": (save({"w": torch.zeros(2)}), "no 'isa' metadata"),
    }
    for name, (content, message) in cases.items():
        path = tmp_path / name
        path.write_bytes(content)
        with pytest.raises(IsaError, match=message):
            io.load_bundle(path)


def test_a_bundle_without_isa_metadata_may_be_read_as_empty_metadata(tmp_path: Path) -> None:
    """Codes from other tools carry no `isa` metadata; metadata that is not an object is still
    refused."""
    from safetensors.torch import save_file

    path = tmp_path / "foreign.safetensors"
    save_file({"mean": torch.zeros(2, 3)}, path)
    bundle = io.load_bundle(path, require_metadata=False)
    assert bundle.metadata == {} and bundle.tensors["mean"].shape == (2, 3)
    with pytest.raises(IsaError, match="no 'isa' metadata"):
        io.load_bundle(path)
    save_file({"mean": torch.zeros(2, 3)}, path, metadata={"isa": "[1]"})
    with pytest.raises(IsaError, match="not a JSON object"):
        io.load_bundle(path, require_metadata=False)


def test_save_figure_requires_png(tmp_path: Path) -> None:
    from matplotlib.figure import Figure

    with pytest.raises(IsaError, match="PNG"):
        io.save_figure(Figure(), tmp_path / "x.pdf")
    io.save_figure(Figure(figsize=(1, 1)), tmp_path / "x.png")
    assert (tmp_path / "x.png").read_bytes().startswith(b"\x89PNG")


def test_atomic_write_gives_normal_permissions(tmp_path: Path) -> None:
    import os

    path = tmp_path / "out.npy"
    io.write_array(np.zeros(2), path, stdio.BytesIO())
    mask = os.umask(0)
    os.umask(mask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~mask
    path.chmod(0o640)
    io.write_array(np.ones(2), path, stdio.BytesIO())
    assert path.stat().st_mode & 0o777 == 0o640


# -- data files: opened once, sniffed from a bounded prefix, .npz entries checked one by one ----


class CountingReads:
    """A file handle that records the size of every read, to show what a reader looked at."""

    def __init__(self, handle) -> None:
        self.handle = handle
        self.reads: list[int] = []

    def read(self, size: int = -1) -> bytes:
        data = self.handle.read(size)
        self.reads.append(len(data))
        return data

    def __getattr__(self, name: str):
        return getattr(self.handle, name)


@pytest.mark.parametrize(
    ("content", "kind"),
    [
        (b"PK\x03\x04" + b"\0" * 100, "zip"),
        (npy_bytes(np.zeros(3)), "npy"),
        (pickle.dumps({"w": 1}, protocol=4), "pickle"),
        (save({"w": torch.zeros(1000)}), "safetensors"),
        (b"", "other"),
    ],
)
def test_open_input_names_the_format(tmp_path: Path, content: bytes, kind: str) -> None:
    path = tmp_path / "file"
    path.write_bytes(content)
    handle, found = io.open_input(path)
    with handle:
        assert found == kind
        assert handle.read() == content  # the caller gets the file from its first byte


def test_open_input_reads_a_bounded_prefix_of_a_large_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "huge.npz"
    with path.open("wb") as handle:
        handle.truncate(1 << 30)  # 1 GiB, sparse: reading it whole would show
    handles: list[CountingReads] = []
    real_open = open

    def counting_open(file, *args, **kwargs):
        handles.append(CountingReads(real_open(file, *args, **kwargs)))
        return handles[-1]

    monkeypatch.setattr(io, "open", counting_open, raising=False)
    handle, kind = io.open_input(path)
    handle.close()
    assert kind == "other" and len(handles) == 1
    assert sum(handles[0].reads) <= 64
    with pytest.raises(IsaError, match=r"huge\.npz is not a readable \.npz archive"):
        io.open_npz(path)


def test_open_input_refuses_what_cannot_be_read(tmp_path: Path) -> None:
    with pytest.raises(IsaError, match="no such file"):
        io.open_input(tmp_path / "missing.npz")
    with pytest.raises(IsaError, match="folder"):
        io.open_input(tmp_path)
    with pytest.raises(IsaError, match="NUL byte"):
        io.open_input("a\0b.npz")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (pickle.dumps({"images": np.zeros(3)}, protocol=4), "Python pickle"),
        (npy_bytes(np.zeros(3)), "NPY array, not a .npz archive"),
        (b"hello world\n", "not a readable .npz archive"),
        (b"PK\x03\x04 truncated zip", "not a readable .npz archive"),
    ],
)
def test_open_npz_refuses_other_formats(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "data.npz"
    path.write_bytes(content)
    with pytest.raises(IsaError, match=message):
        io.open_npz(path)


def test_npz_entries_are_read_and_checked_one_at_a_time(tmp_path: Path) -> None:
    path = tmp_path / "data.npz"
    images = np.arange(2 * 4 * 4, dtype=np.uint8).reshape(2, 4, 4)
    names = np.array(["a", "bb"])
    np.savez(path, images=images, names=names, fortran=np.asfortranarray(np.ones((3, 2))))
    with io.open_npz(path) as archive:
        assert set(archive.files) == {"images", "names", "fortran"}
        header = archive.header("images")
        assert (header.shape, header.dtype, header.nbytes) == ((2, 4, 4), np.uint8, 32)
        np.testing.assert_array_equal(archive.array("images"), images)
        np.testing.assert_array_equal(archive.array("names", "U", "strings"), names)
        np.testing.assert_array_equal(archive.array("fortran"), np.ones((3, 2)))
        assert b"".join(archive.chunks("images", 5)) == images.tobytes()
        assert [len(c) for c in archive.chunks("images", 12)] == [12, 12, 8]
        with pytest.raises(IsaError, match="entry 'images' has dtype uint8; expected strings"):
            archive.array("images", "U", "strings")
        with pytest.raises(IsaError, match=r"has no 'factors' entry \(it has: "):
            archive.array("factors")


def test_npz_entries_with_objects_or_forged_sizes_are_refused(tmp_path: Path) -> None:
    import zipfile

    path = tmp_path / "data.npz"
    np.savez(path, objects=np.array([{"a": 1}], dtype=object))
    header = np.lib.format.header_data_from_array_1_0(np.zeros(6, np.int64))
    header["shape"] = (10**15,)
    member = stdio.BytesIO()
    np.lib.format.write_array_header_1_0(member, header)
    with zipfile.ZipFile(path, "a") as archive:
        archive.writestr("huge.npy", member.getvalue() + b"\0" * 48)
        archive.writestr("garbage.npy", b"\x93NUMPY\x01\x00garbage")
    with io.open_npz(path) as archive:
        with pytest.raises(IsaError, match="entry 'objects' holds a pickled object array"):
            archive.array("objects")
        with pytest.raises(IsaError, match=r"entry 'huge' is a truncated .* declares"):
            archive.array("huge")
        with pytest.raises(IsaError, match="entry 'huge' is a truncated"):
            list(archive.chunks("huge", 1024))
        with pytest.raises(IsaError, match="entry 'garbage' is a corrupt NPY file"):
            archive.header("garbage")
