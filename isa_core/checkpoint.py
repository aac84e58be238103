"""A run folder on disk: its files, their lifecycle, and the state a resume needs.

A run lives in a folder: ``model.safetensors`` (weights, the prior's exponents included, and the
whole config as metadata), ``train_state.safetensors`` (the same weights, optimizer moments, RNG
states, step, and the model file's metadata) and ``metrics.jsonl``.

Kill safety: each file is replaced by an atomic rename, the state file first. The state file
alone holds everything a resume needs, so whenever a kill lands, the state file is a complete
checkpoint no older than the model file, and the model file is a complete (maybe one checkpoint
older) model. A resume that finds the model file behind rewrites it from the state file.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from isa_core import io
from isa_core.config import TrainConfig
from isa_core.errors import IsaError
from isa_core.locks import LOCK_FILE
from isa_core.models import VAE, build_model

__all__ = [
    "METRICS_FILE",
    "MODEL_FILE",
    "STATE_FILE",
    "RunState",
    "load_model",
    "prepare_folder",
    "read_run_config",
    "restore_state",
    "save_state",
    "trim_metrics",
]

MODEL_FILE = "model.safetensors"
STATE_FILE = "train_state.safetensors"
METRICS_FILE = "metrics.jsonl"
MAX_IMAGE_VALUES = 2**24  # pixels times channels of a stored image_shape (dSprites: 4,096)
ADAM_STATE = ("step", "exp_avg", "exp_avg_sq")  # what our Adam keeps for each parameter
_WEIGHTS = "model."  # prefix of the weights in the state file
_CRITIC = "disc."  # prefix of FactorVAE's discriminator in the state file


# -- the model file -----------------------------------------------------------------------------


def load_model(path: Path | str, device: torch.device | str = "cpu") -> tuple[VAE, dict]:
    """A trained model and its metadata from ``model.safetensors``."""
    bundle = io.load_bundle(path)
    meta = bundle.metadata
    if not isinstance(meta, dict) or "config" not in meta or "image_shape" not in meta:
        raise IsaError(f"{path} is not an isa model (no config in its metadata)")
    config = TrainConfig.from_metadata(meta["config"], str(path))
    shape = meta["image_shape"]
    if not (
        isinstance(shape, list)
        and len(shape) == 3
        and all(isinstance(k, int) and not isinstance(k, bool) and k >= 1 for k in shape)
        and math.prod(shape) <= MAX_IMAGE_VALUES
    ):
        raise IsaError(
            f"{path} has a malformed image_shape {shape!r} in its metadata (want [C, H, W], "
            f"at most {MAX_IMAGE_VALUES} values); the file is damaged, train the model again"
        )
    try:
        # Built on the meta device first: a forged image_shape must not allocate gigabytes.
        with torch.device("meta"):
            expected = build_model(config, tuple(shape)).state_dict()
    except (IsaError, RuntimeError) as error:
        first = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise IsaError(f"{path}: its metadata does not describe a model ({first})") from None
    found = {name: tuple(t.shape) for name, t in bundle.tensors.items()}
    if found != {name: tuple(t.shape) for name, t in expected.items()}:
        raise IsaError(
            f"{path}: weights do not match its config (names or shapes differ); the file is "
            "damaged or was not written by isa train"
        )
    _check_model_tensors(path, bundle.tensors, config)
    model = build_model(config, tuple(shape))
    try:
        model.load_state_dict(bundle.tensors)
    except RuntimeError as error:
        first = str(error).splitlines()[0]
        raise IsaError(f"{path}: weights do not match its config ({first})") from None
    return model.to(device).eval(), meta


def _check_model_tensors(path: Path | str, tensors: dict[str, Tensor], config: TrainConfig) -> None:
    """Refuse weights that are not finite, and a prior that is not the one its config names.

    The scale and p0 are fixed, so they must equal the config's (to float32 precision); so
    must the subspace exponents unless they were learned: then they must be positive, finite.
    """
    fix = "the file is damaged; train the model again"
    for name, tensor in tensors.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise IsaError(f"{path}: tensor {name!r} holds NaN or infinite values; {fix}")
    tree = config.tree
    scale = tensors["prior.scale"].double()
    if not math.isclose(float(scale), config.scale, rel_tol=1e-6):
        raise IsaError(
            f"{path}: tensor 'prior.scale' is {float(scale):g}, but its config has scale "
            f"{config.scale:g}; {fix}"
        )
    p0 = tensors["prior.p0"].double()
    if not torch.allclose(p0, torch.tensor([tree.p0], dtype=torch.float64), rtol=1e-6, atol=0):
        raise IsaError(
            f"{path}: tensor 'prior.p0' is {p0.tolist()}, but its config's tree {tree} has p0 "
            f"{tree.p0:g}; {fix}"
        )
    name = "prior.exponents_unconstrained"
    exponents = tensors[name].double().exp()  # the positive transform of the prior
    if config.learn_exponents:
        bad = [p for p in exponents.tolist() if not (0 < p < math.inf)]
        if bad:
            raise IsaError(
                f"{path}: tensor {name!r} gives the exponent {bad[0]:g}; learned exponents "
                f"must be positive finite numbers; {fix}"
            )
    else:
        expected = torch.tensor(tree.exponents[1:], dtype=torch.float64)
        if not torch.allclose(exponents, expected, rtol=1e-6, atol=0):
            raise IsaError(
                f"{path}: tensor {name!r} gives the exponents {exponents.tolist()}, but its "
                f"config's tree {tree} has {expected.tolist()}; {fix}"
            )


def read_run_config(folder: Path) -> TrainConfig:
    """The config of the run checkpointed in ``folder`` (from its state file, the newest)."""
    path = folder / STATE_FILE
    meta = io.load_bundle(path).metadata
    if not isinstance(meta, dict) or "config" not in meta:
        raise IsaError(f"{path} has no run config; it was not written by isa train")
    return TrainConfig.from_metadata(meta["config"], str(path))


def _model_step(path: Path) -> int | None:
    """The step of the model file at ``path``, or None when it is missing or unreadable."""
    if not path.exists():
        return None
    try:
        meta = io.load_bundle(path).metadata
    except IsaError:
        return None
    return meta.get("step") if isinstance(meta, dict) else None


# -- the state file -----------------------------------------------------------------------------


@dataclass
class RunState:
    """What a checkpoint saves besides the config: weights, optimizers, random streams.

    ``critic`` and ``critic_optimizer`` are FactorVAE's discriminator and its Adam (else None).
    """

    model: VAE
    optimizer: torch.optim.Optimizer
    noise: torch.Generator
    aux: torch.Generator
    critic: nn.Module | None = None
    critic_optimizer: torch.optim.Optimizer | None = None


def save_state(folder: Path, state: RunState, step: int, model_meta: dict[str, Any]) -> Path:
    """Checkpoint: the self-sufficient state file first, then the model file; its path."""
    weights = state.model.state_dict()  # fp32 (prior float64) in every precision
    tensors = {"rng.noise": state.noise.get_state(), "rng.aux": state.aux.get_state()}
    tensors.update({f"{_WEIGHTS}{k}": v for k, v in weights.items()})
    tensors.update(_optimizer_tensors("opt", state.optimizer))
    if state.critic is not None and state.critic_optimizer is not None:
        tensors.update({f"{_CRITIC}{k}": v for k, v in state.critic.state_dict().items()})
        tensors.update(_optimizer_tensors("dopt", state.critic_optimizer))
    # The state file also carries the weights and the model file's metadata, so a kill
    # between the two renames leaves a complete state and an older but complete model.
    state_meta = {"step": step, "config": model_meta["config"], "model": model_meta}
    io.save_bundle(folder / STATE_FILE, tensors, state_meta)
    io.save_bundle(folder / MODEL_FILE, weights, model_meta)
    return (folder / MODEL_FILE).resolve()


def restore_state(folder: Path, state: RunState) -> int:
    """Load the checkpoint in ``folder`` into ``state``; its step. Rewrites a lagging model file."""
    path = folder / STATE_FILE
    bundle = io.load_bundle(path)
    state_meta, tensors = bundle.metadata, bundle.tensors
    step = state_meta.get("step") if isinstance(state_meta, dict) else None
    if not isinstance(step, int) or isinstance(step, bool) or step < 0:
        raise IsaError(f"{path} has no valid step; the saved state is corrupt")
    weights = {k[len(_WEIGHTS) :]: v for k, v in tensors.items() if k.startswith(_WEIGHTS)}
    model_meta = state_meta.get("model")
    if not weights or not isinstance(model_meta, dict):
        weights = _weights_of_older_run(folder, step)
        model_meta = None
    optimizer_state = _optimizer_state(path, "opt", state.optimizer, tensors)
    critic_state = None
    if state.critic_optimizer is not None:
        critic_state = _optimizer_state(path, "dopt", state.critic_optimizer, tensors)
    try:
        state.model.load_state_dict(weights)
        state.noise.set_state(tensors["rng.noise"])
        state.aux.set_state(tensors["rng.aux"])
        _restore_optimizer(state.optimizer, optimizer_state)
        if state.critic is not None and state.critic_optimizer is not None:
            critic = {k[len(_CRITIC) :]: v for k, v in tensors.items() if k.startswith(_CRITIC)}
            state.critic.load_state_dict(critic)
            _restore_optimizer(state.critic_optimizer, critic_state)
    except (KeyError, RuntimeError, ValueError) as error:
        first = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise IsaError(f"{folder}: cannot resume, the saved state is corrupt ({first})") from None
    if model_meta is not None and _model_step(folder / MODEL_FILE) != step:
        io.save_bundle(folder / MODEL_FILE, weights, model_meta)
    return step


def _weights_of_older_run(folder: Path, step: int) -> dict[str, Tensor]:
    """Weights of a run checkpointed before state files carried them: the model file's."""
    model_bundle = io.load_bundle(folder / MODEL_FILE)
    if step != model_bundle.metadata.get("step"):
        raise IsaError(
            f"{folder}: {MODEL_FILE} and {STATE_FILE} are from different steps, and this older "
            "run's state file holds no weights; start it over with --force"
        )
    return model_bundle.tensors


