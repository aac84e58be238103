"""Cars3D as distributed: a folder of ``.mat`` files, one per car, each ``im`` of shape
(128, 128, 3, 24 azimuths, 4 elevations), resized to 64x64 by 2x2 averaging."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from isa_core.data.base import ArrayData, GroundTruthData
from isa_core.errors import IsaError

__all__ = ["load_cars3d"]


def load_cars3d(folder: Path) -> GroundTruthData:
    """Cars3D from its folder: factors elevation (4), azimuth (24), object (one per file)."""
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
        cars.append(_small_views(content.get("im"), file))
    grid = torch.stack(cars, dim=2)  # (el, az, car, C, H, W)
    images = grid.permute(0, 1, 2, 4, 5, 3).reshape(-1, 64, 64, 3).contiguous()
    values = [np.arange(4.0), np.arange(24.0), np.arange(float(len(files)))]
    return ArrayData("cars3d", images, ("elevation", "azimuth", "object"), values)


def _small_views(im: object, file: Path) -> Tensor:
    """One car's ``im`` (128, 128, 3, 24, 4) as uint8 (4, 24, 3, 64, 64) 0..255."""
    if (
        not isinstance(im, np.ndarray)
        or im.shape != (128, 128, 3, 24, 4)
        or im.dtype.kind not in "fiu"
    ):
        shape = f"{im.dtype} {im.shape}" if isinstance(im, np.ndarray) else type(im).__name__
        raise IsaError(f"{file}: expected 'im' of numbers, shape (128, 128, 3, 24, 4), got {shape}")
    views = torch.from_numpy(np.ascontiguousarray(im)).float()  # (H, W, C, az, el)
    views = views.permute(4, 3, 2, 0, 1).reshape(96, 3, 128, 128)  # (el*az, C, H, W)
    small = F.avg_pool2d(views, 2)  # (96, 3, 64, 64)
    if im.dtype != np.uint8 and float(views.max()) <= 1.0:
        small = small * 255  # values in [0, 1]
    return small.round().clamp(0, 255).to(torch.uint8).reshape(4, 24, 3, 64, 64)
