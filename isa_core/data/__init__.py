"""Ground-truth data sets: one API (``GroundTruthData``) for built-in and file-backed data."""

from __future__ import annotations

from pathlib import Path

from isa_core.data.base import ArrayData, GroundTruthData
from isa_core.data.dsprites import DSprites
from isa_core.data.files import open_file
from isa_core.data.packed import PackedBinaryData
from isa_core.errors import IsaError

__all__ = [
    "BUILT_IN",
    "ArrayData",
    "DSprites",
    "GroundTruthData",
    "PackedBinaryData",
    "open_dataset",
]

BUILT_IN = ("dsprites", "dsprites-mini")


def open_dataset(source: str | Path) -> GroundTruthData:
    """A built-in data set by name, or the data set in a file or folder."""
    text = str(source)
    if text == "dsprites":
        return DSprites()
    if text == "dsprites-mini":
        return DSprites(mini=True)
    path = Path(text)
    if not path.exists() and "/" not in text and "." not in text:
        raise IsaError(
            f"unknown data set {text!r}; use one of {', '.join(BUILT_IN)} or a path to a data "
            "file or folder"
        )
    return open_file(path)
