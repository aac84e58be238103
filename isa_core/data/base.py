"""The ground-truth data set API that training and metrics use, whatever the source.

A data set is a full grid of generative factors: factor k takes ``factor_sizes[k]`` values
(``factor_values[k]``), every combination appears exactly once, and the flat index of a
combination is its C-order (row-major) position, the last factor varying fastest — the order
of the real dSprites file, where posY varies fastest.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from isa_core.errors import IsaError

__all__ = ["ArrayData", "GroundTruthData"]


class GroundTruthData(ABC):
    """A data set with known generative factors laid out as a full C-order grid.

    Subclasses set ``name``, ``factor_names``, ``factor_values`` and ``image_shape`` (C, H, W)
    and implement :meth:`images`.
    """

    name: str
    factor_names: tuple[str, ...]
    factor_values: tuple[np.ndarray, ...]
    image_shape: tuple[int, int, int]
    binary: bool = False  # pixel values are 0/1 (dSprites) rather than 0..255

    @property
    def factor_sizes(self) -> tuple[int, ...]:
        return tuple(len(v) for v in self.factor_values)

    def __len__(self) -> int:
        return int(np.prod(self.factor_sizes))

    @property
    def _strides(self) -> Tensor:
        sizes = self.factor_sizes
        strides = [1] * len(sizes)
        for k in range(len(sizes) - 2, -1, -1):
            strides[k] = strides[k + 1] * sizes[k + 1]
        return torch.tensor(strides, dtype=torch.int64)

    def index_to_factors(self, index: Tensor | Sequence[int]) -> Tensor:
        """Flat indices (...,) to factor-class tuples (..., F), int64."""
        index = torch.as_tensor(index, dtype=torch.int64)
        self.check_indices(index)
        sizes = torch.tensor(self.factor_sizes, dtype=torch.int64, device=index.device)
        strides = self._strides.to(index.device)
        return (index[..., None] // strides) % sizes

    def factors_to_index(self, factors: Tensor | Sequence[Sequence[int]]) -> Tensor:
        """Factor-class tuples (..., F) to flat indices (...,), int64."""
        factors = torch.as_tensor(factors, dtype=torch.int64)
        if factors.shape[-1:] != (len(self.factor_sizes),):
            raise IsaError(
                f"{self.name} has {len(self.factor_sizes)} factors "
                f"({', '.join(self.factor_names)}); got tuples of shape {tuple(factors.shape)}"
            )
        sizes = torch.tensor(self.factor_sizes, dtype=torch.int64, device=factors.device)
        bad = (factors < 0) | (factors >= sizes)
        if bad.any():
            k = int(bad.nonzero()[0, -1])
            value = int(factors[bad][0])
            raise IsaError(
                f"factor {self.factor_names[k]} = {value} is out of range for {self.name}; "
                f"it takes classes 0..{self.factor_sizes[k] - 1}"
            )
        return (factors * self._strides.to(factors.device)).sum(-1)

    def factor_values_of(self, factors: Tensor) -> np.ndarray:
        """Real-valued factor values (N, F) float64 of factor-class tuples (N, F)."""
        classes = factors.detach().cpu().numpy()
        return np.stack([v[classes[:, k]] for k, v in enumerate(self.factor_values)], axis=1)

    def sample_factors(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """n factor-class tuples drawn uniformly from the grid, (n, F) int64 on the CPU."""
        columns = [
            torch.randint(0, size, (n,), generator=generator, dtype=torch.int64)
            for size in self.factor_sizes
        ]
        return torch.stack(columns, dim=1)

    def sample_indices(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """n flat indices drawn uniformly with replacement, (n,) int64 on the CPU."""
        return torch.randint(0, len(self), (n,), generator=generator, dtype=torch.int64)

    def check_indices(self, index: Tensor) -> None:
        """Raise IsaError naming the first flat index outside 0..len-1."""
        if index.numel() and (int(index.min()) < 0 or int(index.max()) >= len(self)):
            bad = int(index[(index < 0) | (index >= len(self))][0])
            raise IsaError(f"index {bad} is out of range for {self.name} (0..{len(self) - 1})")

    @abstractmethod
    def images(
        self, indices: Tensor | Sequence[int], device: torch.device | str | None = None
    ) -> Tensor:
        """Images at flat indices as float32 (B, C, H, W) in [0, 1] on ``device``."""

    def pixels(self, indices: Tensor | Sequence[int]) -> np.ndarray:
        """Images as the files store them: uint8 (B, H, W) or (B, H, W, C); 0/1 if binary."""
        batch = self.images(indices, "cpu")
        values = batch if self.binary else batch * 255
        array = values.round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
        return array[..., 0] if array.shape[-1] == 1 else array

    def info(self) -> dict[str, Any]:
        """What `isa data info` prints: name, size, image shape, factors."""
        return {
            "name": self.name,
            "n": len(self),
            "image_shape": list(self.image_shape),
            "binary": self.binary,
            "factors": [
                {"name": name, "size": len(values), "values": [float(v) for v in values]}
                for name, values in zip(self.factor_names, self.factor_values, strict=True)
            ],
        }


class ArrayData(GroundTruthData):
    """A data set held in memory as uint8 images in flat-index order (for file loaders)."""

    def __init__(
        self,
        name: str,
        images: Tensor,
        factor_names: Sequence[str],
        factor_values: Sequence[np.ndarray],
        binary: bool = False,
    ) -> None:
        """``images``: uint8 (N, H, W, C) in flat-index (C-order grid) order."""
        if images.dtype != torch.uint8 or images.ndim != 4:
            raise IsaError(
                f"{name}: images must be uint8 (N, H, W, C), got {images.dtype} "
                f"{tuple(images.shape)}"
            )
        self.name = name
        self.factor_names = tuple(factor_names)
        self.factor_values = tuple(np.asarray(v, dtype=np.float64) for v in factor_values)
        self.binary = binary
        self._images = images
        _, height, width, channels = images.shape
        self.image_shape = (channels, height, width)
        if not len(images) or not self.factor_names or 0 in (height, width, channels):
            raise IsaError(
                f"{name}: no images or no factors ({tuple(images.shape)}, factors "
                f"{list(self.factor_names)}); a data set needs both"
            )
        if len(images) != len(self):
            raise IsaError(
                f"{name}: {len(images)} images but the factor grid "
                f"{'x'.join(map(str, self.factor_sizes))} has {len(self)} cells"
            )

    def images(
        self, indices: Tensor | Sequence[int], device: torch.device | str | None = None
    ) -> Tensor:
        index = torch.as_tensor(indices, dtype=torch.int64)
        self.check_indices(index)
        batch = self._images[index].to(device or "cpu", non_blocking=True)
        batch = batch.permute(0, 3, 1, 2).float()
        return batch if self.binary else batch.div_(255.0)
