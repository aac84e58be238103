"""Loaders for ground-truth data files; none of them can execute code from the file.

* the real dSprites ``.npz`` (keys ``imgs``, ``latents_classes``, ``latents_values``; its
  pickled ``metadata`` entry is never opened), streamed and kept as packed bits (377 MB);
* Cars3D as distributed: a folder of ``.mat`` files, one per car, each ``im`` of shape
  (128, 128, 3, 24 azimuths, 4 elevations), resized to 64x64 by 2x2 averaging;
* 3D Faces: a tensor (faces, azimuths, elevations, lightings, 64, 64) saved by ``torch.save``
  (read with ``weights_only=True``) or as the ``images`` entry of an ``.npz``;
* our generic ground-truth ``.npz``: ``images`` (N, H, W[, C]) uint8, ``factors`` (N, F)
  integer classes, ``factor_names`` (F,) strings, ``factor_sizes`` (F,) integers, and
  optionally ``factor_values_<name>`` arrays of real values; every grid cell exactly once.
"""

from __future__ import annotations

import math
import zipfile
import zlib
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from isa_core.data.base import ArrayData, GroundTruthData
from isa_core.data.packed import PackedBinaryData
from isa_core.errors import IsaError

__all__ = ["load_cars3d", "load_dsprites_npz", "load_faces3d", "load_generic_npz", "open_file"]

DSPRITES_FACTORS = ("shape", "scale", "orientation", "x", "y")
_ROWS_PER_READ = 8192


# What a damaged archive or NPY member can raise while being read.
_CORRUPT = (zipfile.BadZipFile, zlib.error, ValueError, OSError, EOFError, KeyError)


def _head(path: Path, size: int) -> bytes:
    """The first ``size`` bytes of a file (b"" for a folder or a missing file)."""
    try:
        with path.open("rb") as handle:
            return handle.read(size)
    except (IsADirectoryError, FileNotFoundError):
        return b""
    except OSError as error:
        raise IsaError(f"cannot read {path}: {error.strerror}") from None


def _open_npz(path: Path) -> np.lib.npyio.NpzFile:
    if _head(path, 1) == b"\x80":
        raise IsaError(f"{path} is a Python pickle; isa never loads pickles (they can run code)")
    try:
        return np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise IsaError(f"{path}: no such file; check the path") from None
    except _CORRUPT as error:
        raise IsaError(
            f"{path} is not a readable .npz archive (truncated or corrupt: {error})"
        ) from None


def _declared_shape(npz: np.lib.npyio.NpzFile, key: str, path: Path) -> tuple[tuple, np.dtype]:
    """Shape and dtype from a member's NPY header, checked against the bytes it holds, so a
    header declaring a huge array is refused before anything is allocated."""
    names = npz.zip.namelist()
    name = f"{key}.npy" if f"{key}.npy" in names else key
    try:
        info = npz.zip.getinfo(name)
        with npz.zip.open(info) as member:
            version = np.lib.format.read_magic(member)
            if version == (1, 0):
                shape, _, dtype = np.lib.format.read_array_header_1_0(member)
            else:
                shape, _, dtype = np.lib.format.read_array_header_2_0(member)
            header = member.tell()
    except _CORRUPT as error:
        raise IsaError(f"{path}: entry '{key}' has a corrupt NPY header ({error})") from None
    if dtype.hasobject:
        raise IsaError(f"{path}: entry '{key}' is a pickled object; isa will not load it")
    declared = math.prod(shape) * dtype.itemsize
    if declared > info.file_size - header:
        raise IsaError(
            f"{path}: entry '{key}' declares {dtype} {shape} ({declared / 2**30:,.2f} GiB) but "
            f"holds {max(0, info.file_size - header):,} bytes; the file is truncated or corrupt"
        )
    return shape, dtype


