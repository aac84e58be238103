"""Which reader a data file needs: each file is opened once, told apart by its first bytes
and (for an ``.npz``) its entries, and handed open to the reader of its format.

Readers, one per format, none of which can execute code from the file:

* ``dsprites_npz``: the real dSprites ``.npz`` (entries ``imgs``, ``latents_classes``, ...);
* ``generic_npz``: our generic ground-truth ``.npz`` (``images``, ``factors``, ...);
* ``faces3d``: 3D Faces, a ``torch.save`` tensor (``.pt``/``.pth``) or an ``.npz`` of ``images``;
* ``cars3d``: Cars3D, a folder of ``.mat`` files.
"""

from __future__ import annotations

from pathlib import Path

from isa_core import io
from isa_core.data.base import GroundTruthData
from isa_core.data.cars3d import load_cars3d
from isa_core.data.dsprites_npz import load_dsprites_npz
from isa_core.data.faces3d import load_faces3d, load_faces3d_npz
from isa_core.data.generic_npz import load_generic_npz
from isa_core.errors import IsaError

__all__ = ["open_file"]

_TENSOR_SUFFIXES = (".pt", ".pth")


def open_file(path: Path) -> GroundTruthData:
    """The data set in a file or folder, read by the reader its contents call for."""
    if path.is_dir():
        return load_cars3d(path)
    if not path.exists():
        raise IsaError(f"{path}: no such file or folder; give a data set name or a data file")
    if path.suffix not in (*_TENSOR_SUFFIXES, ".npz"):
        raise IsaError(
            f"{path}: unknown data file type; use a dSprites/generic .npz, a 3D Faces .pt/.npz, "
            "or a Cars3D folder"
        )
    handle, kind = io.open_input(path)
    if path.suffix in _TENSOR_SUFFIXES:
        with handle:
            return load_faces3d(handle, kind, str(path))
    with io.NpzArchive(handle, kind, path) as archive:
        return _read_npz(archive)


def _read_npz(archive: io.NpzArchive) -> GroundTruthData:
    """Pick the ``.npz`` reader from the archive's entries."""
    entries = set(archive.files)
    if {"imgs", "latents_classes"} <= entries:
        return load_dsprites_npz(archive)
    if {"images", "factors"} <= entries:
        return load_generic_npz(archive)
    if "images" in entries:
        return load_faces3d_npz(archive)
    raise IsaError(
        f"{archive.name}: unrecognised .npz (entries: {', '.join(archive.files)}); expected "
        "dSprites (imgs, latents_classes, latents_values) or generic (images, factors, "
        "factor_names, factor_sizes)"
    )
