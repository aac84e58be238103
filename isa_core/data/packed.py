"""Binary images kept as packed bits: 1/8 of a byte per pixel, unpacked per batch."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from isa_core.data.base import GroundTruthData

__all__ = ["PackedBinaryData", "unpack_bits"]

_SHIFTS = torch.arange(7, -1, -1, dtype=torch.uint8)


def unpack_bits(packed: Tensor, pixels: int, device: torch.device | str | None = None) -> Tensor:
    """(B, ceil(P/8)) uint8 packed big-endian bits to (B, P) float32 0/1 on ``device``."""
    device = torch.device(device or "cpu")
    if device.type == "cpu":
        bits = np.unpackbits(packed.numpy(), axis=1, count=pixels)
        return torch.from_numpy(bits).float()
    on_device = packed.to(device, non_blocking=True)
    bits = (on_device[:, :, None] >> _SHIFTS.to(device)) & 1
    return bits.reshape(len(packed), -1)[:, :pixels].float()


class PackedBinaryData(GroundTruthData):
    """A binary data set stored as packed bits in flat-index order."""

    binary = True

    def __init__(
        self,
        name: str,
        packed: np.ndarray | Tensor,
        image_size: tuple[int, int],
        factor_names: Sequence[str],
        factor_values: Sequence[np.ndarray],
    ) -> None:
        self.name = name
        self.factor_names = tuple(factor_names)
        self.factor_values = tuple(np.asarray(v, dtype=np.float64) for v in factor_values)
        self.image_shape = (1, *image_size)
        self._packed = torch.as_tensor(packed, dtype=torch.uint8)

    def images(
        self, indices: Tensor | Sequence[int], device: torch.device | str | None = None
    ) -> Tensor:
        index = torch.as_tensor(indices, dtype=torch.int64).reshape(-1)
        self.check_indices(index)
        _, height, width = self.image_shape
        flat = unpack_bits(self._packed[index], height * width, device)
        return flat.reshape(len(index), 1, height, width)
