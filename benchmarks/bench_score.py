"""`isa score` speed: every metric on the codes of full dSprites (737,280 images x 20 latents).

The codes come from a real model: a short ISA-VAE run on dsprites-mini (``--steps``, not
timed) encodes all 737,280 images of the built-in full dSprites (not timed either). Then each
metric is scored once with the default protocol and seed 0, timed on its own; the total is
their sum. Target (issue 16): all metrics within 5 minutes on a 2-core CPU.
"""

from __future__ import annotations

import argparse
import subprocess
import sysconfig
import tempfile
import time
from pathlib import Path

from isa_core.codes import load_codes
from isa_core.scores import score_codes

# Timed one call each; modularity and explicitness share one computation, so they go together.
GROUPS = (
    ("mig",),
    ("dci",),
    ("sap",),
    ("modularity", "explicitness"),
    ("factorvae",),
    ("betavae",),
)


def full_dsprites_codes(folder: Path, steps: int) -> Path:
    """Train a small model on dsprites-mini and encode every image of full dSprites."""
    isa = str(Path(sysconfig.get_path("scripts")) / "isa")
    run = folder / "run"
    subprocess.run(
        [isa, "train", "--data", "dsprites-mini", "--steps", str(steps), "--batch-size", "256",
         "-o", str(run), "-q"],
        check=True, stdout=subprocess.DEVNULL,
    )  # fmt: skip
    codes = folder / "codes.safetensors"
    subprocess.run(
        [isa, "encode", str(run / "model.safetensors"), "--data", "dsprites", "-o", str(codes),
         "-q"],
        check=True, stdout=subprocess.DEVNULL,
    )  # fmt: skip
    return codes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--codes", type=Path, help="Score these codes instead of making them.")
    parser.add_argument("--steps", type=int, default=300, help="Training steps of the model.")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = args.codes or full_dsprites_codes(Path(tmp), args.steps)
        codes = load_codes(path)
    print(f"codes: {codes.mean.shape[0]:,} images x {codes.mean.shape[1]} latents")
    print()
    print("| metrics | seconds | values |")
    print("|---|---:|---|")
    total = 0.0
    for group in GROUPS:
        start = time.perf_counter()
        record = score_codes(codes, list(group), seed=0)
        seconds = time.perf_counter() - start
        total += seconds
        values = ", ".join(
            f"{key} {value:.3f}"
            for key, value in record.items()
            if isinstance(value, float) and key not in ("seed",)
        )
        print(f"| {', '.join(group)} | {seconds:.1f} | {values} |")
    print(f"| **all** | **{total:.1f}** ({total / 60:.1f} min; target < 5 min) | |")


if __name__ == "__main__":
    main()
