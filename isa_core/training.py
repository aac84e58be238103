"""The training loop: batches drawn on the device, checkpoints, exact resume, a metrics log.

Batches follow a per-epoch permutation derived from the seed, and every random stream is a
generator whose state is checkpointed (``isa_core.checkpoint``), so on the CPU a resumed run
ends with the same tensors as an uninterrupted one.

Precision (``isa_core.precision``): with bf16 the encoder and decoder run under autocast; the
weights, Adam's moments, the prior, the TC estimator and the losses keep their fp32 (the
prior's float64), so checkpoints are alike whatever the precision, and a run may resume in
another precision.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

import isa_core
from isa_core.checkpoint import (
    METRICS_FILE,
    MODEL_FILE,
    RunState,
    restore_state,
    save_state,
    trim_metrics,
)
from isa_core.choices import Backend, Objective
from isa_core.config import MAX_STEPS, TrainConfig
from isa_core.data import GroundTruthData, open_dataset
from isa_core.errors import IsaError, field_error
from isa_core.models import VAE, build_model, reparameterize
from isa_core.objectives import OBJECTIVES, DiscriminatorTrainer
from isa_core.precision import autocast, resolve_precision

__all__ = ["TrainConfig", "TrainResult", "open_run_data", "train"]


@dataclass
class TrainResult:
    """Where the model was written, the last step taken, and the last logged metrics."""

    model_path: Path
    step: int
    interrupted: bool
    metrics: dict[str, float]


def _versions() -> dict[str, str]:
    return {"isa": isa_core.__version__, "torch": torch.__version__, "numpy": np.__version__}


def open_run_data(config: TrainConfig) -> GroundTruthData:
    """The run's data set, opened once and checked against the config before any file is
    touched: the batch size, the run's length and the architecture must fit it."""
    data = open_dataset(config.data)
    if config.objective == Objective.tcvae and config.batch_size > len(data):
        raise field_error(
            "batch_size", f"{config.batch_size} exceeds the data set ({len(data)} images)"
        )
    if not config.steps and config.epochs is not None:
        steps = config.epochs * math.ceil(len(data) / config.batch_size)
        if steps > MAX_STEPS:
            raise field_error(
                "epochs",
                f"{config.epochs:g} is about {steps:.3g} optimizer steps at batch size "
                f"{config.batch_size} on {len(data):,} images, more than the {MAX_STEPS:,} isa "
                "allows (days of compute even at a millisecond a step); give fewer epochs",
            )
    with torch.device("meta"):  # no memory: only whether the model can take these images
        build_model(config, data.image_shape)
    return data


