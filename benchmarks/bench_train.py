"""`isa train` throughput against a minimal hand-written PyTorch VAE loop, in one run.

Both use the paper's MLP (4096-1200-1200-2K / K-1200-1200-1200-4096), batch 2048, Adam 1e-3.
The minimal loop feeds random binary tensors to a normal-prior VAE with the closed-form KL and
nothing else (no data set, no logging, no checkpoints). `isa train` runs its real loop through
the library (`isa_core.training.train`): procedural dSprites rendered on the device, the ISA
5x4 prior, the chosen objective, metrics logging; checkpoints are set beyond the run so they do
not enter the timing. Steady state: the first ``--warmup`` steps are not timed.
Each isa row runs eager (``--no-compile``) or "+fused" (``--compile``: the likelihood's and
the TC estimator's elementwise work in TorchInductor-compiled kernels, compiled during warm-up).
Targets (issue #12): on the CPU, against the fp32 minimal loop, isa vae in bf16 >= 2.0x and
isa tcvae/mss in bf16 >= 1.8x (earlier: tcvae/mss in fp32 >= 0.9x). `isa train` uses PyTorch's
fused Adam, so a second baseline, the minimal loop with fused Adam, shows the overhead of
everything else (data, prior, estimator, logging) on its own.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from isa_core.checkpoint import prepare_folder
from isa_core.choices import Objective, Precision, TcEstimator
from isa_core.training import TrainConfig, train


def minimal_loop(
    steps: int, warmup: int, batch: int, device: torch.device, fused_adam: bool = False
) -> float:
    torch.manual_seed(0)
    k = 20
    encoder = nn.Sequential(
        nn.Linear(4096, 1200), nn.ReLU(), nn.Linear(1200, 1200), nn.ReLU(), nn.Linear(1200, 2 * k)
    ).to(device)
    decoder = nn.Sequential(
        nn.Linear(k, 1200),
        nn.Tanh(),
        nn.Linear(1200, 1200),
        nn.Tanh(),
        nn.Linear(1200, 1200),
        nn.Tanh(),
        nn.Linear(1200, 4096),
    ).to(device)
    parameters = [*encoder.parameters(), *decoder.parameters()]
    optimizer = torch.optim.Adam(parameters, lr=1e-3, fused=fused_adam)
    x = (torch.rand(batch, 4096, device=device) < 0.05).float()
    start = 0.0
    for step in range(warmup + steps):
        if step == warmup:
            sync(device)
            start = time.perf_counter()
        mean, logvar = encoder(x).chunk(2, -1)
        z = mean + torch.randn_like(mean) * torch.exp(0.5 * logvar)
        logpx = -F.binary_cross_entropy_with_logits(decoder(z), x, reduction="none").sum(-1)
        kl = 0.5 * (mean**2 + logvar.exp() - 1 - logvar).sum(-1)
        loss = -(logpx - kl).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    sync(device)
    return steps * batch / (time.perf_counter() - start)


def isa_loop(
    objective: Objective,
    steps: int,
    warmup: int,
    batch: int,
    device: torch.device,
    precision: Precision,
    compile_: bool,
) -> float:
    stamps: list[float] = []

    def on_step(step: int, total: int) -> None:
        sync(device)
        stamps.append(time.perf_counter())

    config = TrainConfig(
        data="dsprites",
        objective=objective,
        tc_estimator=TcEstimator.mss,
        precision=precision,
        compile=compile_,
        steps=warmup + steps,
        batch_size=batch,
        log_every=10,
        checkpoint_every=10**9,
    )
    with tempfile.TemporaryDirectory() as folder:
        run_dir = Path(folder) / "run"
        prepare_folder(run_dir, resume=False, force=False)
        train(config, run_dir, device, on_step=on_step)
    return steps * batch / (stamps[-1] - stamps[warmup - 1])


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--batch", type=int, default=2048)
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--precision",
        choices=("fp32", "bf16", "both"),
        default="both",
        help="isa train's precision (the minimal loop is always fp32, the baseline)",
    )
    parser.add_argument(
        "--compile",
        choices=("on", "off", "both"),
        default="both",
        help="isa train's compiled kernels (the +fused rows) or eager ones",
    )
    args = parser.parse_args()
    precisions = ("fp32", "bf16") if args.precision == "both" else (args.precision,)
    compiles = {"on": (True,), "off": (False,), "both": (False, True)}[args.compile]
    device = torch.device(args.device)
    base = minimal_loop(args.steps, args.warmup, args.batch, device)
    rows = [
        ("minimal loop (normal prior, random tensors)", base),
        (
            "minimal loop, fused Adam",
            minimal_loop(args.steps, args.warmup, args.batch, device, True),
        ),
    ]
    for objective in ("vae", "tcvae"):
        for precision in precisions:
            for compile_ in compiles:
                rate = isa_loop(
                    objective, args.steps, args.warmup, args.batch, device, precision, compile_
                )
                name = f"{objective}, {precision}{'+fused' if compile_ else ''}"
                rows.append((f"isa train, ISA 5x4, {name}", rate))
    print(
        f"device {device}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"batch {args.batch}, {args.steps} timed steps after {args.warmup} warm-up"
    )
    print()
    fused = rows[1][1]
    print("| loop | images/s | ratio to minimal | ratio to minimal with fused Adam |")
    print("|---|---:|---:|---:|")
    for name, rate in rows:
        print(f"| {name} | {rate:,.0f} | {rate / base:.2f} | {rate / fused:.2f} |")


if __name__ == "__main__":
    main()
