"""Codes: a model's posterior q(z|x) for every image of a data set, and the files that hold them.

`isa encode` writes a safetensors bundle with ``mean`` and ``logvar`` (N, K) float32,
``factors`` (N, F) int64 and ``logpx`` (N,) float32 (the Bernoulli log-likelihood of one
reconstruction sample per image), and metadata ``isa`` with ``kind: codes``, the factor names,
sizes and values, the model's config and path, and the precision the model ran in (the codes
are float32 whatever it was).

Codes from any model are read too (``CODES_FORMAT``): a safetensors file or an ``.npz``
archive holding at least ``mean`` (N, K) floats and ``factors`` (N, F) integer classes,
optionally ``logvar`` (N, K) and ``logpx`` (N,). Factor names and sizes come from the
safetensors ``isa`` metadata (``factor_names``, ``factor_sizes``) or the ``.npz`` entries of
those names; missing ones are inferred: names f0..f{F-1}, sizes max class + 1. ``kind`` is
optional (another ``kind`` than ``codes`` marks a file as something else). Nothing is unpickled.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from isa_core import io
from isa_core.choices import Precision
from isa_core.data import GroundTruthData
from isa_core.errors import IsaError
from isa_core.models import VAE, reparameterize
from isa_core.objectives import bernoulli_log_likelihood
from isa_core.precision import autocast, resolve_precision

__all__ = [
    "CODES_FORMAT",
    "Codes",
    "codes_of_bundle",
    "encode",
    "is_codes_file",
    "load_codes",
    "looks_like_codes",
    "save_codes",
]

CODES_FORMAT = (
    "a codes file is a safetensors file or an .npz archive holding 'mean' (N, K) floats and "
    "'factors' (N, F) integer classes 0..size-1, optionally 'logvar' (N, K) and 'logpx' (N,); "
    "factor names and sizes come from the safetensors 'isa' metadata or the .npz entries "
    "'factor_names' and 'factor_sizes', else they are inferred (f0.., max class + 1)"
)
NO_LOGVAR = (
    "the codes have no 'logvar' (posterior variances), which {what} needs; score the "
    "posterior means instead (estimator histogram, or protocol locatello2019)"
)


@dataclass
class Codes:
    """q(z|x) = N(mean, exp(logvar)) of N images, their factor classes, and the file's metadata."""

    mean: np.ndarray  # (N, K)
    logvar: np.ndarray | None  # (N, K); None for codes of means only
    factors: np.ndarray  # (N, F) int64
    logpx: np.ndarray | None  # (N,)
    metadata: dict[str, Any]

    @property
    def std(self) -> np.ndarray:
        """The posterior standard deviations, (N, K) float64; refused for codes of means only."""
        return np.exp(0.5 * self.require_logvar("the posterior").astype(np.float64))

    def require_logvar(self, what: str) -> np.ndarray:
        """``logvar``, or an IsaError in one line saying that ``what`` needs it."""
        if self.logvar is None:
            raise IsaError(NO_LOGVAR.format(what=what))
        return self.logvar

    @property
    def factor_names(self) -> list[str]:
        """The names of the factor columns."""
        return list(self.metadata["factor_names"])

    @property
    def factor_sizes(self) -> list[int]:
        """The number of classes of each factor (stated by the file, or max class + 1)."""
        return list(self.metadata["factor_sizes"])


@torch.no_grad()
def encode(
    model: VAE,
    data: GroundTruthData,
    device: torch.device,
    batch_size: int = 2048,
    seed: int = 0,
    on_batch: Callable[[int, int], None] | None = None,
    precision: Precision | str = Precision.fp32,
) -> Codes:
    """q(z|x) of every image, in flat-index order, and log p(x|z) of one sample z per image.

    ``precision`` (fp32, bf16 or auto) is that of the encoder and decoder, as in training.
    """
    if tuple(data.image_shape) != tuple(model.image_shape):
        raise IsaError(
            f"the model was trained on {tuple(model.image_shape)} images, but {data.name} has "
            f"{tuple(data.image_shape)}"
        )
    resolved = resolve_precision(precision, device)
    model = model.to(device).eval()
    n, k = len(data), model.latent_dim
    mean = np.empty((n, k), dtype=np.float32)
    logvar = np.empty((n, k), dtype=np.float32)
    logpx = np.empty(n, dtype=np.float32)
    generator = torch.Generator(device=device).manual_seed(seed)
    for start in range(0, n, batch_size):
        index = torch.arange(start, min(n, start + batch_size))
        x = data.images(index, device)
        with autocast(device, resolved):
            m, lv = model.encode(x)  # float32 out, whatever the precision
        z = reparameterize(m, lv, generator)
        with autocast(device, resolved):
            logits = model.decode(z)  # float32 out
        # The log-likelihood sums 4096 pixel terms: fp32, outside autocast.
        logpx[start : start + len(index)] = bernoulli_log_likelihood(logits, x, "eager").cpu()
        mean[start : start + len(index)] = m.cpu()
        logvar[start : start + len(index)] = lv.cpu()
        if on_batch is not None:
            on_batch(start + len(index), n)
    factors = data.index_to_factors(torch.arange(n)).numpy()
    metadata = {
        "kind": "codes",
        "data": data.name,
        "factor_names": list(data.factor_names),
        "factor_sizes": list(data.factor_sizes),
        "factor_values": [[float(v) for v in values] for values in data.factor_values],
        "precision": resolved,
    }
    return Codes(mean, logvar, factors, logpx, metadata)


