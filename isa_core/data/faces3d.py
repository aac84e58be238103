"""3D Faces: one tensor (faces, azimuths, elevations, lightings, 64, 64), saved by
``torch.save`` (read with ``weights_only=True``: tensors only, no code) or as the ``images``
entry of an ``.npz``."""

from __future__ import annotations

from typing import BinaryIO

import numpy as np
import torch
from torch import Tensor

from isa_core import io
from isa_core.data.base import ArrayData, GroundTruthData
from isa_core.errors import IsaError

__all__ = ["FACES3D_FACTORS", "load_faces3d", "load_faces3d_npz"]

FACES3D_FACTORS = ("face", "azimuth", "elevation", "lighting")


def load_faces3d(handle: BinaryIO, kind: str, name: str) -> GroundTruthData:
    """3D Faces from a ``torch.save`` file, open as ``handle`` (``kind`` as sniffed by
    :func:`isa_core.io.open_input`); raw pickles and other formats are refused unread."""
    if kind != "zip":  # torch.save writes zip archives; older pickle-based files are refused
        io.refuse_foreign(kind, name, "a zip-format torch.save tensor file")
    try:
        tensor = torch.load(handle, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many types for damaged or hostile files
        first = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise IsaError(
            f"{name} is not a plain tensor file (truncated, corrupt, or holding objects "
            f"other than tensors: {first})"
        ) from None
    return _faces(tensor, name)


def load_faces3d_npz(archive: io.NpzArchive) -> GroundTruthData:
    """3D Faces from the ``images`` entry of a ``.npz``."""
    return _faces(torch.from_numpy(archive.array("images")), archive.name)


def _faces(tensor: object, name: str) -> GroundTruthData:
    if not isinstance(tensor, Tensor) or tensor.ndim != 6 or tensor.shape[-2:] != (64, 64):
        shape = tuple(tensor.shape) if isinstance(tensor, Tensor) else type(tensor).__name__
        raise IsaError(
            f"{name}: expected one tensor (faces, azimuths, elevations, lightings, 64, 64), "
            f"got {shape}"
        )
    if tensor.dtype != torch.uint8:
        tensor = (tensor.float().clamp(0, 1) * 255).round().to(torch.uint8)
    sizes = tuple(tensor.shape[:4])
    images = tensor.reshape(-1, 64, 64, 1).contiguous()
    values = [np.arange(float(s)) for s in sizes]
    return ArrayData("faces3d", images, FACES3D_FACTORS, values)