# -- the optimizer-state codec ------------------------------------------------------------------


def _optimizer_tensors(prefix: str, optimizer: torch.optim.Optimizer) -> dict[str, Tensor]:
    """Adam's per-parameter state as flat tensors ``prefix.<index>.<name>``."""
    tensors = {}
    for index, state in optimizer.state_dict()["state"].items():
        for name, value in state.items():
            tensors[f"{prefix}.{index}.{name}"] = torch.as_tensor(value)
    return tensors


def _optimizer_state(
    path: Path, prefix: str, optimizer: torch.optim.Optimizer, tensors: dict[str, Tensor]
) -> dict[int, dict[str, Tensor]]:
    """The saved Adam state under ``prefix``, checked against the optimizer's parameters.

    A moment of the wrong shape would crash the fused Adam kernel (a segfault, not an error),
    so every tensor is checked before the optimizer sees it.
    """
    params = [p for group in optimizer.param_groups for p in group["params"]]
    fix = "the saved state is damaged; start the run over with --force"
    state: dict[int, dict[str, Tensor]] = {}
    for key, value in tensors.items():
        if not key.startswith(prefix + "."):
            continue
        index, _, name = key[len(prefix) + 1 :].partition(".")
        if not (index.isdigit() and int(index) < len(params) and name in ADAM_STATE):
            raise IsaError(f"{path}: unexpected optimizer tensor {key!r}; {fix}")
        param = params[int(index)]
        want = (tuple(param.shape), param.dtype) if name != "step" else None
        if want is not None and (tuple(value.shape), value.dtype) != want:
            raise IsaError(
                f"{path}: optimizer tensor {key!r} is {value.dtype} {tuple(value.shape)}, but "
                f"its parameter is {param.dtype} {tuple(param.shape)}; {fix}"
            )
        if name == "step" and not (value.shape == () and value.is_floating_point()):
            raise IsaError(f"{path}: optimizer tensor {key!r} is not a step count; {fix}")
        if not bool(torch.isfinite(value).all()):
            raise IsaError(f"{path}: optimizer tensor {key!r} holds NaN or infinite values; {fix}")
        state.setdefault(int(index), {})[name] = value
    for index, entry in state.items():
        missing = [name for name in ADAM_STATE if name not in entry]
        if missing:
            raise IsaError(f"{path}: optimizer state {prefix}.{index} has no {missing[0]}; {fix}")
    return state


