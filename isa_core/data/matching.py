"""The nearest grid image of each frame, by exhaustive Hamming search.

For 0/1 images the Hamming distance is |f| + |g| - 2 f.g, so the distances from a stack of
frames to a chunk of grid images are one matrix product. This is how the procedural dSprites
is checked against real images (``tools/match_frames.py``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from isa_core.data.base import GroundTruthData
from isa_core.errors import IsaError, field_error

__all__ = ["Matches", "nearest_images"]


@dataclass(frozen=True)
class Matches:
    """Per frame: the flat index of its nearest grid image, that image's factor classes
    (N, F), and the Hamming distance in pixels. A tie goes to the earliest candidate."""

    index: Tensor
    classes: Tensor
    distance: Tensor


def _as_binary_frames(frames: Tensor | np.ndarray, image_shape: tuple[int, ...]) -> Tensor:
    frames = torch.as_tensor(np.asarray(frames) if not isinstance(frames, Tensor) else frames)
    pixels = int(np.prod(image_shape))
    if frames.ndim < 2 or frames[0].numel() != pixels:
        raise IsaError(
            f"frames of shape {tuple(frames.shape)} do not match the data set's images "
            f"{tuple(image_shape)}; pass a stack (N, H, W) of images of that size"
        )
    flat = frames.reshape(len(frames), pixels)
    if not bool(((flat == 0) | (flat == 1)).all()):
        raise IsaError("frames must be 0/1 images; threshold them first (e.g. frames > 0)")
    return flat.float()


def nearest_images(
    data: GroundTruthData,
    frames: Tensor | np.ndarray,
    indices: Tensor | None = None,
    chunk: int = 8192,
    device: torch.device | str = "cpu",
) -> Matches:
    """Each frame's nearest image of ``data`` (restricted to ``indices`` if given).

    ``frames``: (N, H, W) 0/1 images of the data set's size. Images are compared as 0/1
    (``> 0.5``), in chunks of ``chunk`` grid images on ``device``.
    """
    if chunk < 1:
        raise field_error("chunk", f"must be at least 1, got {chunk}")
    device = torch.device(device)
    flat = _as_binary_frames(frames, data.image_shape).to(device)
    candidates = torch.arange(len(data)) if indices is None else torch.as_tensor(indices)
    candidates = candidates.to(torch.int64).reshape(-1)
    if not candidates.numel():
        raise IsaError("no grid images to search; pass at least one index")
    data.check_indices(candidates)
    frame_sums = flat.sum(1, keepdim=True)  # (N, 1)
    best = torch.full((len(flat),), float("inf"), device=device)
    best_index = torch.zeros(len(flat), dtype=torch.int64, device=device)
    for start in range(0, len(candidates), chunk):
        index = candidates[start : start + chunk]
        grid = (data.images(index, device) > 0.5).reshape(len(index), -1).float()
        distance = frame_sums + grid.sum(1)[None] - 2 * flat @ grid.T  # (N, chunk), exact
        value, where = distance.min(1)
        better = value < best  # strict: the earlier (lower) index wins a tie
        best = torch.where(better, value, best)
        best_index = torch.where(better, index.to(device)[where], best_index)
    best_index = best_index.cpu()
    return Matches(
        index=best_index,
        classes=data.index_to_factors(best_index),
        distance=best.cpu().round().to(torch.int64),
    )
