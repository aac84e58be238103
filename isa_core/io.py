"""The one place for file formats: NPY arrays, .npz archives, safetensors bundles, stdin/stdout,
atomic writes, and the refusal of pickles and other foreign formats.

Conventions (DESIGN.md): arrays travel as NPY; bundles are safetensors files with a JSON string
under the metadata key ``isa``; a positional input is a path, or ``-``/absent for stdin, where
bytes starting with the NPY magic are an array and anything else is text whose first non-empty
line is a path. Nothing is ever unpickled. Every write to a regular file goes to a temporary file
in the target's folder and is renamed into place, so a failed write never damages an existing
file; devices and FIFOs (``/dev/null``, ``/dev/stdout``) are written in place, never replaced.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import json
import lzma
import math
import os
import re
import socket
import stat
import tempfile
import tokenize
import zipfile
import zlib
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import numpy as np
from numpy.lib import format as npy_format
from safetensors import SafetensorError

from isa_core.errors import IsaError

if TYPE_CHECKING:  # torch is imported where bundles are read or written, so `--help` stays fast
    import torch

__all__ = [
    "NPY_MAGIC",
    "Bundle",
    "NpyHeader",
    "NpzArchive",
    "atomic_write",
    "load_bundle",
    "load_npy",
    "open_input",
    "open_npz",
    "read_array",
    "read_paths",
    "read_source",
    "refuse_foreign",
    "remove_stale_temporaries",
    "save_bundle",
    "save_figure",
    "write_array",
    "write_text",
]

NPY_MAGIC = b"\x93NUMPY"
_ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06")  # a first entry, or an empty archive
_METADATA_KEY = "isa"
_NUMERIC_KINDS = "biufc"  # bool, signed and unsigned integers, floats, complex


# ---------------------------------------------------------------------------------------------
# Telling formats apart


def _sniff(data: bytes, size: int | None = None) -> str:
    """Name the format of ``data`` from its structure: npy, zip, safetensors, pickle or other.

    ``data`` may be the first bytes of a file of ``size`` bytes (default: all of it). Safetensors
    is tested before pickle: its header length (a little-endian u64) starts with the byte 0x80
    whenever that length is 128 mod 256.
    """
    size = len(data) if size is None else size
    if data.startswith(NPY_MAGIC):
        return "npy"
    if data.startswith(_ZIP_MAGICS):
        return "zip"
    if data[8:9] == b"{" and 8 + int.from_bytes(data[:8], "little") <= size:
        return "safetensors"
    if data[:1] == b"\x80" and data[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        return "pickle"
    return "other"


def refuse_foreign(kind: str, name: str, expected: str) -> None:
    """Raise a clear error when ``name`` holds a known format (``kind`` from sniffing) other
    than ``expected``; the one place that refuses pickles, archives and arrays by their bytes."""
    if kind == "pickle":
        raise IsaError(
            f"{name} is a Python pickle; isa never loads pickles (they can run code): "
            f"save it as {expected} instead"
        )
    if kind == "zip":
        raise IsaError(
            f"{name} is a zip archive (an .npz or a torch.save file), not {expected}; "
            f"export the array with numpy.save or safetensors"
        )
    if kind == "safetensors":
        raise IsaError(
            f"{name} is a safetensors bundle (a model, state or codes file), not {expected}; "
            "give the command that reads it the file's path"
        )
    if kind == "npy":
        raise IsaError(f"{name} is an NPY array, not {expected}")


# ---------------------------------------------------------------------------------------------
# Reading


def _show(path: Path | str) -> str:
    """A path for a one-line message (a NUL byte shown as \\0)."""
    return str(path).replace("\0", "\\0")


def _as_path(text: str | os.PathLike) -> Path:
    """A Path from user input, refusing NUL bytes, which no file name can hold."""
    if "\0" in str(text):
        raise IsaError(f"path contains a NUL byte: '{_show(text)}'; give a real file path")
    return Path(text)


def _read_error(path: Path, error: OSError) -> IsaError:
    """The one-line IsaError for an OSError while reading ``path``."""
    if isinstance(error, FileNotFoundError):
        return IsaError(f"{path}: no such file; check the path")
    if isinstance(error, IsADirectoryError):
        return IsaError(f"{path} is a folder; give a file")
    return IsaError(f"cannot read {path}: {error.strerror or error}; check the path")


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as error:
        raise _read_error(path, error) from None
    except ValueError as error:  # Path.read_bytes refuses NUL bytes with a ValueError
        _as_path(path)  # raises the NUL-byte message when that is the reason
        raise IsaError(f"cannot read {path}: {error}; check the path") from None


# What numpy's header parser raises on a damaged header (it tokenizes and literal_evals it).
_HEADER_ERRORS = (
    ValueError,
    TypeError,
    SyntaxError,
    tokenize.TokenError,
    OverflowError,
    RecursionError,
    EOFError,
)


@dataclass(frozen=True)
class NpyHeader:
    """What an NPY header declares: the array's shape, dtype and memory order."""

    shape: tuple[int, ...]
    dtype: np.dtype
    fortran_order: bool

    @property
    def nbytes(self) -> int:
        """Bytes of array data the header promises (Python ints: no overflow)."""
        return math.prod(self.shape) * self.dtype.itemsize


