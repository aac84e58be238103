"""Sweep overhead: `isa sweep run` against running each run's commands by hand, in one run.

Uses pipelines/mini.toml with the steps cut to ``--steps`` and the grid cut to one seed and
β = 1 (2 runs). "By hand" runs the commands that do a run's work (`isa train`, `isa encode`,
`isa mig`) one after the other; the sweep does the same work through the library in a worker
process, and adds its own start-up, spec parsing, state checks and bookkeeping. Target
(issue): overhead <= 5%.
"""

from __future__ import annotations

import argparse
import subprocess
import sysconfig
import tempfile
import time
from pathlib import Path

from isa_core.sweeps import Run, load_spec

MINI = Path(__file__).resolve().parent.parent / "pipelines" / "mini.toml"


def train_command(isa: str, run: Run, folder: Path) -> list[str]:
    """The `isa train` command line of ``run``: each flag of the spec as its option."""
    command = [isa, "train", "-o", str(folder), "-q", "--force"]
    for name, value in run.flags.items():
        option = "--" + name.replace("_", "-")
        if isinstance(value, bool):
            command.append(option if value else "--no-" + option[2:])
        else:
            command += [option, str(value)]
    return command


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200)
    args = parser.parse_args()
    isa = str(Path(sysconfig.get_path("scripts")) / "isa")
    text = MINI.read_text().replace("steps = 500", f"steps = {args.steps}")
    text = text.replace("beta = [1.0, 2.0]", "beta = [1.0]").replace(
        "seed = [0, 1, 2]", "seed = [0]"
    )
    with tempfile.TemporaryDirectory() as tmp:
        spec_path = Path(tmp) / "mini.toml"
        spec_path.write_text(text)
        runs = load_spec(spec_path).runs()
        start = time.perf_counter()
        for run in runs:
            folder = Path(tmp) / "by-hand" / run.id
            folder.parent.mkdir(parents=True, exist_ok=True)
            subprocess.run(train_command(isa, run, folder), check=True, capture_output=True)
            subprocess.run(
                [isa, "encode", str(folder / "model.safetensors"), "-q"],
                check=True,
                capture_output=True,
            )
            subprocess.run(
                [isa, "mig", str(folder / "codes.safetensors"), "-q"],
                check=True,
                capture_output=True,
            )
        by_hand = time.perf_counter() - start
        start = time.perf_counter()
        subprocess.run(
            [isa, "sweep", "run", str(spec_path), "-o", str(Path(tmp) / "sweep")],
            check=True,
            capture_output=True,
        )
        swept = time.perf_counter() - start
    print(f"{len(runs)} runs of {args.steps} steps (pipelines/mini.toml, cut down)")
    print()
    print("| how | seconds | overhead | target |")
    print("|---|---:|---:|---:|")
    print(f"| commands by hand | {by_hand:.1f} | - | |")
    print(f"| isa sweep run | {swept:.1f} | {100 * (swept / by_hand - 1):+.1f}% | <= 5% |")


if __name__ == "__main__":
    main()