def _member(npz: np.lib.npyio.NpzFile, key: str, path: Path) -> np.ndarray:
    if key not in npz.files:
        raise IsaError(f"{path} has no '{key}' entry (it has: {', '.join(npz.files)})")
    _declared_shape(npz, key, path)
    try:
        return npz[key]
    except ValueError as error:
        if "allow_pickle" in str(error):
            raise IsaError(
                f"{path}: entry '{key}' is a pickled object; isa will not load it"
            ) from None
        raise IsaError(f"{path}: entry '{key}' is truncated or corrupt ({error})") from None
    except _CORRUPT as error:
        raise IsaError(f"{path}: entry '{key}' is truncated or corrupt ({error})") from None


def _check_numbers(array: np.ndarray, key: str, path: Path, kinds: str, expected: str) -> None:
    """Refuse an entry whose dtype is not one of ``kinds`` (numpy dtype kind letters)."""
    if array.dtype.kind not in kinds:
        raise IsaError(f"{path}: entry '{key}' has dtype {array.dtype}; expected {expected}")


def _grid_order(
    classes: np.ndarray, path: Path, names: tuple[str, ...]
) -> tuple[np.ndarray, tuple[int, ...]]:
    """Check that factor classes form a full grid; return each row's flat index and sizes."""
    if classes.ndim != 2 or classes.shape[1] != len(names) or classes.dtype.kind not in "iu":
        raise IsaError(
            f"{path}: factor classes must be integers of shape (N, {len(names)}), got "
            f"{classes.dtype} {classes.shape}"
        )
    if not len(classes) or not names:
        raise IsaError(f"{path} holds no images or no factors; a data set needs both")
    if classes.min() < 0:
        raise IsaError(f"{path}: factor classes must be >= 0")
    sizes = tuple(int(m) + 1 for m in classes.max(axis=0))
    total = math.prod(sizes)  # Python ints: no overflow before the check below
    if len(classes) != total:
        raise IsaError(
            f"{path}: the factors ({', '.join(names)}) do not form a full grid: they span "
            f"{'x'.join(map(str, sizes))} = {total:,} cells but there are {len(classes):,} rows; "
            "isa needs every combination exactly once"
        )
    strides = np.cumprod((1, *sizes[:0:-1]))[::-1]
    flat = (classes.astype(np.int64) * strides).sum(axis=1)
    if len(np.unique(flat)) != total:
        raise IsaError(
            f"{path}: the factors ({', '.join(names)}) do not form a full grid "
            f"{'x'.join(map(str, sizes))}: {len(classes)} rows, {len(np.unique(flat))} distinct "
            f"of {total} cells; isa needs every combination exactly once"
        )
    return flat, sizes


def load_dsprites_npz(path: Path) -> GroundTruthData:
    """The real dSprites file (or a sub-grid in its format), streamed into packed bits."""
    npz = _open_npz(path)
    classes = _member(npz, "latents_classes", path)
    values = _member(npz, "latents_values", path)
    if classes.ndim != 2 or classes.shape[1] != 6 or values.shape != classes.shape:
        raise IsaError(
            f"{path}: latents_classes and latents_values must both be (N, 6) "
            f"(color, shape, scale, orientation, posX, posY); got {classes.shape}, {values.shape}"
        )
    _check_numbers(values, "latents_values", path, "fiu", "float64 numbers")
    flat, sizes = _grid_order(classes[:, 1:], path, DSPRITES_FACTORS)
    factor_values = []
    for k in range(5):
        per_class = np.zeros(sizes[k])
        per_class[classes[:, k + 1]] = values[:, k + 1]
        factor_values.append(per_class)
    packed = _stream_packed_images(path, len(classes), flat)
    return PackedBinaryData("dsprites-file", packed, (64, 64), DSPRITES_FACTORS, factor_values)