def _npy_header(stream: BinaryIO, name: str) -> NpyHeader:
    """Parse the NPY header at the start of ``stream`` without loading anything; the stream is
    left at the array data."""
    try:
        version = npy_format.read_magic(stream)
        if version == (1, 0):
            shape, fortran, dtype = npy_format.read_array_header_1_0(stream)
        elif version == (2, 0):
            shape, fortran, dtype = npy_format.read_array_header_2_0(stream)
        else:
            version = None
    except _HEADER_ERRORS as error:
        first = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise IsaError(f"{name} is a corrupt NPY file (bad header: {first})") from None
    if version is None:
        raise IsaError(
            f"{name} uses an NPY format version isa does not read; save it with numpy.save"
        )
    return NpyHeader(shape, dtype, fortran)


def _check_npy(header: NpyHeader, present: int, name: str, numeric: bool = True) -> None:
    """Refuse pickled objects, non-numeric dtypes (when ``numeric``) and shapes whose bytes are
    not all ``present``, before anything is allocated (a forged header could ask for terabytes)."""
    shape, dtype = header.shape, header.dtype
    if dtype.hasobject:
        raise IsaError(
            f"{name} holds a pickled object array; isa never loads pickles (they can run code)"
        )
    if numeric and (dtype.kind not in _NUMERIC_KINDS or dtype.fields is not None):
        raise IsaError(
            f"{name} holds {dtype} data, not numbers; isa reads numeric NPY arrays "
            "(float, int, bool) only: convert it with numpy first"
        )
    if any(size < 0 for size in shape):
        raise IsaError(f"{name} is a corrupt NPY file (negative size in shape {shape})")
    if header.nbytes > present:
        raise IsaError(
            f"{name} is a truncated or corrupt NPY file: its header declares {dtype} shape "
            f"{shape} ({header.nbytes} bytes) but only {max(0, present)} bytes follow"
        )


def load_npy(data: bytes | Path, name: str | None = None) -> np.ndarray:
    """Load one numeric NPY array from bytes or a path, refusing pickles and forged headers."""
    if isinstance(data, Path):
        name = name or _show(data)
        data = _read_bytes(data)
    name = name or "input"
    kind = _sniff(data)
    if kind != "npy":
        refuse_foreign(kind, name, "an NPY file")
        raise IsaError(f"{name} is not an NPY file (no NPY header); write arrays with numpy.save")
    buffer = io.BytesIO(data)
    _check_npy(_npy_header(buffer, name), len(data) - buffer.tell(), name)
    try:
        return np.load(io.BytesIO(data), allow_pickle=False)
    except (ValueError, TypeError, OverflowError, EOFError, OSError) as error:
        first = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise IsaError(f"{name} is a truncated or corrupt NPY file ({first})") from None


def _read_stdin(stdin: BinaryIO, what: str) -> tuple[bytes, str]:
    """All of stdin and its sniffed format, refusing a terminal (nothing piped)."""
    if _is_terminal(stdin):
        raise IsaError(f"no input: give a file path, or pipe {what} into stdin")
    data = stdin.read()
    return data, _sniff(data)


