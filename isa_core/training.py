"""The training loop: batches drawn on the device, checkpoints, exact resume, a metrics log.

A run lives in a folder: ``model.safetensors`` (weights, the prior's exponents included, and the
whole config as metadata), ``train_state.safetensors`` (the same weights, optimizer moments, RNG
states, step, and the model file's metadata) and ``metrics.jsonl``. Batches follow a per-epoch
permutation derived from the seed, and every random stream is a generator whose state is
checkpointed, so on the CPU a resumed run ends with the same tensors as an uninterrupted one.

Precision (``isa_core.precision``): with bf16 the encoder and decoder run under autocast; the
weights, Adam's moments, the prior, the TC estimator and the losses keep their fp32 (the
prior's float64), so checkpoints are alike whatever the precision, and a run may resume in
another precision.

Kill safety: each file is replaced by an atomic rename, the state file first. The state file
alone holds everything a resume needs, so whenever a kill lands, the state file is a complete
checkpoint no older than the model file, and the model file is a complete (maybe one checkpoint
older) model. A resume that finds the model file behind rewrites it from the state file.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

import isa_core
from isa_core import io
from isa_core.data import GroundTruthData, open_dataset
from isa_core.errors import IsaError
from isa_core.locks import LOCK_FILE
from isa_core.models import VAE, reparameterize
from isa_core.objectives import (
    Discriminator,
    discriminator_loss,
    factorvae_loss,
    tcvae_loss,
    vae_loss,
)
from isa_core.precision import PRECISIONS, autocast, check_precision, resolve_precision
from isa_core.priors import LpNestedPrior, LpTree

__all__ = [
    "TrainConfig",
    "TrainResult",
    "config_from_metadata",
    "load_model",
    "preflight",
    "prepare_folder",
    "read_run_config",
    "train",
]

MODEL_FILE = "model.safetensors"
STATE_FILE = "train_state.safetensors"
METRICS_FILE = "metrics.jsonl"
OBJECTIVES = ("vae", "tcvae", "factorvae")
MAX_IMAGE_VALUES = 2**24  # pixels times channels of a stored image_shape (dSprites: 4,096)
MAX_SEED = 2**63 - 1  # seed + 2 and the per-epoch order seeds must fit torch's 64-bit seeds
# A run's length in optimizer steps. The paper's runs take thousands of steps; a billion is
# days of compute even at a millisecond a step, so anything longer is a typo, not a run.
MAX_STEPS = 10**9
ADAM_STATE = ("step", "exp_avg", "exp_avg_sq")  # what our Adam keeps for each parameter


@dataclass
class TrainConfig:
    """Everything that defines a run; stored in the checkpoint so the model rebuilds from it."""

    data: str = "dsprites"
    tree: str = "2.1(2.2(4),2.2(4),2.2(4),2.2(4),2.2(4))"
    scale: float = 2.0
    prior: str = "isa"
    learn_exponents: bool = False
    exponent_lr: float = 1e-3
    objective: str = "vae"
    beta: float = 1.0
    gamma: float = 1.0
    estimator: str = "mss"
    closed_form_kl: bool = False
    arch: str = "mlp"
    steps: int = 0  # total optimizer steps; 0 means derive from epochs
    epochs: float | None = 20.0  # None when the run was given steps
    batch_size: int = 2048
    lr: float = 1e-3
    seed: int = 0
    anneal_steps: int = 0
    checkpoint_every: int = 1000
    log_every: int = 50
    precision: str = "auto"  # as asked: fp32, bf16 or auto; the run resolves it per device
    compile: bool = True  # compiled likelihood and TC kernels where they pay (isa_core.compiled)
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # A run given steps stores no epochs, so collected configs show what was asked.
        if isinstance(self.steps, int) and self.steps > 0:
            self.epochs = None

    def validate(self) -> None:
        """Refuse values no run can use, naming the flag; called before any file is touched."""
        if self.objective not in OBJECTIVES:
            raise IsaError(f"unknown objective {self.objective!r}; use vae, tcvae or factorvae")
        if self.estimator not in ("mss", "mws"):
            raise IsaError(f"unknown estimator {self.estimator!r}; use mss or mws")
        if self.arch not in ("mlp", "conv"):
            raise IsaError(f"unknown architecture {self.arch!r}; use mlp or conv")
        check_precision(self.precision)
        for name in ("beta", "gamma"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise IsaError(f"--{name} must be a finite number >= 0, got {value}")
        for name in ("lr", "exponent_lr", "scale"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                flag = name.replace("_", "-")
                raise IsaError(f"--{flag} must be a positive finite number, got {value}")
        if not 0 <= self.seed <= MAX_SEED:
            raise IsaError(f"--seed must be a whole number from 0 to 2**63-1, got {self.seed}")
        if self.steps < 0:
            raise IsaError(f"--steps must be >= 1, got {self.steps}")
        if self.steps > MAX_STEPS:
            raise IsaError(
                f"--steps {self.steps:,} is more than the {MAX_STEPS:,} optimizer steps isa "
                "allows (days of compute even at a millisecond a step); give a smaller --steps"
            )
        if self.steps == 0:
            if self.epochs is None:
                raise IsaError("give the run's length: --steps N or --epochs E")
            if not (math.isfinite(self.epochs) and self.epochs > 0):
                raise IsaError(f"--epochs must be a positive finite number, got {self.epochs}")
        if self.batch_size < 1:
            raise IsaError(f"--batch-size must be >= 1, got {self.batch_size}")
        if self.anneal_steps < 0:
            raise IsaError(f"--anneal-steps must be >= 0 (0 turns it off), got {self.anneal_steps}")
        for name in ("checkpoint_every", "log_every"):
            value = getattr(self, name)
            if value < 1:
                raise IsaError(f"--{name.replace('_', '-')} must be >= 1, got {value}")
        tree = LpTree.parse(self.tree)
        if self.closed_form_kl and tree != LpTree.normal(tree.n):
            raise IsaError("--closed-form-kl needs the normal prior (--prior normal)")
        if self.closed_form_kl and self.scale != 2.0:
            raise IsaError("--closed-form-kl needs the normal prior with --scale 2")


@dataclass
class TrainResult:
    model_path: Path
    step: int
    interrupted: bool
    metrics: dict[str, float]


def _versions() -> dict[str, str]:
    return {"isa": isa_core.__version__, "torch": torch.__version__, "numpy": np.__version__}


def build_model(config: TrainConfig, data: GroundTruthData) -> VAE:
    prior = LpNestedPrior(
        LpTree.parse(config.tree), scale=config.scale, learn_exponents=config.learn_exponents
    )
    return VAE(config.arch, data.image_shape, prior)


def load_model(path: Path | str, device: torch.device | str = "cpu") -> tuple[VAE, dict]:
    """A trained model and its metadata from ``model.safetensors``."""
    bundle = io.load_bundle(path)
    meta = bundle.metadata
    if not isinstance(meta, dict) or "config" not in meta or "image_shape" not in meta:
        raise IsaError(f"{path} is not an isa model (no config in its metadata)")
    config = config_from_metadata(meta["config"], str(path))
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
        prior = LpNestedPrior(
            LpTree.parse(config.tree), scale=config.scale, learn_exponents=config.learn_exponents
        )
        # Build on the meta device first: a forged image_shape must not allocate gigabytes.
        with torch.device("meta"):
            expected = VAE(config.arch, tuple(shape), prior).state_dict()
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
    model = VAE(config.arch, tuple(shape), prior)
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
    tree = LpTree.parse(config.tree)
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


def _field_accepts(name: str, value: Any) -> bool:
    """Whether ``value`` (from JSON) has the type of TrainConfig's field ``name``."""
    default = TrainConfig.__dataclass_fields__[name].default
    if name == "epochs" and value is None:
        return True
    if isinstance(default, bool):
        return isinstance(value, bool)
    if isinstance(default, int):
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(default, float):
        return isinstance(value, int | float) and not isinstance(value, bool)
    if isinstance(default, str):
        return isinstance(value, str)
    return isinstance(value, dict)  # extra


