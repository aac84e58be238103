"""How close is a data set's grid to real images? The nearest grid image of every frame.

``python tools/match_frames.py [FRAMES] [--data dsprites] [--per-frame]``

FRAMES is an ``.npz`` whose ``imgs`` entry is a stack (N, 64, 64) of 0/1 frames (default: the
160 real dSprites frames in ``tests/fixtures``), or the real dSprites file
``dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz``, read through ``isa_core.data.open_dataset``:
then ``--sample`` of its images are the frames and their true factor classes are known, so the
report also gives the distance to the grid image at the same classes. Each frame's nearest
image of ``--data`` is found by exhaustive Hamming search (``isa_core.data.matching``); the
report gives the distance distribution per matched shape, then (``--per-frame``) every frame
with its matched factor classes.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from isa_core import io
from isa_core.data import open_dataset
from isa_core.data.matching import nearest_images

DEFAULT_FRAMES = Path(__file__).resolve().parents[1] / "tests/fixtures/dsprites-gif-frames.npz"


def load_frames(path: Path, sample: int, seed: int) -> tuple[np.ndarray, np.ndarray | None]:
    """Frames (N, H, W) 0/1 and, for a ground-truth file, their true factor classes."""
    with io.open_npz(path) as archive:
        if "imgs" in archive.files and "latents_classes" not in archive.files:
            return archive.array("imgs", "biu", "0/1 integers").astype(np.uint8), None
    data = open_dataset(path)
    index = data.sample_indices(min(sample, len(data)), torch.Generator().manual_seed(seed))
    index = index.sort().values
    return data.pixels(index), data.index_to_factors(index).numpy()


def summary(distance: np.ndarray) -> str:
    if not len(distance):
        return "no frames"
    return (
        f"{len(distance):4d} frames  median {np.median(distance):6.1f}  mean "
        f"{distance.mean():6.2f}  max {distance.max():4d}  exact {(distance == 0).sum():4d} "
        f"({(distance == 0).mean():.0%})  <= 2 px {(distance <= 2).sum():4d}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("frames", nargs="?", type=Path, default=DEFAULT_FRAMES)
    parser.add_argument("--data", default="dsprites", help="the grid to search (a data set)")
    parser.add_argument("--sample", type=int, default=2000, help="frames drawn from a data file")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--per-frame", action="store_true", help="list every frame")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    frames, truth = load_frames(args.frames, args.sample, args.seed)
    grid = open_dataset(args.data)
    start = time.perf_counter()
    found = nearest_images(grid, frames)
    seconds = time.perf_counter() - start
    distance = found.distance.numpy()
    classes = found.classes.numpy()
    names = grid.factor_names
    print(f"{len(frames)} frames from {args.frames}")
    print(f"searched all {len(grid):,} images of {grid.name} in {seconds:.1f} s")
    print(f"all        {summary(distance)}")
    if "shape" in names:
        shape = classes[:, names.index("shape")]
        for k in np.unique(shape):
            print(f"shape {k:<4d} {summary(distance[shape == k])}")
    if truth is not None:
        same = grid.images(grid.factors_to_index(torch.as_tensor(truth)))
        own = (same[:, 0].numpy() > 0.5) != (frames > 0)
        own_distance = own.reshape(len(frames), -1).sum(1)
        agree = (classes == truth).all(1).mean()
        print(f"at the true classes: {summary(own_distance)}")
        print(f"nearest image has the true classes for {agree:.0%} of the frames")
    if args.per_frame:
        print()
        print("frame  distance  " + "  ".join(names))
        for i in range(len(frames)):
            row = "  ".join(f"{c:>{len(n)}d}" for c, n in zip(classes[i], names, strict=True))
            print(f"{i:5d}  {distance[i]:8d}  {row}")


if __name__ == "__main__":
    main()