def save_codes(path: Path | str, codes: Codes) -> None:
    """Write ``codes`` as a codes file (atomically, through ``io.save_bundle``)."""
    tensors = {
        "mean": torch.from_numpy(codes.mean),
        "factors": torch.from_numpy(codes.factors.astype(np.int64)),
    }
    if codes.logvar is not None:
        tensors["logvar"] = torch.from_numpy(codes.logvar)
    if codes.logpx is not None:
        tensors["logpx"] = torch.from_numpy(codes.logpx)
    io.save_bundle(path, tensors, codes.metadata)


def is_codes_file(metadata: Any) -> bool:
    """Whether a bundle's metadata marks it as a codes file (rather than a model)."""
    return isinstance(metadata, dict) and metadata.get("kind") == "codes"


def looks_like_codes(tensors: Any, metadata: Any) -> bool:
    """Whether a bundle holds codes: it says ``kind: codes``, or says no kind and has ``mean``."""
    if not isinstance(metadata, dict):
        return False
    kind = metadata.get("kind")
    return kind == "codes" or (kind is None and "mean" in tensors)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_metadata(path: Path | str, metadata: dict[str, Any], factors: int) -> None:
    """Refuse codes metadata whose fields have the wrong types or lengths, naming the file."""

    def bad(field: str, expected: str) -> IsaError:
        return IsaError(
            f"{path}: malformed codes metadata: '{field}' must be {expected}; "
            "fix it, leave it out (names and sizes are then inferred) or re-run `isa encode`"
        )

    names = metadata.get("factor_names")
    if names is not None and (
        not isinstance(names, list) or not all(isinstance(n, str) for n in names)
    ):
        raise bad("factor_names", "a list of strings")
    if names is not None and (len(names) != factors or len(set(names)) != len(names)):
        raise bad("factor_names", f"{factors} distinct names, one per factor column")
    sizes = metadata.get("factor_sizes")
    if sizes is not None and (
        not isinstance(sizes, list)
        or len(sizes) != factors
        or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in sizes)
    ):
        raise bad("factor_sizes", f"a list of {factors} positive integers")
    values = metadata.get("factor_values")
    if values is not None and (
        not isinstance(values, list)
        or len(values) != factors
        or not all(isinstance(v, list) and all(_is_number(x) for x in v) for v in values)
    ):
        raise bad("factor_values", f"a list of {factors} lists of numbers")
    config = metadata.get("config")
    if config is not None and not isinstance(config, dict):
        raise bad("config", "an object")
    if isinstance(config, dict) and not isinstance(config.get("tree", ""), str):
        raise bad("config.tree", "a tree spec string")


def _inferred(path: Path | str, metadata: dict[str, Any], factors: np.ndarray) -> dict:
    """``metadata`` with factor names (f0, f1, ...) and sizes (max class + 1) filled in where
    the file leaves them out."""
    filled = dict(metadata)
    if filled.get("factor_names") is None:
        filled["factor_names"] = [f"f{i}" for i in range(factors.shape[1])]
    if filled.get("factor_sizes") is None and len(factors):
        if factors.min() < 0:
            raise IsaError(
                f"{path}: 'factors' holds negative classes, so the factor sizes cannot be "
                "inferred; number the classes 0..size-1 or state factor_sizes"
            )
        filled["factor_sizes"] = [int(v) + 1 for v in factors.max(axis=0)]
    return filled