def config_from_metadata(raw: Any, source: str = "the metadata") -> TrainConfig:
    """The TrainConfig stored in a model or state file; ``source`` names the file in errors.

    Fields missing from older files take their defaults, except ``precision``: files written
    before it existed were trained in fp32. Unknown fields are ignored.
    """
    if not isinstance(raw, dict):
        raise IsaError(
            f"{source}: its 'config' metadata is not an object; the file is damaged or was not "
            "written by isa train"
        )
    values = {}
    for name in TrainConfig.__dataclass_fields__:
        if name not in raw:
            continue
        value = raw[name]
        if not _field_accepts(name, value):
            raise IsaError(
                f"{source}: its config has a malformed {name!r} ({value!r}); the file is damaged "
                "or was not written by isa train"
            )
        default = TrainConfig.__dataclass_fields__[name].default
        is_float = isinstance(default, float) and value is not None
        values[name] = float(value) if is_float else value
    values.setdefault("precision", "fp32")  # runs from before --precision were all fp32
    if values["precision"] not in PRECISIONS:
        raise IsaError(
            f"{source}: its config has an unknown precision {values['precision']!r}; the file is "
            "damaged or was written by a newer isa"
        )
    return TrainConfig(**values)


def read_run_config(folder: Path) -> TrainConfig:
    """The config of the run checkpointed in ``folder`` (from its state file, the newest)."""
    path = folder / STATE_FILE
    meta = io.load_bundle(path).metadata
    if not isinstance(meta, dict) or "config" not in meta:
        raise IsaError(f"{path} has no run config; it was not written by isa train")
    return config_from_metadata(meta["config"], str(path))