def read_source(arg: str | None, stdin: BinaryIO) -> Path | bytes:
    """Resolve a positional input: a path, or ``-``/None for stdin.

    On stdin, bytes starting with the NPY magic are returned as they are (an array); otherwise
    the first non-empty text line is taken as a path.
    """
    if arg not in (None, "-"):
        return _as_path(arg)
    data, kind = _read_stdin(stdin, "an array or a path")
    if kind == "npy":
        return data
    refuse_foreign(kind, "stdin", "an NPY array or a path")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise IsaError("stdin holds neither an NPY array nor a path; pipe one of them") from None
    for line in text.splitlines():
        if line.strip():
            return _as_path(line.strip())
    raise IsaError("stdin is empty: pipe an NPY array or a file path, or give a path")


def read_paths(arg: str | None, stdin: BinaryIO) -> list[Path]:
    """A path argument, or every non-empty line of stdin (``ls runs/*/model.safetensors | ...``)."""
    if arg not in (None, "-"):
        return [_as_path(arg)]
    data, kind = _read_stdin(stdin, "paths")
    if kind == "npy":
        raise IsaError("stdin holds an NPY array; this command reads file paths")
    refuse_foreign(kind, "stdin", "file paths (one per line)")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise IsaError("stdin holds binary data, not file paths") from None
    paths = [_as_path(line.strip()) for line in text.splitlines() if line.strip()]
    if not paths:
        raise IsaError("stdin is empty: pipe file paths (one per line) or give a path")
    return paths


def read_array(arg: str | None, stdin: BinaryIO) -> np.ndarray:
    """Read an NPY array from a path, ``-`` or stdin (array bytes or a path line)."""
    source = read_source(arg, stdin)
    if isinstance(source, Path):
        return load_npy(source)
    return load_npy(source, "stdin")


def _is_terminal(stream: Any) -> bool:
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty and isatty())
    except ValueError:
        return False


# ---------------------------------------------------------------------------------------------
# Data files: opened once, told apart by their first bytes; .npz entries read one at a time

_SNIFF_BYTES = 16  # every magic number above, and a safetensors header length

# What a damaged or unusual zip archive raises while it is opened or an entry is read.
_ARCHIVE_ERRORS = (
    zipfile.BadZipFile,
    zlib.error,
    lzma.LZMAError,
    OSError,
    EOFError,
    ValueError,
    NotImplementedError,  # an unsupported compression method
    RuntimeError,  # an encrypted entry
)


def open_input(path: Path | str) -> tuple[BinaryIO, str]:
    """Open a file for reading and name its format from its first bytes (as ``_sniff``), so a
    reader opens it once and never reads a whole file to tell formats apart."""
    path = _as_path(path)
    try:
        handle = open(path, "rb")  # noqa: SIM115  (returned to the caller, who closes it)
    except OSError as error:
        raise _read_error(path, error) from None
    try:
        head = handle.read(_SNIFF_BYTES)
        size = os.fstat(handle.fileno()).st_size
        handle.seek(0)
    except OSError as error:
        handle.close()
        raise _read_error(path, error) from None
    return handle, _sniff(head, size)