def _stream_packed_images(path: Path, count: int, flat: np.ndarray) -> np.ndarray:
    """Read ``imgs`` (N, 64, 64) uint8 0/1 chunk by chunk into packed bits in grid order."""
    try:
        archive = zipfile.ZipFile(path)
        member = archive.open("imgs.npy")
    except KeyError:
        raise IsaError(f"{path} has no 'imgs' entry") from None
    except _CORRUPT as error:
        raise IsaError(f"{path} is truncated or corrupt ({error})") from None
    with archive, member:
        try:
            version = np.lib.format.read_magic(member)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(member)
            else:
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(member)
        except _CORRUPT as error:
            raise IsaError(f"{path}: 'imgs' has a corrupt NPY header ({error})") from None
        if shape != (count, 64, 64) or dtype != np.uint8 or fortran:
            raise IsaError(
                f"{path}: 'imgs' must be uint8 ({count}, 64, 64) in C order, got {dtype} {shape}"
            )
        packed = np.empty((count, 512), dtype=np.uint8)
        done = 0
        while done < count:
            rows = min(_ROWS_PER_READ, count - done)
            try:
                data = member.read(rows * 4096)
            except _CORRUPT as error:
                raise IsaError(f"{path}: 'imgs' is truncated or corrupt ({error})") from None
            if len(data) != rows * 4096:
                raise IsaError(f"{path}: 'imgs' is truncated after {done} images")
            chunk = np.frombuffer(data, dtype=np.uint8).reshape(rows, 4096)
            if chunk.max(initial=0) > 1:
                raise IsaError(f"{path}: 'imgs' must hold 0/1 pixels, found {chunk.max()}")
            packed[flat[done : done + rows]] = np.packbits(chunk, axis=1)
            done += rows
    return packed


def load_generic_npz(path: Path) -> GroundTruthData:
    """Our generic format: images, factors, factor_names, factor_sizes (see module doc)."""
    npz = _open_npz(path)
    images = _member(npz, "images", path)
    factors = _member(npz, "factors", path)
    raw_names = _member(npz, "factor_names", path)
    _check_numbers(raw_names, "factor_names", path, "US", "strings")
    raw_sizes = _member(npz, "factor_sizes", path)
    _check_numbers(raw_sizes, "factor_sizes", path, "iu", "integers (int64)")
    names = tuple(str(n) for n in raw_names.reshape(-1))
    sizes = tuple(int(s) for s in raw_sizes.reshape(-1))
    if len(set(names)) != len(names):
        raise IsaError(f"{path}: factor_names {list(names)} repeat a name; name each factor once")
    if len(names) != len(sizes):
        raise IsaError(f"{path}: {len(names)} factor_names but {len(sizes)} factor_sizes")
    if images.ndim not in (3, 4) or images.dtype != np.uint8:
        raise IsaError(
            f"{path}: images must be uint8 (N, H, W) or (N, H, W, C), got {images.dtype} "
            f"{images.shape}"
        )
    if len(images) != len(factors):
        raise IsaError(f"{path}: {len(images)} images but {len(factors)} factor rows")
    flat, found = _grid_order(factors, path, names)
    if found != sizes:
        raise IsaError(f"{path}: factor_sizes says {sizes} but the factors span {found}")
    values = []
    for name, size in zip(names, sizes, strict=True):
        key = f"factor_values_{name}"
        column = _member(npz, key, path) if key in npz.files else np.arange(size, dtype=float)
        _check_numbers(column, key, path, "fiu", "float64 numbers")
        if column.shape != (size,):
            raise IsaError(f"{path}: {key} must have shape ({size},), got {column.shape}")
        values.append(column.astype(np.float64))
    ordered = np.empty_like(images)
    ordered[flat] = images
    if ordered.ndim == 3:
        ordered = ordered[..., None]
    binary = bool(ordered.max(initial=0) <= 1)
    return ArrayData(path.stem, torch.from_numpy(ordered), names, values, binary=binary)


