"""Where work runs: the torch device named by ``--device`` (``auto``, ``cpu``, ``cuda[:N]``),
and the CPU cores this process may use."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from isa_core.errors import field_error

if TYPE_CHECKING:
    import torch

__all__ = ["cpu_cores", "resolve_device"]


def cpu_cores() -> int:
    """The cores this process may run on (its CPU affinity, which Slurm and taskset narrow)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when present; ``cpu``, ``cuda`` and ``cuda:N`` are taken as given."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    unknown = field_error("device", f"{name!r} is unknown; use auto, cpu, cuda or cuda:N")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise unknown from None
    if device.type not in ("cpu", "cuda"):
        raise unknown
    if device.type == "cuda" and not torch.cuda.is_available():
        raise field_error("device", f"{name} was asked for but no CUDA GPU is available; use cpu")
    return device