def preflight(config: TrainConfig) -> None:
    """Everything that can fail before training, checked before a run folder is touched."""
    config.validate()
    data = open_dataset(config.data)
    _check_batch(config, data)
    prior = LpNestedPrior(LpTree.parse(config.tree), scale=config.scale)
    with torch.device("meta"):
        VAE(config.arch, data.image_shape, prior)


def _check_batch(config: TrainConfig, data: GroundTruthData) -> None:
    """Refuse a batch size or a run length that does not fit the data set."""
    if config.objective == "tcvae" and config.batch_size > len(data):
        raise IsaError(
            f"--batch-size {config.batch_size} exceeds the data set ({len(data)} images)"
        )
    if not config.steps and config.epochs is not None:
        steps = config.epochs * math.ceil(len(data) / config.batch_size)
        if steps > MAX_STEPS:
            raise IsaError(
                f"--epochs {config.epochs:g} is about {steps:.3g} optimizer steps at --batch-size "
                f"{config.batch_size} on {len(data):,} images, more than the {MAX_STEPS:,} isa "
                "allows (days of compute even at a millisecond a step); give fewer --epochs"
            )


def _optimizer_tensors(prefix: str, optimizer: torch.optim.Optimizer) -> dict[str, Tensor]:
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


class _Run:
    """One training run's objects: model, optimizers, generators, batch order."""

    def __init__(self, config: TrainConfig, data: GroundTruthData, device: torch.device) -> None:
        self.config = config
        self.data = data
        self.device = device
        self.precision = resolve_precision(config.precision, device)  # fp32 or bf16
        self.backend = "auto" if config.compile else "eager"  # the losses' kernels
        torch.manual_seed(config.seed)  # initial weights
        # fp32 master weights: autocast multiplies bf16 copies; bf16 would round away Adam's steps
        self.model = build_model(config, data).to(device)
        exponent_params = [p for n, p in self.model.named_parameters() if n.startswith("prior.")]
        other_params = [p for n, p in self.model.named_parameters() if not n.startswith("prior.")]
        groups = [{"params": other_params, "lr": config.lr}]
        if exponent_params:
            groups.append({"params": exponent_params, "lr": config.exponent_lr})
        # One fused kernel per step instead of ~10 foreach passes over 14M parameters (32 -> 4
        # ms on the CPU for the paper's MLP); the same Adam update.
        fused = device.type in ("cpu", "cuda")
        # Adam's moments take the parameters' dtype, fp32: squared gradients underflow in bf16.
        self.optimizer = torch.optim.Adam(groups, fused=fused)
        self.discriminator = None
        self.disc_optimizer = None
        if config.objective == "factorvae":
            # fp32 discriminator, never autocast: its logits give the loss's TC term; it is tiny
            self.discriminator = Discriminator(self.model.latent_dim).to(device)
            # Kim & Mnih's discriminator optimizer: Adam, lr 1e-4, betas (0.5, 0.9)
            self.disc_optimizer = torch.optim.Adam(
                self.discriminator.parameters(), lr=1e-4, betas=(0.5, 0.9), fused=fused
            )
        self.noise = torch.Generator(device=device).manual_seed(config.seed + 1)
        self.aux = torch.Generator().manual_seed(config.seed + 2)
        self.steps_per_epoch = math.ceil(len(data) / config.batch_size)
        self.total_steps = config.steps or max(1, round(config.epochs * self.steps_per_epoch))
        self._order_epoch = -1
        self._order: Tensor | None = None

    def batch_indices(self, step: int) -> Tensor:
        epoch, position = divmod(step, self.steps_per_epoch)
        if epoch != self._order_epoch:
            seed = (self.config.seed * 1_000_003 + epoch) % 2**64  # the same for small seeds
            generator = torch.Generator().manual_seed(seed)
            self._order = torch.randperm(len(self.data), generator=generator)
            self._order_epoch = epoch
        assert self._order is not None
        size = self.config.batch_size
        return self._order[position * size : (position + 1) * size]

    def step(self, step: int) -> dict[str, Tensor]:
        config = self.config
        x = self.data.images(self.batch_indices(step), self.device)
        with autocast(self.device, self.precision):  # bf16 matrix products when asked
            mean, logvar = self.model.encode(x)  # returned as float32
        z = reparameterize(mean, logvar, self.noise)
        with autocast(self.device, self.precision):
            # bf16 under autocast, not decode()'s float32 copy: the likelihood reads it in fp32
            logits = self.model.decoder(z)
        # From here on no autocast: every part below is fp32, each for the reason beside it.
        prior = self.model.prior()  # fp32 log-density: lgamma and |z|^p need more than 3 digits
        weight = min(1.0, (step + 1) / config.anneal_steps) if config.anneal_steps else 1.0
        if config.objective == "vae":
            # fp32 loss: it sums 4096 pixel terms, and log q(z|x) - log p(z) nearly cancel
            parts = vae_loss(
                x,
                logits,
                z,
                mean,
                logvar,
                prior,
                config.beta,
                weight,
                config.closed_form_kl,
                self.backend,
            )
        elif config.objective == "tcvae":
            # fp32 loss, and fp32 TC estimator: log-sum-exps over B*B*K terms that nearly cancel
            parts = tcvae_loss(
                x,
                logits,
                z,
                mean,
                logvar,
                prior,
                len(self.data),
                config.beta,
                config.estimator,
                weight,
                self.backend,
            )
        else:
            assert self.discriminator is not None and self.disc_optimizer is not None
            # fp32 loss, its TC term from the fp32 discriminator (see __init__)
            parts = factorvae_loss(
                x,
                logits,
                z,
                mean,
                logvar,
                prior,
                self.discriminator,
                config.gamma,
                weight,
                self.backend,
            )
        self.optimizer.zero_grad(set_to_none=True)
        parts["loss"].backward()
        self.optimizer.step()
        if self.discriminator is not None and self.disc_optimizer is not None:
            other = self.data.sample_indices(len(x), self.aux)
            with torch.no_grad(), autocast(self.device, self.precision):
                mean2, logvar2 = self.model.encode(self.data.images(other, self.device))
                z2 = reparameterize(mean2, logvar2, self.noise)
            d_loss = discriminator_loss(self.discriminator, z, z2, self.aux)
            self.disc_optimizer.zero_grad(set_to_none=True)
            d_loss.backward()
            self.disc_optimizer.step()
            parts["disc_loss"] = d_loss
        return parts

    # -- checkpoints --------------------------------------------------------------------

    def weights_finite(self) -> bool:
        """Whether every weight is a finite number (a NaN step must never be checkpointed)."""
        return all(bool(torch.isfinite(t).all()) for t in self.model.state_dict().values())

    def save(self, folder: Path, step: int, metrics: dict[str, float]) -> Path:
        """Checkpoint: the self-sufficient state file first, then the model file."""
        config = self.config
        epoch = step / self.steps_per_epoch
        meta = {
            "config": asdict(config),
            "step": step,
            "total_steps": self.total_steps,
            "epoch": epoch,
            "metrics": metrics,
            "image_shape": list(self.data.image_shape),
            "data": {
                "name": self.data.name,
                "source": config.data,
                "factor_names": list(self.data.factor_names),
                "factor_sizes": list(self.data.factor_sizes),
            },
            "prior": {"tree": str(self.model.prior.current_tree()), "scale": config.scale},
            "precision": self.precision,  # what config.precision resolved to on this device
            "versions": _versions(),
        }
        weights = self.model.state_dict()  # fp32 (prior float64) in every precision
        state = {"rng.noise": self.noise.get_state(), "rng.aux": self.aux.get_state()}
        state.update({f"{_WEIGHTS}{k}": v for k, v in weights.items()})
        state.update(_optimizer_tensors("opt", self.optimizer))
        if self.discriminator is not None and self.disc_optimizer is not None:
            state.update({f"disc.{k}": v for k, v in self.discriminator.state_dict().items()})
            state.update(_optimizer_tensors("dopt", self.disc_optimizer))
        # The state file also carries the weights and the model file's metadata, so a kill
        # between the two renames leaves a complete state and an older but complete model.
        state_meta = {"step": step, "config": asdict(config), "model": meta}
        io.save_bundle(folder / STATE_FILE, state, state_meta)
        io.save_bundle(folder / MODEL_FILE, weights, meta)
        return (folder / MODEL_FILE).resolve()

    def restore(self, folder: Path) -> int:
        """Load the checkpoint in ``folder``; rewrite the model file if a kill left it behind."""
        state_bundle = io.load_bundle(folder / STATE_FILE)
        state_meta = state_bundle.metadata
        tensors = state_bundle.tensors
        step = state_meta.get("step") if isinstance(state_meta, dict) else None
        if not isinstance(step, int) or isinstance(step, bool) or step < 0:
            raise IsaError(f"{folder / STATE_FILE} has no valid step; the saved state is corrupt")
        weights = {k[len(_WEIGHTS) :]: v for k, v in tensors.items() if k.startswith(_WEIGHTS)}
        model_meta = state_meta.get("model")
        if not weights or not isinstance(model_meta, dict):
            weights = self._weights_of_older_run(folder, step)
            model_meta = None
        path = folder / STATE_FILE
        optimizer_state = _optimizer_state(path, "opt", self.optimizer, tensors)
        disc_state = None
        if self.disc_optimizer is not None:
            disc_state = _optimizer_state(path, "dopt", self.disc_optimizer, tensors)
        try:
            self.model.load_state_dict(weights)
            self.noise.set_state(tensors["rng.noise"])
            self.aux.set_state(tensors["rng.aux"])
            _restore_optimizer(self.optimizer, optimizer_state)
            if self.discriminator is not None and self.disc_optimizer is not None:
                disc = {k[5:]: v for k, v in tensors.items() if k.startswith("disc.")}
                self.discriminator.load_state_dict(disc)
                _restore_optimizer(self.disc_optimizer, disc_state)
        except (KeyError, RuntimeError, ValueError) as error:
            first = str(error).splitlines()[0] if str(error) else type(error).__name__
            raise IsaError(
                f"{folder}: cannot resume, the saved state is corrupt ({first})"
            ) from None
        if model_meta is not None and _model_step(folder / MODEL_FILE) != step:
            io.save_bundle(folder / MODEL_FILE, weights, model_meta)
        return step

    def _weights_of_older_run(self, folder: Path, step: int) -> dict[str, Tensor]:
        """Weights of a run checkpointed before state files carried them: the model file's."""
        model_bundle = io.load_bundle(folder / MODEL_FILE)
        if step != model_bundle.metadata.get("step"):
            raise IsaError(
                f"{folder}: model.safetensors and train_state.safetensors are from different "
                "steps, and this older run's state file holds no weights; start it over with "
                "--force"
            )
        return model_bundle.tensors


