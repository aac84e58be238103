"""Kernels compiled by TorchInductor (``torch.compile``) for a training step's elementwise work.

The TC estimator (``aggregate``) and the Bernoulli log-likelihood (``objectives``) each have an
eager path and a compiled CPU path that fuses their elementwise passes into loop nests. Both
follow one rule, chosen by a ``backend`` argument:

* ``auto``: compiled on the CPU when the work is large enough to repay compiling (a few seconds,
  once per shape and process), eager elsewhere. Where compiling fails (no C++ compiler, an
  unsupported platform), one RuntimeWarning names the failure and every later call in the
  process takes the eager path, which computes the same values.
* ``fused``: compiled at any size; a failure to compile is raised (for tests and benchmarks).
* ``eager``: never compiled.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator

from isa_core.errors import IsaError

__all__ = [
    "BACKENDS",
    "FUSED_MIN_VALUES",
    "check_backend",
    "compiling",
    "fused_available",
    "give_up_fused",
    "wants_fused",
]

BACKENDS = ("auto", "fused", "eager")
# Below about 4 million elementwise terms per call a step saves under 10 ms by fusing, so the
# seconds of compiling would take hundreds of steps to repay: auto stays eager there.
FUSED_MIN_VALUES = 1 << 22
_BROKEN: list[str] = []  # the first compile error of this process, once one happened


def check_backend(name: str) -> str:
    """``name`` if it is one of BACKENDS, else an IsaError naming the choices."""
    if name not in BACKENDS:
        raise IsaError(f"unknown backend {name!r}; use auto, fused or eager")
    return name


def wants_fused(backend: str, device_type: str, values: int) -> bool:
    """Whether a call should try the compiled kernels (see the module docstring for the rule)."""
    check_backend(backend)
    if backend == "fused":
        return True
    return backend == "auto" and device_type == "cpu" and values >= FUSED_MIN_VALUES and not _BROKEN


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
        yield
