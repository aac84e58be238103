"""Numeric precision of a run: fp32, or the encoder and decoder under bf16 autocast.

``bf16`` runs the encoder's and decoder's matrix products in bfloat16 through
``torch.autocast``; parameters, optimizer state, the prior, the aggregate posterior and the
losses stay float32. ``auto`` means bf16 where the device multiplies bf16 matrices in hardware
(a CPU with AMX-BF16 or AVX512-BF16, a CUDA GPU with native bf16) and fp32 elsewhere.
torch is imported inside the functions; the choices are ``isa_core.choices.Precision``.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

from isa_core.choices import Precision, parse_choice
from isa_core.errors import field_error

if TYPE_CHECKING:
    import torch

__all__ = [
    "FAST_BF16_CPU_FLAGS",
    "autocast",
    "check_precision",
    "cpu_flags",
    "cuda_has_bf16",
    "resolve_precision",
]

FAST_BF16_CPU_FLAGS = frozenset({"amx_bf16", "avx512_bf16"})  # bf16 matrix instructions
CPUINFO = Path("/proc/cpuinfo")  # the probe's fallback, where torch has no flag table


def check_precision(name: Any) -> Precision:
    """``name`` as a Precision, else an IsaError naming the choices."""
    return parse_choice(Precision, "precision", name)


def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags (cpuinfo through torch, else Linux /proc/cpuinfo): auto's probe."""
    import torch

    # torch's own cpuinfo table ({"avx512_bf16": True, ...}); private, so a fallback follows.
    probe = getattr(getattr(torch._C, "_cpu", None), "_get_cpu_capability", None)
    table = probe() if probe is not None else None
    if isinstance(table, dict):
        return frozenset(name for name, value in table.items() if value is True)
    try:
        text = CPUINFO.read_text(errors="replace")
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith("flags"):
            return frozenset(line.partition(":")[2].split())
    return frozenset()


def cuda_has_bf16(device: torch.device, emulated: bool = False) -> bool:
    """Whether the CUDA ``device`` does bf16 natively (with ``emulated``: at all, if slowly)."""
    import torch

    with torch.cuda.device(device):
        try:
            return bool(torch.cuda.is_bf16_supported(including_emulation=emulated))
        except TypeError:  # torch before 2.3: no emulation argument, and no emulation counted
            return bool(torch.cuda.is_bf16_supported())


def resolve_precision(requested: Precision | str, device: torch.device) -> Precision:
    """fp32 or bf16: ``requested`` itself, or for ``auto`` what is fast on ``device``.

    Refuses bf16 on a GPU that has none (autocast would fail there at the first step).
    """
    requested = check_precision(requested)
    gpu = device.type == "cuda"
    if requested == Precision.bf16 and gpu and not cuda_has_bf16(device, emulated=True):
        raise field_error(
            "precision", f"bf16: the GPU {device} has no bf16 support; use fp32 or auto"
        )
    if requested != Precision.auto:
        return requested
    if device.type == "cpu":
        fast = bool(FAST_BF16_CPU_FLAGS & cpu_flags())
    elif device.type == "cuda":
        fast = cuda_has_bf16(device)
    else:
        fast = False
    return Precision.bf16 if fast else Precision.fp32


def autocast(device: torch.device, precision: Precision) -> contextlib.AbstractContextManager:
    """The context the encoder and decoder run in: bf16 autocast, or none for fp32.

    ``precision`` is a resolved one (fp32 or bf16), from :func:`resolve_precision`.
    """
    import torch

    if precision == Precision.bf16:
        return torch.autocast(device.type, dtype=torch.bfloat16)
    if precision == Precision.fp32:
        return contextlib.nullcontext()
    raise ValueError(f"autocast needs a resolved precision (fp32 or bf16), got {precision!r}")