class _Run:
    """One training run's objects: model, optimizers, generators, batch order."""

    def __init__(self, config: TrainConfig, data: GroundTruthData, device: torch.device) -> None:
        self.config = config
        self.data = data
        self.device = device
        self.precision = resolve_precision(config.precision, device)  # fp32 or bf16
        self.backend = Backend.auto if config.compile else Backend.eager  # the losses' kernels
        torch.manual_seed(config.seed)  # initial weights
        # fp32 master weights: autocast multiplies bf16 copies; bf16 would round away Adam's steps
        self.model = build_model(config, data.image_shape).to(device)
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
        self.critic = None
        if config.objective == Objective.factorvae:
            self.critic = DiscriminatorTrainer(self.model.latent_dim, device, fused=fused)
        self.noise = torch.Generator(device=device).manual_seed(config.seed + 1)
        self.aux = torch.Generator().manual_seed(config.seed + 2)
        self.state = RunState(
            self.model,
            self.optimizer,
            self.noise,
            self.aux,
            self.critic.discriminator if self.critic else None,
            self.critic.optimizer if self.critic else None,
        )
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
        # From here on no autocast: the prior's log-density in fp32 (lgamma and |z|^p need more
        # than 3 digits), fp32 losses (4096 pixel terms; log q(z|x) - log p(z) nearly cancel),
        # the fp32 TC estimator (log-sum-exps over B*B*K terms) and the fp32 discriminator.
        warmup = min(1.0, (step + 1) / config.anneal_steps) if config.anneal_steps else 1.0
        parts = OBJECTIVES[config.objective](
            x,
            logits,
            z,
            mean,
            logvar,
            self.model.prior(),
            beta=config.beta,
            gamma=config.gamma,
            tc_estimator=config.tc_estimator,
            dataset_size=len(self.data),
            discriminator=self.critic.discriminator if self.critic else None,
            closed_form_kl=config.closed_form_kl,
            kl_warmup=warmup,
            backend=self.backend,
        )
        self.optimizer.zero_grad(set_to_none=True)
        parts["loss"].backward()
        self.optimizer.step()
        if self.critic is not None:
            other = self.data.sample_indices(len(x), self.aux)
            with torch.no_grad(), autocast(self.device, self.precision):
                mean2, logvar2 = self.model.encode(self.data.images(other, self.device))
                z2 = reparameterize(mean2, logvar2, self.noise)
            parts["disc_loss"] = self.critic.step(z, z2, self.aux)
        return parts

    def weights_finite(self) -> bool:
        """Whether every weight is a finite number (a NaN step must never be checkpointed)."""
        return all(bool(torch.isfinite(t).all()) for t in self.model.state_dict().values())

    def save(self, folder: Path, step: int, metrics: dict[str, float]) -> Path:
        """Checkpoint the run at ``step``, with the model file's metadata."""
        config, data = self.config, self.data
        meta = {
            "config": config.to_metadata(),
            "step": step,
            "total_steps": self.total_steps,
            "epoch": step / self.steps_per_epoch,
            "metrics": metrics,
            "image_shape": list(data.image_shape),
            "data": {
                "name": data.name,
                "source": config.data,
                "factor_names": list(data.factor_names),
                "factor_sizes": list(data.factor_sizes),
            },
            "prior": {"tree": str(self.model.prior.current_tree()), "scale": config.scale},
            "precision": str(self.precision),  # what config.precision resolved to here
            "versions": _versions(),
        }
        return save_state(folder, self.state, step, meta)


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
        "Start a new run with a lower lr, or check the prior (a tiny or huge scale, "
        "extreme exponents)"
    )


def train(
    config: TrainConfig,
    folder: Path,
    device: torch.device,
    *,
    data: GroundTruthData | None = None,
    resume: bool = False,
    stop: threading.Event | None = None,
    on_log: Callable[[dict[str, Any]], None] | None = None,
    on_step: Callable[[int, int], None] | None = None,
    on_model: Callable[[int, VAE], None] | None = None,
    model_every: int = 0,
) -> TrainResult:
    """Train (or resume) the run in ``folder``; stops early and checkpoints when ``stop`` is set.

    ``data`` is the run's data set from :func:`open_run_data` (opened here when None). A
    non-finite loss or weight stops the run with an IsaError; the last good checkpoint stays.
    ``on_log`` receives each metrics.jsonl record; ``on_model(step, model)`` is called every
    ``model_every`` steps and at the end (0: never), to look at the model (TensorBoard images).
    """
    run = _Run(config, open_run_data(config) if data is None else data, device)
    start = restore_state(folder, run.state) if resume else 0
    metrics_path = folder / METRICS_FILE
    if resume:
        trim_metrics(metrics_path, start)
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
                record = {**metrics, "exponents": exponents, "precision": str(run.precision)}
                log.write(json.dumps(record) + "\n")
                log.flush()
                if on_log is not None:
                    on_log(record)
                sums, count, images, clock = {}, 0, 0, time.perf_counter()
            if on_model is not None and model_every and (step % model_every == 0 or last):
                on_model(step, run.model)
            if save_now:
                if not run.weights_finite():
                    raise _diverged(step, "its weights are no longer finite numbers", saved)
                run.save(folder, step, metrics)
                saved = step
            if stopping and not last:
                interrupted = True
                break
    return TrainResult((folder / MODEL_FILE).resolve(), step, interrupted, metrics)
