"""dSprites data path throughput: random batches of 2,048 images, as training draws them.

Reports, per device (CPU, and CUDA when present):
  * set-up: the first call, which draws the 720 sprites once per device;
  * images/s for batches of 2,048 uniformly random indices (float32 (B, 1, 64, 64) on the
    device), best of ``--repeats`` timed passes of ``--batches`` batches; target >= 100,000/s
    on the 2-core CPU;
  * one full pass over all 737,280 images in batches of 2,048 (target < 30 s).
"""

from __future__ import annotations

import argparse
import time

import torch

from isa_core.data import DSprites


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(device: torch.device, batches: int, repeats: int, batch: int = 2048) -> dict:
    data = DSprites()
    start = time.perf_counter()
    data.images(torch.tensor([0]), device)
    sync(device)
    setup = time.perf_counter() - start
    generator = torch.Generator().manual_seed(0)
    best = float("inf")
    for _ in range(repeats):
        indices = [data.sample_indices(batch, generator) for _ in range(batches)]
        sync(device)
        start = time.perf_counter()
        for index in indices:
            data.images(index, device)
        sync(device)
        best = min(best, time.perf_counter() - start)
    start = time.perf_counter()
    for first in range(0, len(data), batch):
        data.images(torch.arange(first, min(len(data), first + batch)), device)
    sync(device)
    full = time.perf_counter() - start
    return {"setup": setup, "rate": batches * batch / best, "full": full}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    devices = [torch.device("cpu")]
    if torch.cuda.is_available():
        devices.append(torch.device("cuda"))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads")
    print()
    print("| device | set-up (s) | images/s, batches of 2,048 | target | full pass (s) |")
    print("|---|---:|---:|---:|---:|")
    for device in devices:
        r = measure(device, args.batches, args.repeats)
        met = "met" if r["rate"] >= 100_000 else "MISSED"
        print(
            f"| {device.type} | {r['setup']:.3f} | {r['rate']:,.0f} | >= 100,000 ({met}) | "
            f"{r['full']:.1f} |"
        )


if __name__ == "__main__":
    main()
