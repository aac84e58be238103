"""Ground-truth data sets: one API (``GroundTruthData``) for built-in and file-backed data.

Every data class needs torch, so they load on first use (PEP 562): importing this package,
or naming ``BUILT_IN``, stays cheap for code that only builds the CLI (`isa --help`).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from isa_core.errors import IsaError
from isa_core.lazy import lazy_attributes

if TYPE_CHECKING:
    from isa_core.data.base import ArrayData, GroundTruthData
    from isa_core.data.dsprites import DSprites
    from isa_core.data.packed import PackedBinaryData

__all__ = [
    "BUILT_IN",
    "ArrayData",
    "DSprites",
    "GroundTruthData",
    "PackedBinaryData",
    "open_dataset",
]

BUILT_IN = ("dsprites", "dsprites-mini")

# name -> submodule that defines it, imported when the name is first looked up
_LAZY = {
    "ArrayData": "base",
    "GroundTruthData": "base",
    "DSprites": "dsprites",
    "PackedBinaryData": "packed",
}


__getattr__, __dir__ = lazy_attributes(__name__, _LAZY, globals())


def open_dataset(source: str | Path) -> GroundTruthData:
    """A built-in data set by name, or the data set in a file or folder."""
    text = str(source)
    if "\0" in text:
        raise IsaError(f"data source {text!r} contains a NUL byte, which no file name can")
    if text in BUILT_IN:
        from isa_core.data.dsprites import DSprites

        return DSprites(mini=text == "dsprites-mini")
    path = Path(text)
    if not path.exists() and "/" not in text and "." not in text:
        raise IsaError(
            f"unknown data set {text!r}; use one of {', '.join(BUILT_IN)} or a path to a data "
            "file or folder"
        )
    from isa_core.data.formats import open_file

    return open_file(path)