def _restore_optimizer(optimizer: torch.optim.Optimizer, state: dict) -> None:
    current = optimizer.state_dict()
    current["state"] = state
    optimizer.load_state_dict(current)


# -- the folder and its metrics log -------------------------------------------------------------


def trim_metrics(path: Path, last_step: int) -> None:
    """Drop log lines written after the checkpoint we resume from.

    The log is secondary, so lines that are not records (cut short by a kill, not UTF-8, not
    JSON objects) are dropped too instead of stopping the resume.
    """
    if not path.is_file():
        return
    kept = []
    for line in path.read_bytes().splitlines():
        try:
            record = json.loads(line.decode("utf-8"))
        except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError too
            continue
        step = record.get("step") if isinstance(record, dict) else None
        if isinstance(step, int) and not isinstance(step, bool) and step <= last_step:
            kept.append(line + b"\n")
    with io.atomic_write(path) as handle:
        handle.write(b"".join(kept))


def _run_entries(folder: Path) -> list[Path]:
    """What the folder holds, its lock file and our temporaries aside."""
    return [
        entry
        for entry in folder.iterdir()
        if entry.name != LOCK_FILE
        and not (entry.name.startswith(".") and entry.name.endswith(".tmp"))
    ]


def prepare_folder(folder: Path, resume: bool, force: bool) -> None:
    """Check the run folder: new, resumable, or explicitly overwritten (parents are created).

    Callers that may race with another writer hold :func:`isa_core.locks.folder_lock` first.
    """
    if folder.exists() and not folder.is_dir():
        raise IsaError(f"--out {folder} is a file; give a folder for the run")
    if resume:
        if not (folder / STATE_FILE).exists():
            holds_run = folder.is_dir() and bool(_run_entries(folder))
            fix = (
                "start it over with --force instead of --resume"
                if holds_run
                else "start a new run without --resume"
            )
            raise IsaError(f"--resume: {folder} holds no checkpoint ({STATE_FILE}) yet; {fix}")
        io.remove_stale_temporaries(folder)  # left by killed writers
        return
    if folder.is_dir() and _run_entries(folder) and not force:
        raise IsaError(
            f"--out {folder} already holds a run; use --resume to continue it or --force to "
            "start over"
        )
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise IsaError(f"cannot create the run folder {folder}: {error.strerror}") from None
    io.remove_stale_temporaries(folder)  # left by killed writers
    # The state first: a kill part-way through leaves no resumable checkpoint behind.
    for name in (STATE_FILE, MODEL_FILE, METRICS_FILE):
        (folder / name).unlink(missing_ok=True)
