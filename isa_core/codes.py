"""Codes: a model's posterior q(z|x) for every image of a data set, and the files that hold them.

A codes file is a safetensors bundle with ``mean`` and ``logvar`` (N, K) float32, ``factors``
(N, F) int64 and ``logpx`` (N,) float32 (the Bernoulli log-likelihood of one reconstruction
sample per image), and metadata ``isa`` with ``kind: codes``, the factor names, sizes and
values, the model's config and path, and the precision the model ran in (the codes are float32
whatever it was).
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

__all__ = ["Codes", "encode", "is_codes_file", "load_codes", "save_codes"]


@dataclass
class Codes:
    """q(z|x) = N(mean, exp(logvar)) of N images, their factor classes, and the file's metadata."""

    mean: np.ndarray  # (N, K)
    logvar: np.ndarray  # (N, K)
    factors: np.ndarray  # (N, F) int64
    logpx: np.ndarray | None  # (N,)
    metadata: dict[str, Any]

    @property
    def std(self) -> np.ndarray:
        """The posterior standard deviations, (N, K) float64."""
        return np.exp(0.5 * self.logvar.astype(np.float64))

    @property
    def factor_names(self) -> list[str]:
        """The names of the factor columns."""
        return list(self.metadata["factor_names"])


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
        "logvar": torch.from_numpy(codes.logvar),
        "factors": torch.from_numpy(codes.factors.astype(np.int64)),
    }
    if codes.logpx is not None:
        tensors["logpx"] = torch.from_numpy(codes.logpx)
    io.save_bundle(path, tensors, codes.metadata)


def is_codes_file(metadata: Any) -> bool:
    """Whether a bundle's metadata marks it as a codes file (rather than a model)."""
    return isinstance(metadata, dict) and metadata.get("kind") == "codes"


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_metadata(path: Path | str, metadata: dict[str, Any], factors: int) -> None:
    """Refuse codes metadata whose fields have the wrong types or lengths, naming the file."""

    def bad(field: str, expected: str) -> IsaError:
        return IsaError(
            f"{path}: malformed codes metadata: '{field}' must be {expected}; "
            "re-run `isa encode` to rewrite the file"
        )

    names = metadata.get("factor_names")
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise bad("factor_names", "a list of strings")
    if len(names) != factors or len(set(names)) != len(names):
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


def load_codes(path: Path | str) -> Codes:
    """Read and validate a codes file; raise IsaError naming the file for any malformed part."""
    bundle = io.load_bundle(path)
    if not is_codes_file(bundle.metadata):
        raise IsaError(f"{path} is not a codes file (write one with `isa encode`)")
    tensors = bundle.tensors
    for key in ("mean", "logvar"):
        if key not in tensors:
            raise IsaError(f"{path} has no '{key}' tensor; re-run `isa encode`")
        if not tensors[key].is_floating_point():
            raise IsaError(f"{path}: '{key}' has dtype {tensors[key].dtype}; expected float32")
    if "factors" not in tensors or "factor_names" not in bundle.metadata:
        raise IsaError(f"{path} has no factors; MIG needs the ground-truth factors of each image")
    if tensors["factors"].is_floating_point() or tensors["factors"].is_complex():
        raise IsaError(f"{path}: 'factors' has dtype {tensors['factors'].dtype}; expected int64")
    mean, logvar = tensors["mean"].double().numpy(), tensors["logvar"].double().numpy()
    factors = tensors["factors"].to(torch.int64).numpy()
    if (
        mean.shape != logvar.shape
        or mean.ndim != 2
        or factors.ndim != 2
        or factors.shape[0] != mean.shape[0]
    ):
        raise IsaError(
            f"{path}: mean {mean.shape}, logvar {logvar.shape} and factors "
            f"{factors.shape} do not fit together"
        )
    if not (np.isfinite(mean).all() and np.isfinite(logvar).all()):
        raise IsaError(f"{path}: the codes contain NaN or inf (the model may have diverged)")
    _check_metadata(path, bundle.metadata, factors.shape[1])
    logpx = None
    if "logpx" in tensors:
        logpx = tensors["logpx"].double().numpy()
        if logpx.shape != (len(mean),) or not np.isfinite(logpx).all():
            raise IsaError(
                f"{path}: 'logpx' must hold {len(mean)} finite values, got shape {logpx.shape}"
            )
    return Codes(mean, logvar, factors, logpx, bundle.metadata)
