"""Kernels compiled by TorchInductor (``torch.compile``) for a training step's elementwise work.

The TC estimator (``aggregate``) and the Bernoulli log-likelihood (``objectives``) each have an
eager path and a compiled path that fuses their elementwise passes: C++ loop nests on the CPU,
Triton kernels on CUDA. Both follow one rule, chosen by a ``backend`` argument:

* ``auto``: compiled on the CPU or a CUDA device when the work is large enough to repay
  compiling (seconds, once per shape and process), eager elsewhere. Where compiling fails (no
  C++ compiler, no Triton, an unsupported platform), one RuntimeWarning names the failure and
  every later call in the process takes the eager path, which computes the same values.
* ``fused``: compiled at any size; a failure to compile is raised (for tests and benchmarks).
* ``eager``: never compiled.
"""

from __future__ import annotations

import contextlib
import functools
import warnings
from collections.abc import Iterator

from isa_core.choices import Backend, parse_choice

__all__ = [
    "FUSED_DEVICES",
    "FUSED_MIN_VALUES",
    "check_backend",
    "compile_errors",
    "compiling",
    "fused_available",
    "give_up_fused",
    "wants_fused",
]

# Below about 4 million elementwise terms per call a step saves under 10 ms by fusing, so the
# seconds of compiling would take hundreds of steps to repay: auto stays eager there.
FUSED_MIN_VALUES = 1 << 22
FUSED_DEVICES = ("cpu", "cuda")  # where TorchInductor compiles: C++ on the CPU, Triton on CUDA
_BROKEN: list[str] = []  # the first compile error of this process, once one happened


def check_backend(name: str) -> Backend:
    """``name`` as a Backend, else an IsaError naming the choices."""
    return parse_choice(Backend, "backend", name)


def wants_fused(backend: str, device_type: str, values: int) -> bool:
    """Whether a call should try the compiled kernels (see the module docstring for the rule)."""
    backend = check_backend(backend)
    if backend == Backend.fused:
        return True
    return (
        backend == Backend.auto
        and device_type in FUSED_DEVICES
        and values >= FUSED_MIN_VALUES
        and not _BROKEN
    )


@functools.cache
def compile_errors() -> tuple[type[Exception], ...]:
    """What torch.compile raises when it cannot compile: no or a broken C++ compiler, an
    Inductor failure. Only these fall back to eager; any other error is a bug and propagates."""
    from torch._dynamo.exc import BackendCompilerFailed
    from torch._inductor.exc import CppCompileError, InvalidCxxCompiler

    # InductorError, raised for a failed compile by recent torch, is a BackendCompilerFailed.
    return BackendCompilerFailed, CppCompileError, InvalidCxxCompiler


def fused_available() -> bool:
    """False once compiling has failed in this process (``auto`` then stays eager)."""
    return not _BROKEN


def give_up_fused(error: Exception, what: str) -> None:
    """Record a compile failure and say so once, in one line; later calls stay eager."""
    text = str(error).strip()
    message = text.splitlines()[0] if text else repr(error)
    first = not _BROKEN
    _BROKEN.append(message)
    if first:
        warnings.warn(
            f"compiled {what} kernels unavailable ({message}); using the eager path",
            RuntimeWarning,
            stacklevel=4,
        )


@contextlib.contextmanager
def compiling() -> Iterator[None]:
    """Compile in-process (no worker pool) and keep TorchInductor's own warnings off stderr."""
    import torch._inductor.config as inductor_config

    with inductor_config.patch(compile_threads=1), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        # Inductor's advice on CUDA; isa keeps float32 matrix products exact (no TF32).
        warnings.filterwarnings("ignore", message="TensorFloat32 tensor cores")
        yield
