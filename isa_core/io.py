"""The one place for file formats: NPY arrays, safetensors bundles, stdin/stdout, atomic writes.

Conventions (DESIGN.md): arrays travel as NPY; bundles are safetensors files with a JSON string
under the metadata key ``isa``; a positional input is a path, or ``-``/absent for stdin, where
bytes starting with the NPY magic are an array and anything else is text whose first non-empty
line is a path. Nothing is ever unpickled. Every write goes to a temporary file in the target's
folder and is renamed into place, so a failed write never damages an existing file.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load, save

from isa_core.errors import IsaError

__all__ = [
    "NPY_MAGIC",
    "Bundle",
    "atomic_write",
    "load_bundle",
    "load_npy",
    "read_array",
    "read_paths",
    "read_source",
    "save_bundle",
    "save_figure",
    "write_array",
    "write_text",
]

NPY_MAGIC = b"\x93NUMPY"
_ZIP_MAGIC = b"PK\x03\x04"
_METADATA_KEY = "isa"


def _refuse_foreign(head: bytes, name: str, expected: str) -> None:
    """Raise a clear error for pickles and zip archives, which we never load."""
    if head[:1] == b"\x80":
        raise IsaError(
            f"{name} is a Python pickle; isa never loads pickles (they can run code): "
            f"save it as {expected} instead"
        )
    if head.startswith(_ZIP_MAGIC):
        raise IsaError(
            f"{name} is a zip archive (an .npz or a torch.save file), not {expected}; "
            f"export the array with numpy.save or safetensors"
        )


def load_npy(data: bytes | Path, name: str | None = None) -> np.ndarray:
    """Load one NPY array from bytes or a path, refusing pickles and object arrays."""
    if isinstance(data, Path):
        name = name or str(data)
        data = _read_bytes(data)
    name = name or "input"
    if not data.startswith(NPY_MAGIC):
        _refuse_foreign(data[:8], name, "an NPY file")
        raise IsaError(f"{name} is not an NPY file (no NPY header); write arrays with numpy.save")
    try:
        return np.load(io.BytesIO(data), allow_pickle=False)
    except ValueError as error:
        if "allow_pickle" in str(error):
            raise IsaError(
                f"{name} holds a pickled object array; isa reads numeric NPY arrays only"
            ) from None
        raise IsaError(f"{name} is a truncated or corrupt NPY file ({error})") from None
    except (EOFError, OSError) as error:
        raise IsaError(f"{name} is a truncated or corrupt NPY file ({error})") from None


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise IsaError(f"{path}: no such file; check the path") from None
    except IsADirectoryError:
        raise IsaError(f"{path} is a folder; give a file") from None
    except OSError as error:
        raise IsaError(f"cannot read {path}: {error.strerror}") from None


def read_source(arg: str | None, stdin: BinaryIO) -> Path | bytes:
    """Resolve a positional input: a path, or ``-``/None for stdin.

    On stdin, bytes starting with the NPY magic are returned as they are (an array); otherwise
    the first non-empty text line is taken as a path.
    """
    if arg not in (None, "-"):
        return Path(arg)
    if _is_terminal(stdin):
        raise IsaError("no input: give a file path, or pipe an array or a path into stdin")
    data = stdin.read()
    if data.startswith(NPY_MAGIC):
        return data
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        _refuse_foreign(data[:8], "stdin", "an NPY array or a path")
        raise IsaError("stdin holds neither an NPY array nor a path; pipe one of them") from None
    for line in text.splitlines():
        if line.strip():
            return Path(line.strip())
    raise IsaError("stdin is empty: pipe an NPY array or a file path, or give a path")


def read_paths(arg: str | None, stdin: BinaryIO) -> list[Path]:
    """A path argument, or every non-empty line of stdin (``ls runs/*/model.safetensors | ...``)."""
    if arg not in (None, "-"):
        return [Path(arg)]
    if _is_terminal(stdin):
        raise IsaError("no input: give a file path, or pipe paths into stdin")
    data = stdin.read()
    if data.startswith(NPY_MAGIC):
        raise IsaError("stdin holds an NPY array; this command reads file paths")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise IsaError("stdin holds binary data, not file paths") from None
    paths = [Path(line.strip()) for line in text.splitlines() if line.strip()]
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


@contextmanager
def atomic_write(path: Path | str) -> Iterator[BinaryIO]:
    """Open a temporary file beside ``path`` for binary writing; rename it over ``path`` on
    success, delete it on failure, so an existing file is never left half-written."""
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise IsaError(f"cannot write {path}: folder {folder} does not exist; create it first")
    if path.is_dir():
        raise IsaError(f"cannot write {path}: it is a folder; give a file name")
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    except OSError as error:
        raise IsaError(f"cannot write in {folder}: {error.strerror}") from None
    # mkstemp makes the file private (0600); give it the mode a plain open() would.
    os.fchmod(fd, path.stat().st_mode & 0o7777 if path.exists() else 0o666 & ~_umask())
    try:
        with os.fdopen(fd, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


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


def save_figure(figure: Any, path: Path | str, dpi: int | None = None) -> None:
    """Save a matplotlib Figure as PNG, atomically."""
    if Path(path).suffix.lower() != ".png":
        raise IsaError(f"{path}: figures are written as PNG; give a file name ending in .png")
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi)
    with atomic_write(path) as handle:
        handle.write(buffer.getvalue())


@dataclass(frozen=True)
class Bundle:
    """A safetensors file's tensors and its ``isa`` JSON metadata."""

    tensors: dict[str, torch.Tensor]
    metadata: dict[str, Any]


def save_bundle(
    path: Path | str, tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, Any]
) -> None:
    """Write tensors and JSON metadata (under key ``isa``) to a safetensors file, atomically."""
    contiguous = {name: t.detach().contiguous().cpu() for name, t in tensors.items()}
    data = save(contiguous, metadata={_METADATA_KEY: json.dumps(dict(metadata), sort_keys=True)})
    with atomic_write(path) as handle:
        handle.write(data)


def load_bundle(path: Path | str) -> Bundle:
    """Read a safetensors bundle written by :func:`save_bundle`, validating it first."""
    path = Path(path)
    data = _read_bytes(path)
    name = str(path)
    if data.startswith(NPY_MAGIC):
        raise IsaError(f"{name} is an NPY array, not a safetensors bundle")
    _refuse_foreign(data[:8], name, "a safetensors file")
    if len(data) < 8:
        raise IsaError(f"{name} is truncated: too short for a safetensors header")
    header_len = int.from_bytes(data[:8], "little")
    if header_len > len(data) - 8 or not data[8:9] == b"{":
        raise IsaError(
            f"{name} is not a safetensors file or is truncated (header of {header_len} bytes "
            f"in a {len(data)}-byte file)"
        )
    try:
        header = json.loads(data[8 : 8 + header_len])
        tensors = load(data)
    except (SafetensorError, ValueError) as error:
        raise IsaError(f"{name} is a corrupt or truncated safetensors file ({error})") from None
    raw = (header.get("__metadata__") or {}).get(_METADATA_KEY)
    if raw is None:
        raise IsaError(f"{name} has no '{_METADATA_KEY}' metadata; it was not written by isa")
    try:
        metadata = json.loads(raw)
    except json.JSONDecodeError:
        raise IsaError(f"{name} has unreadable '{_METADATA_KEY}' metadata (not JSON)") from None
    return Bundle(tensors, metadata)
