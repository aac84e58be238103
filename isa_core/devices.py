"""Which torch device a run uses, from the ``--device`` text (``auto``, ``cpu``, ``cuda[:N]``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from isa_core.errors import field_error

if TYPE_CHECKING:
    import torch

__all__ = ["resolve_device"]


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