_WEIGHTS = "model."  # prefix of the weights in the state file


def _model_step(path: Path) -> int | None:
    """The step of the model file at ``path``, or None when it is missing or unreadable."""
    if not path.exists():
        return None
    try:
        meta = io.load_bundle(path).metadata
    except IsaError:
        return None
    return meta.get("step") if isinstance(meta, dict) else None


def _first_nonfinite(window: list[dict[str, Tensor]]) -> tuple[int, str, float] | None:
    """(offset, part, value) of the first step in ``window`` with a non-finite loss part."""
    if not window:
        return None
    names = list(window[0])
    table = torch.stack([torch.stack([p[n].double() for n in names]) for p in window]).cpu()
    bad = ~torch.isfinite(table)
    if not bool(bad.any()):
        return None
    row = int(bad.any(dim=1).nonzero()[0])
    culprits = [n for n, b in zip(names, bad[row].tolist(), strict=True) if b and n != "loss"]
    name = culprits[0] if culprits else "loss"
    return row, name, float(table[row, names.index(name)])


def _diverged(step: int, what: str, saved: int) -> IsaError:
    kept = (
        f"the last good checkpoint (step {saved}) is kept" if saved else "no checkpoint was written"
    )
    return IsaError(
        f"training diverged at step {step}: {what}; stopped without saving it, {kept}. "
        "Start a new run with a lower --lr, or check the prior (a tiny or huge --scale, "
        "extreme exponents)"
    )