class NpzArchive:
    """An open .npz archive (a zip of NPY entries), read without pickles: each entry's NPY
    header is checked before its data is read, so a forged size is refused unallocated."""

    def __init__(self, handle: BinaryIO, kind: str, path: Path) -> None:
        """``handle`` and ``kind`` as :func:`open_input` gives them; the archive owns the handle
        and closes it (also when the archive cannot be read)."""
        self.path = path
        self.name = _show(path)
        self._handle = handle
        try:
            if kind != "zip":
                refuse_foreign(kind, self.name, "a .npz archive")
                raise IsaError(
                    f"{self.name} is not a readable .npz archive (no zip header: empty, corrupt "
                    "or another format)"
                )
            try:
                self._zip = zipfile.ZipFile(handle)
            except _ARCHIVE_ERRORS as error:
                raise IsaError(
                    f"{self.name} is not a readable .npz archive (truncated or corrupt: {error})"
                ) from None
        except BaseException:
            handle.close()
            raise
        self._names = set(self._zip.namelist())
        # entry names as numpy gives them: "images.npy" is the entry "images"
        self.files = tuple(name.removesuffix(".npy") for name in self._zip.namelist())

    def __enter__(self) -> NpzArchive:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._zip.close()
        self._handle.close()

    def _open_entry(self, key: str) -> tuple[NpyHeader, BinaryIO, str]:
        """Entry ``key`` opened at its array data, with its checked header and its name."""
        what = f"{self.name}: entry '{key}'"
        if key not in self.files:
            raise IsaError(f"{self.name} has no '{key}' entry (it has: {', '.join(self.files)})")
        info = self._zip.getinfo(f"{key}.npy" if f"{key}.npy" in self._names else key)
        try:
            member = self._zip.open(info)
        except _ARCHIVE_ERRORS as error:
            raise IsaError(f"{what} is truncated or corrupt ({error})") from None
        try:
            header = _npy_header(member, what)
            _check_npy(header, info.file_size - member.tell(), what, numeric=False)
        except IsaError:
            member.close()
            raise
        except _ARCHIVE_ERRORS as error:
            member.close()
            raise IsaError(f"{what} has a corrupt NPY header ({error})") from None
        return header, member, what

    def header(self, key: str) -> NpyHeader:
        """Entry ``key``'s NPY header, checked against the bytes the entry holds."""
        header, member, _ = self._open_entry(key)
        member.close()
        return header

    def array(self, key: str, kinds: str | None = None, expected: str = "") -> np.ndarray:
        """Entry ``key`` as an array; with ``kinds`` (numpy dtype kind letters), another dtype
        is refused before anything is read, the message saying ``expected``."""
        header, member, what = self._open_entry(key)
        with member:
            if kinds is not None and header.dtype.kind not in kinds:
                raise IsaError(f"{what} has dtype {header.dtype}; expected {expected}")
            try:
                member.seek(0)
                return npy_format.read_array(member, allow_pickle=False)
            except _ARCHIVE_ERRORS as error:
                raise IsaError(f"{what} is truncated or corrupt ({error})") from None

    def chunks(self, key: str, size: int) -> Iterator[bytes]:
        """Entry ``key``'s array data in pieces of ``size`` bytes (the last may be shorter),
        for arrays streamed rather than held whole."""
        header, member, what = self._open_entry(key)
        with member:
            left = header.nbytes
            while left > 0:
                try:
                    data = member.read(min(size, left))
                except _ARCHIVE_ERRORS as error:
                    raise IsaError(f"{what} is truncated or corrupt ({error})") from None
                if not data:
                    raise IsaError(f"{what} is truncated after {header.nbytes - left} bytes")
                left -= len(data)
                yield data


def open_npz(path: Path | str) -> NpzArchive:
    """Open a .npz archive for reading entry by entry (see :class:`NpzArchive`)."""
    handle, kind = open_input(path)
    return NpzArchive(handle, kind, _as_path(path))


# ---------------------------------------------------------------------------------------------
# Writing

# What to do about an OSError while writing, by errno; the message also names the path and the
# OS's reason.
_WRITE_FIXES = {
    errno.ENOSPC: "free space or write elsewhere",
    errno.EDQUOT: "free space within your quota or write elsewhere",
    errno.EROFS: "write elsewhere",
    errno.EACCES: "check the permissions or write elsewhere",
    errno.EPERM: "check the permissions or write elsewhere",
    errno.ENAMETOOLONG: "use a shorter file or folder name",
    errno.EFBIG: "the file is too large for that file system; write elsewhere",
    errno.ELOOP: "fix the symbolic link loop or give another path",
    errno.ENOTDIR: "a part of the path is a file, not a folder; check the path",
    errno.EISDIR: "that path is a folder; give a file name",
    errno.ENXIO: "nothing is reading from it; give a regular file",
    errno.EIO: "the device reported an I/O error; check the disk",
}


def _write_error(path: Path, error: OSError) -> IsaError:
    """The one-line IsaError for an OSError while writing ``path``."""
    code = error.errno
    if code is None and error.args and isinstance(error.args[0], int):
        code = error.args[0]  # OSError(errno.ENOSPC) sets no errno attribute
    reason = error.strerror or (os.strerror(code) if code is not None else str(error))
    fix = _WRITE_FIXES.get(code, "check the path or write elsewhere")
    return IsaError(f"cannot write {_show(path)}: {reason}; {fix}")


# Temporaries are named .TARGET.isa-HOST-PID-RANDOM.tmp: HOST is a short hash of the host name
# and PID the writer's, so a temporary whose writer died (kill -9) can be told apart and removed.
_TEMP_NAME = re.compile(r"\.(?P<target>.+)\.isa-(?P<host>[0-9a-f]{8})-(?P<pid>[0-9]+)-[^.]*\.tmp")
_TEMP_STEM_BYTES = 200  # leaves room for the rest of the name within NAME_MAX (255 bytes)