def load_cars3d(folder: Path) -> GroundTruthData:
    """Cars3D: one ``.mat`` per car, ``im`` (128, 128, 3, 24, 4) -> 64x64 RGB."""
    from scipy.io import loadmat  # a data-only reader: no code runs from the file

    files = sorted(folder.glob("*.mat"))
    if not files:
        raise IsaError(f"{folder} holds no .mat files; point at the Cars3D folder of car_*.mat")
    cars: list[Tensor] = []
    for file in files:
        try:
            content = loadmat(file)
        except Exception as error:  # scipy raises several types for damaged files
            raise IsaError(f"{file} is not a readable .mat file ({error})") from None
        im = content.get("im")
        if (
            not isinstance(im, np.ndarray)
            or im.shape != (128, 128, 3, 24, 4)
            or im.dtype.kind not in "fiu"
        ):
            shape = f"{im.dtype} {im.shape}" if isinstance(im, np.ndarray) else type(im).__name__
            raise IsaError(
                f"{file}: expected 'im' of numbers, shape (128, 128, 3, 24, 4), got {shape}"
            )
        views = torch.from_numpy(np.ascontiguousarray(im)).float()  # (H, W, C, az, el)
        views = views.permute(4, 3, 2, 0, 1).reshape(96, 3, 128, 128)  # (el*az, C, H, W)
        small = F.avg_pool2d(views, 2)  # (96, 3, 64, 64)
        if im.dtype != np.uint8:
            small = small * 255 if float(views.max()) <= 1.0 else small
        cars.append(small.round().clamp(0, 255).to(torch.uint8).reshape(4, 24, 3, 64, 64))
    grid = torch.stack(cars, dim=2)  # (el, az, car, C, H, W)
    images = grid.permute(0, 1, 2, 4, 5, 3).reshape(-1, 64, 64, 3).contiguous()
    values = [np.arange(4.0), np.arange(24.0), np.arange(float(len(files)))]
    return ArrayData("cars3d", images, ("elevation", "azimuth", "object"), values)


def load_faces3d(path: Path) -> GroundTruthData:
    """3D Faces: (faces, azimuths, elevations, lightings, 64, 64) from .pt/.pth or .npz."""
    if path.suffix == ".npz":
        tensor = torch.from_numpy(_member(_open_npz(path), "images", path))
    else:
        if _head(path, 1) == b"\x80":
            raise IsaError(f"{path} is a raw Python pickle; isa never loads pickles")
        try:
            tensor = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:  # torch raises many types for damaged or hostile files
            first = str(error).splitlines()[0] if str(error) else type(error).__name__
            raise IsaError(
                f"{path} is not a plain tensor file (truncated, corrupt, or holding objects "
                f"other than tensors: {first})"
            ) from None
    if not isinstance(tensor, Tensor) or tensor.ndim != 6 or tensor.shape[-2:] != (64, 64):
        shape = tuple(tensor.shape) if isinstance(tensor, Tensor) else type(tensor).__name__
        raise IsaError(
            f"{path}: expected one tensor (faces, azimuths, elevations, lightings, 64, 64), "
            f"got {shape}"
        )
    if tensor.dtype != torch.uint8:
        tensor = (tensor.float().clamp(0, 1) * 255).round().to(torch.uint8)
    sizes = tuple(tensor.shape[:4])
    images = tensor.reshape(-1, 64, 64, 1).contiguous()
    values = [np.arange(float(s)) for s in sizes]
    return ArrayData("faces3d", images, ("face", "azimuth", "elevation", "lighting"), values)


def open_file(path: Path) -> GroundTruthData:
    """Pick the loader from what the path holds."""
    if path.is_dir():
        return load_cars3d(path)
    if not path.exists():
        raise IsaError(f"{path}: no such file or folder; give a data set name or a data file")
    if path.suffix in (".pt", ".pth"):
        return load_faces3d(path)
    if path.suffix != ".npz":
        raise IsaError(
            f"{path}: unknown data file type; use a dSprites/generic .npz, a 3D Faces .pt/.npz, "
            "or a Cars3D folder"
        )
    npz = _open_npz(path)
    if {"imgs", "latents_classes"} <= set(npz.files):
        return load_dsprites_npz(path)
    if {"images", "factors"} <= set(npz.files):
        return load_generic_npz(path)
    if "images" in npz.files:
        return load_faces3d(path)
    raise IsaError(
        f"{path}: unrecognised .npz (entries: {', '.join(npz.files)}); expected dSprites "
        "(imgs, latents_classes, latents_values) or generic (images, factors, factor_names, "
        "factor_sizes)"
    )
