"""Where the time of one `isa train` step goes, on any device: the whole step against its
parts, each timed alone (synchronised, mean of ``--steps`` after ``--warmup``), then the
profiler's top operators and the number of kernels one step launches.

    python benchmarks/profile_step.py --device cuda --objective tcvae --precision fp32
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch

from isa_core.aggregate import aggregate_log_densities
from isa_core.data import open_dataset
from isa_core.models import reparameterize
from isa_core.objectives import bernoulli_log_likelihood
from isa_core.precision import autocast
from isa_core.training import TrainConfig, _Run


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(device: torch.device, work: Callable[[], object], steps: int, warmup: int) -> float:
    """Mean milliseconds of ``work`` over ``steps`` calls after ``warmup`` untimed ones."""
    for _ in range(warmup):
        work()
    sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        work()
    sync(device)
    return (time.perf_counter() - start) / steps * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--objective", default="tcvae", choices=["vae", "tcvae"])
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    parser.add_argument("--batch", type=int, default=2048)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--data", default="dsprites")
    parser.add_argument(
        "--compile", action=argparse.BooleanOptionalAction, default=True,
        help="compiled likelihood and TC estimator kernels, as isa train --compile",
    )  # fmt: skip
    args = parser.parse_args()
    device = torch.device(args.device)
    config = TrainConfig(
        data=args.data, objective=args.objective, batch_size=args.batch, steps=10_000,
        precision=args.precision, compile=args.compile,
    )  # fmt: skip
    run = _Run(config, open_dataset(args.data), device)
    counter = iter(range(10**9))
    step = timed(device, lambda: run.step(next(counter)), args.steps, args.warmup)

    index = run.batch_indices(0)
    x = run.data.images(index, device)
    data_ms = timed(device, lambda: run.data.images(index, device), args.steps, args.warmup)

    def networks() -> None:  # encoder, sample, decoder, likelihood, backward: the minimal loop
        with autocast(device, run.precision):
            mean, logvar = run.model.encode(x)
        z = reparameterize(mean, logvar, run.noise)
        with autocast(device, run.precision):
            logits = run.model.decoder(z)
        bernoulli_log_likelihood(logits, x, run.backend).mean().backward()

    with autocast(device, run.precision):
        mean, logvar = run.model.encode(x)
    mean, logvar = mean.detach(), logvar.detach()
    z = reparameterize(mean, logvar, run.noise).requires_grad_(True)

    def prior() -> None:
        run.model.prior().log_prob(z).sum().backward()

    def estimator() -> None:
        joint, marginals = aggregate_log_densities(
            z, mean, logvar, len(run.data), config.tc_estimator, run.backend
        )
        (joint.sum() + marginals.sum()).backward()

    def adam() -> None:
        run.optimizer.step()

    parts = {
        "batch (render on the device)": data_ms,
        "networks fwd+bwd + likelihood": timed(device, networks, args.steps, args.warmup),
        "prior log-density fwd+bwd": timed(device, prior, args.steps, args.warmup),
        "Adam step": timed(device, adam, args.steps, args.warmup),
    }
    if args.objective == "tcvae":
        parts["TC estimator fwd+bwd"] = timed(device, estimator, args.steps, args.warmup)
    kernels = "compiled" if args.compile else "eager"
    name = f"{args.objective} {args.precision} ({kernels}) on {args.device}, batch {args.batch}"
    print(f"\n{name}: whole step {step:.2f} ms ({args.batch / step * 1e3:,.0f} images/s)")
    print("| part, timed alone | ms | share of the step |\n|---|---:|---:|")
    for part, ms in parts.items():
        print(f"| {part} | {ms:.2f} | {ms / step:.0%} |")
    print(f"| sum of the parts | {sum(parts.values()):.2f} | {sum(parts.values()) / step:.0%} |")

    activities = [torch.profiler.ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.profiler.profile(activities=activities) as profile:
        for _ in range(3):
            run.step(next(counter))
        sync(device)
    events = profile.key_averages()
    key = "self_device_time_total" if device.type == "cuda" else "self_cpu_time_total"
    if device.type == "cuda":
        kernels = sum(e.count for e in events if e.device_type == torch.autograd.DeviceType.CUDA)
        print(f"\nCUDA kernels per step: {kernels / 3:.0f}")
    print(events.table(sort_by=key, row_limit=15, max_name_column_width=60))


if __name__ == "__main__":
    main()