@cache
def _host_tag() -> str:
    return hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]


def _temp_stem(name: str) -> str:
    """The target's name as it appears in its temporaries: cut so the temporary's name fits."""
    while len(os.fsencode(name)) > _TEMP_STEM_BYTES:
        name = name[:-1]
    return name


def _alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this host (another user's process counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OverflowError:
        return False  # no process has such a number
    except OSError:
        return True
    return True


def _remove_stale(folder: Path, stem: str | None) -> list[Path]:
    """Delete our temporaries in ``folder`` (of target ``stem``, or all) whose writer is gone."""
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return []
    removed = []
    for entry in entries:
        match = _TEMP_NAME.fullmatch(entry.name)
        if match is None or match["host"] != _host_tag() or int(match["pid"]) <= 0:
            continue
        if stem is not None and match["target"] != stem:
            continue
        if _alive(int(match["pid"])) or not entry.is_file(follow_symlinks=False):
            continue
        try:
            os.unlink(entry.path)
        except OSError:
            continue  # another cleaner got there first, or we may not delete it
        removed.append(Path(entry.path))
    return removed


def remove_stale_temporaries(folder: Path) -> list[Path]:
    """Delete the temporaries that writes killed in ``folder`` left behind (writer process gone,
    same host); returns what was removed. Call it when resuming work in a folder."""
    return _remove_stale(Path(folder), None)


def _write_target(path: Path) -> Path | None:
    """The regular file a write to ``path`` replaces (a symlink's target, so the link stays), or
    None when ``path`` is a device, FIFO or socket, which is written in place."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:  # a new file, or a dangling symlink whose target is created
        mode = None
    except OSError as error:
        raise _write_error(path, error) from None
    if mode is not None and not stat.S_ISREG(mode) and not stat.S_ISDIR(mode):
        return None
    if not path.is_symlink():
        return path
    resolved = Path(os.path.realpath(path))
    if mode is not None and not _same_file(path, resolved):
        return None  # a /proc link (e.g. /dev/stdout to an unlinked file) only opens in place
    return resolved


def _same_file(one: Path, other: Path) -> bool:
    try:
        return os.path.samefile(one, other)
    except OSError:
        return False


@contextmanager
def _write_in_place(path: Path) -> Iterator[BinaryIO]:
    """Open a device or FIFO for writing as it is: no temporary, no rename."""
    try:
        handle = open(path, "wb")  # noqa: SIM115  (closed below, errors converted)
    except OSError as error:
        raise _write_error(path, error) from None
    try:
        with handle:
            yield handle
            handle.flush()
    except OSError as error:
        raise _write_error(path, error) from None


@contextmanager
def atomic_write(path: Path | str) -> Iterator[BinaryIO]:
    """Open a temporary file beside ``path`` for binary writing; rename it over ``path`` on
    success, delete it on failure, so an existing file is never left half-written.

    A symlink is written through (its target is replaced, the link stays); a device or FIFO is
    written in place. An OSError while writing becomes an IsaError naming the path and the fix.
    """
    path = _as_path(path)
    target = _write_target(path)
    if target is None:
        with _write_in_place(path) as handle:
            yield handle
        return
    folder = target.parent if str(target.parent) else Path(".")
    if not folder.is_dir():
        raise IsaError(f"cannot write {path}: folder {folder} does not exist; create it first")
    if target.is_dir():
        raise IsaError(f"cannot write {path}: it is a folder; give a file name")
    stem = _temp_stem(target.name)
    _remove_stale(folder, stem)
    try:
        mode = target.stat().st_mode & 0o7777 if target.exists() else 0o666 & ~_umask()
        fd, tmp_name = tempfile.mkstemp(
            prefix=f".{stem}.isa-{_host_tag()}-{os.getpid()}-", suffix=".tmp", dir=folder
        )
    except OSError as error:
        raise _write_error(target, error) from None
    try:
        with os.fdopen(fd, "wb") as handle:
            # mkstemp makes the file private (0600); give it the mode a plain open() would.
            os.fchmod(handle.fileno(), mode)
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, target)
    except OSError as error:
        _unlink_quietly(tmp_name)
        raise _write_error(target, error) from None
    except BaseException:
        _unlink_quietly(tmp_name)
        raise


def _unlink_quietly(name: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(name)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(array), allow_pickle=False)
    return buffer.getvalue()


def write_array(array: np.ndarray, out: Path | str | None, stdout: BinaryIO) -> None:
    """Write ``array`` as NPY to ``out`` (atomically), or to stdout when ``out`` is None.

    Refuses to write binary to a terminal.
    """
    data = _npy_bytes(array)
    if out is None or str(out) == "-":
        if _is_terminal(stdout):
            raise IsaError(
                "refusing to write a binary NPY array to the terminal; "
                "give -o FILE or pipe into another command"
            )
        stdout.write(data)
        stdout.flush()
        return
    with atomic_write(out) as handle:
        handle.write(data)


def write_text(text: str, out: Path | str | None, stdout: BinaryIO) -> None:
    """Write text to ``out`` atomically, or to stdout when ``out`` is None."""
    data = text.encode("utf-8")
    if out is None or str(out) == "-":
        stdout.write(data)
        stdout.flush()
        return
    with atomic_write(out) as handle:
        handle.write(data)


def figure_png(figure: Any, dpi: float | None = None) -> bytes:
    """A matplotlib Figure as PNG bytes (to save, or to embed in a page)."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()


def save_figure(figure: Any, path: Path | str, dpi: int | None = None) -> None:
    """Save a matplotlib Figure as PNG, atomically."""
    if Path(path).suffix.lower() != ".png":
        raise IsaError(f"{path}: figures are written as PNG; give a file name ending in .png")
    data = figure_png(figure, dpi)
    with atomic_write(path) as handle:
        handle.write(data)


# ---------------------------------------------------------------------------------------------
# Bundles


@dataclass(frozen=True)
class Bundle:
    """A safetensors file's tensors and its ``isa`` JSON metadata."""

    tensors: dict[str, torch.Tensor]
    metadata: dict[str, Any]


def save_bundle(
    path: Path | str, tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, Any]
) -> None:
    """Write tensors and JSON metadata (under key ``isa``) to a safetensors file, atomically."""
    from safetensors.torch import save

    contiguous = {name: t.detach().contiguous().cpu() for name, t in tensors.items()}
    data = save(contiguous, metadata={_METADATA_KEY: json.dumps(dict(metadata), sort_keys=True)})
    with atomic_write(path) as handle:
        handle.write(data)


