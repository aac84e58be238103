"""Folder locks: one writer per run or sweep folder, released by the kernel when the holder dies.

A lock is an advisory ``flock`` on ``FOLDER/.isa.lock``. The file records who holds it (pid,
host, command) so a second writer can be told whom it collides with. Because the kernel drops
the lock when the holding process exits, however it exits (kill -9 included), a lock file left
behind by a dead process never blocks anyone.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from isa_core.errors import IsaError

__all__ = ["LOCK_FILE", "folder_lock"]

LOCK_FILE = ".isa.lock"


def _holder(handle) -> str:
    """Describe the process named in an open lock file, for the error message."""
    handle.seek(0)
    try:
        record = json.loads(handle.read() or "{}")
    except json.JSONDecodeError:
        return "another process"
    if not isinstance(record, dict):
        return "another process"
    pid, host, command = record.get("pid"), record.get("host"), record.get("command")
    return f"process {pid} on {host} ({command})" if pid else "another process"


@contextmanager
def folder_lock(folder: Path | str, what: str) -> Iterator[Path]:
    """Hold the lock of ``folder`` (which must exist) for the body; ``what`` names the writer
    (``isa train``) in the message another writer gets."""
    path = Path(folder) / LOCK_FILE
    try:
        handle = path.open("a+")
    except OSError as error:
        raise IsaError(f"cannot lock {folder}: {error.strerror}") from None
    with handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(handle)
            raise IsaError(
                f"{folder} is in use by {holder}; wait for it to finish or stop it, then run again"
            ) from None
        record = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "command": what or " ".join(sys.argv[:3]),
        }
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps(record))
        handle.flush()
        try:
            yield path
        finally:
            # Leave the file (removing it would race with a waiting writer); the kernel
            # releases the lock itself when the handle closes or the process dies.
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