def _assemble(
    path: Path | str,
    mean: np.ndarray,
    logvar: np.ndarray | None,
    factors: np.ndarray,
    logpx: np.ndarray | None,
    metadata: dict[str, Any],
) -> Codes:
    """Check the arrays of a codes file against each other and build its Codes."""
    given = f"mean {mean.shape}" + ("" if logvar is None else f", logvar {logvar.shape}")
    if (
        mean.ndim != 2
        or (logvar is not None and mean.shape != logvar.shape)
        or factors.ndim != 2
        or factors.shape[0] != mean.shape[0]
    ):
        raise IsaError(
            f"{path}: {given} and factors {factors.shape} do not fit together "
            "(mean and logvar (N, K), factors (N, F))"
        )
    if not (np.isfinite(mean).all() and (logvar is None or np.isfinite(logvar).all())):
        raise IsaError(f"{path}: the codes contain NaN or inf (the model may have diverged)")
    _check_metadata(path, metadata, factors.shape[1])
    if logpx is not None and (logpx.shape != (len(mean),) or not np.isfinite(logpx).all()):
        raise IsaError(
            f"{path}: 'logpx' must hold {len(mean)} finite values, got shape {logpx.shape}"
        )
    return Codes(mean, logvar, factors, logpx, _inferred(path, metadata, factors))


def codes_of_bundle(path: Path | str, bundle: io.Bundle) -> Codes:
    """The codes a safetensors bundle holds (any writer; see ``CODES_FORMAT``), validated."""
    if not looks_like_codes(bundle.tensors, bundle.metadata):
        raise IsaError(
            f"{path} is not a codes file (write one with `isa encode`, or see the codes format: "
            f"{CODES_FORMAT})"
        )
    tensors = bundle.tensors
    if "mean" not in tensors:
        raise IsaError(f"{path} has no 'mean' tensor; re-run `isa encode`")
    for key in ("mean", "logvar", "logpx"):
        if key in tensors and not tensors[key].is_floating_point():
            raise IsaError(f"{path}: '{key}' has dtype {tensors[key].dtype}; expected float32")
    if "factors" not in tensors:
        raise IsaError(f"{path} has no factors; MIG needs the ground-truth factors of each image")
    if tensors["factors"].is_floating_point() or tensors["factors"].is_complex():
        raise IsaError(f"{path}: 'factors' has dtype {tensors['factors'].dtype}; expected int64")

    def array(key: str) -> np.ndarray | None:
        return tensors[key].double().numpy() if key in tensors else None

    factors = tensors["factors"].to(torch.int64).numpy()
    return _assemble(path, array("mean"), array("logvar"), factors, array("logpx"), bundle.metadata)


def _codes_of_npz(path: Path | str, archive: io.NpzArchive) -> Codes:
    """The codes an ``.npz`` archive holds (see ``CODES_FORMAT``), read without pickles."""
    present = set(archive.files)
    if "mean" not in present or "factors" not in present:
        missing = "'mean'" if "mean" not in present else "'factors'"
        raise IsaError(
            f"{path} has no {missing} entry; a codes .npz holds 'mean' (N, K) and 'factors' "
            "(N, F), optionally 'logvar', 'logpx', 'factor_names' and 'factor_sizes'"
        )

    def floats(key: str) -> np.ndarray | None:
        if key not in present:
            return None
        return archive.array(key, "f", "floats").astype(np.float64)

    factors = archive.array("factors", "iu", "integer classes").astype(np.int64)
    metadata: dict[str, Any] = {}
    if "factor_names" in present:
        names = archive.array("factor_names", "U", "an array of strings")
        metadata["factor_names"] = [str(n) for n in names.ravel()]
    if "factor_sizes" in present:
        sizes = archive.array("factor_sizes", "iu", "an array of integers")
        metadata["factor_sizes"] = [int(v) for v in sizes.ravel()]
    return _assemble(path, floats("mean"), floats("logvar"), factors, floats("logpx"), metadata)


def load_codes(path: Path | str) -> Codes:
    """Read and validate a codes file, safetensors or ``.npz`` (``CODES_FORMAT``); raise
    IsaError naming the file for any malformed part."""
    handle, kind = io.open_input(path)
    if kind == "zip":
        with io.NpzArchive(handle, kind, Path(path)) as archive:
            return _codes_of_npz(path, archive)
    handle.close()
    return codes_of_bundle(path, io.load_bundle(path, require_metadata=False))