def load_bundle(path: Path | str, require_metadata: bool = True) -> Bundle:
    """Read a safetensors bundle written by :func:`save_bundle`, validating it first.

    Without ``require_metadata``, a file with no ``isa`` metadata (written by another tool)
    reads as empty metadata; ``isa`` metadata that is not a JSON object is refused either way.
    """
    from safetensors.torch import load

    path = _as_path(path)
    data = _read_bytes(path)
    name = str(path)
    kind = _sniff(data)
    if kind != "safetensors":
        refuse_foreign(kind, name, "a safetensors file")
        if len(data) < 9:
            raise IsaError(f"{name} is truncated: too short for a safetensors header")
        header_len = int.from_bytes(data[:8], "little")
        raise IsaError(
            f"{name} is not a safetensors file or is truncated (header of {header_len} bytes "
            f"in a {len(data)}-byte file)"
        )
    header_len = int.from_bytes(data[:8], "little")
    try:
        header = json.loads(data[8 : 8 + header_len])
        tensors = load(data)
    except (SafetensorError, ValueError, RecursionError) as error:
        first = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise IsaError(f"{name} is a corrupt or truncated safetensors file ({first})") from None
    extra = header.get("__metadata__") if isinstance(header, dict) else None
    raw = extra.get(_METADATA_KEY) if isinstance(extra, dict) else None
    if raw is None and not require_metadata:
        return Bundle(tensors, {})
    if not isinstance(raw, str):
        raise IsaError(f"{name} has no '{_METADATA_KEY}' metadata; it was not written by isa")
    try:
        metadata = json.loads(raw)
    except (ValueError, RecursionError):
        raise IsaError(f"{name} has unreadable '{_METADATA_KEY}' metadata (not JSON)") from None
    if not isinstance(metadata, dict):
        raise IsaError(
            f"{name} has '{_METADATA_KEY}' metadata that is not a JSON object; "
            "it was not written by isa"
        )
    return Bundle(tensors, metadata)