def _trim_metrics(path: Path, last_step: int) -> None:
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


def train(
    config: TrainConfig,
    folder: Path,
    device: torch.device,
    resume: bool = False,
    stop: threading.Event | None = None,
    on_log: Callable[[dict[str, float]], None] | None = None,
    on_step: Callable[[int, int], None] | None = None,
) -> TrainResult:
    """Train (or resume) the run in ``folder``; stops early and checkpoints when ``stop`` is set.

    A non-finite loss or weight stops the run with an IsaError; the last good checkpoint stays.
    """
    config.validate()
    data = open_dataset(config.data)
    _check_batch(config, data)
    run = _Run(config, data, device)
    start = run.restore(folder) if resume else 0
    metrics_path = folder / METRICS_FILE
    if resume:
        _trim_metrics(metrics_path, start)
    metrics: dict[str, float] = {}
    sums: dict[str, Tensor] = {}
    window: list[dict[str, Tensor]] = []  # loss parts of the steps not yet checked for NaN
    count = 0
    clock = time.perf_counter()
    images = 0
    step = start
    saved = start
    interrupted = False
    with metrics_path.open("a") as log:
        while step < run.total_steps:
            parts = {name: value.detach() for name, value in run.step(step).items()}
            step += 1
            count += 1
            images += run.config.batch_size
            window.append(parts)
            for name, value in parts.items():
                sums[name] = sums.get(name, 0.0) + value
            if on_step is not None:
                on_step(step, run.total_steps)
            last = step == run.total_steps
            stopping = stop is not None and stop.is_set()
            log_now = step % config.log_every == 0 or last or stopping
            save_now = step % config.checkpoint_every == 0 or last or stopping
            if log_now or save_now:
                # Checked once per log or checkpoint (one device sync), never per step.
                bad = _first_nonfinite(window)
                if bad is not None:
                    offset, name, value = bad
                    bad_step = step - len(window) + 1 + offset
                    raise _diverged(bad_step, f"its {name} is {value}", saved)
                window = []
            if log_now:
                elapsed = time.perf_counter() - clock
                metrics = {name: float(total) / count for name, total in sums.items()}
                metrics.update(
                    step=step,
                    epoch=step / run.steps_per_epoch,
                    images_per_s=images / elapsed if elapsed > 0 else 0.0,
                )
                exponents = run.model.prior.exponents.detach().cpu().tolist()
                record = {**metrics, "exponents": exponents, "precision": run.precision}
                log.write(json.dumps(record) + "\n")
                log.flush()
                if on_log is not None:
                    on_log(metrics)
                sums, count, images, clock = {}, 0, 0, time.perf_counter()
            if save_now:
                if not run.weights_finite():
                    raise _diverged(step, "its weights are no longer finite numbers", saved)
                run.save(folder, step, metrics)
                saved = step
            if stopping and not last:
                interrupted = True
                break
    return TrainResult((folder / MODEL_FILE).resolve(), step, interrupted, metrics)
