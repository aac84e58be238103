"""The procedural dSprites against 160 real dSprites frames, and the nearest-image search.

The frames (tests/fixtures/dsprites-gif-frames.npz, see its README) are every second frame of
the animation published with the data set (deepmind/dsprites-dataset, Apache License 2.0).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from isa_core.data import ArrayData, DSprites
from isa_core.data.matching import nearest_images
from isa_core.errors import IsaError

FRAMES = Path(__file__).parent / "fixtures" / "dsprites-gif-frames.npz"
DS = DSprites()


def real_frames() -> np.ndarray:
    with np.load(FRAMES, allow_pickle=False) as archive:
        return archive["imgs"]


def sweep_classes() -> np.ndarray:
    """The frames' factor classes, read off the animation: it sweeps one factor at a time.

    Per shape (heart, ellipse, square): scale 0, 2, 4, 5, 3, 1, 0, 2, 4, 5 at orientation 0,
    then orientation 2, 4, ..., 38, 39 at scale 5; the heart then travels y 0 -> 31, x 0 -> 31,
    y 31 -> 0, x 31 -> 0 two classes a frame (the last step of each leg is one class), and
    each shape ends at scales 3 and 1.
    """
    scales = [0, 2, 4, 5, 3, 1, 0, 2, 4, 5]
    orientations = [*range(2, 39, 2), 39]
    tuples = []
    for shape in (2, 1, 0):
        tuples += [(shape, s, 0, 0, 0) for s in scales]
        tuples += [(shape, 5, o, 0, 0) for o in orientations]
        if shape == 2:
            up, down = [*range(2, 31, 2), 31], [*range(29, 0, -2), 0]
            tuples += [(2, 5, 39, 0, y) for y in up]
            tuples += [(2, 5, 39, x, 31) for x in up]
            tuples += [(2, 5, 39, 31, y) for y in down]
            tuples += [(2, 5, 39, x, 0) for x in down]
        tuples += [(shape, 3, 39, 0, 0), (shape, 1, 39, 0, 0)]
    return np.array(tuples)


def test_frames_at_their_sweep_classes_match_pixel_for_pixel() -> None:
    frames = real_frames()
    classes = sweep_classes()
    assert classes.shape == (160, 5)
    drawn = DS.images(DS.factors_to_index(torch.as_tensor(classes)))[:, 0].numpy()
    distance = (drawn.astype(np.uint8) != frames).reshape(160, -1).sum(1)
    assert np.median(distance) == 0 and distance.max() <= 4, distance
    for shape, least in [(0, 31), (1, 30), (2, 84)]:  # exact frames of 32, 32, 96
        assert (distance[classes[:, 0] == shape] == 0).sum() >= least, (shape, distance)


def test_nearest_grid_images_of_the_frames() -> None:
    """The done-when of issue 13, searched over every scale, orientation and position the
    frames can have (x = 0 or y = 0 or 31 on the path): median <= 2 px, most frames exact."""
    frames = real_frames()
    grid = torch.cartesian_prod(*[torch.arange(s) for s in DS.factor_sizes])
    on_path = (grid[:, 3] == 0) | (grid[:, 3] == 31) | (grid[:, 4] == 0) | (grid[:, 4] == 31)
    found = nearest_images(DS, frames, DS.factors_to_index(grid[on_path]))
    distance = found.distance.numpy()
    assert np.median(distance) <= 2 and (distance == 0).mean() >= 0.5
    assert (distance == 0).sum() >= 148 and distance.max() <= 4, distance
    shapes = found.classes[:, 0].numpy()
    assert (shapes == sweep_classes()[:, 0]).all()


# -- the search itself, against brute force on a tiny grid -------------------------------------


def tiny_grid(seed: int = 0) -> ArrayData:
    g = torch.Generator().manual_seed(seed)
    images = (torch.rand(3 * 4 * 5, 6, 7, 1, generator=g) < 0.4).to(torch.uint8)
    values = [np.arange(3), np.arange(4), np.arange(5)]
    return ArrayData("tiny", images, ("a", "b", "c"), values, binary=True)


def brute_force(data: ArrayData, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    images = data.pixels(range(len(data)))
    distance = (images[None] != frames[:, None]).reshape(len(frames), len(data), -1).sum(-1)
    return distance.argmin(1), distance.min(1)  # argmin: the lowest index of a tie


@pytest.mark.parametrize("chunk", [1, 7, 1000])
def test_nearest_images_matches_brute_force(chunk: int) -> None:
    data = tiny_grid()
    g = torch.Generator().manual_seed(1)
    frames = (torch.rand(25, 6, 7, generator=g) < 0.4).to(torch.uint8).numpy()
    frames[:5] = data.pixels([0, 13, 13, 59, 30])  # exact copies, one of them twice
    found = nearest_images(data, frames, chunk=chunk)
    index, distance = brute_force(data, frames)
    assert found.index.tolist() == index.tolist()
    assert found.distance.tolist() == distance.tolist()
    assert found.distance[:5].tolist() == [0] * 5
    assert torch.equal(found.classes, data.index_to_factors(found.index))


def test_nearest_images_within_a_subset() -> None:
    data = tiny_grid()
    frames = data.pixels([0, 13, 59])
    subset = torch.tensor([5, 13, 40, 41])
    found = nearest_images(data, frames, subset)
    images = data.pixels(subset)
    distance = (images[None] != frames[:, None]).reshape(3, 4, -1).sum(-1)
    assert found.index.tolist() == subset[distance.argmin(1)].tolist()
    assert found.distance.tolist() == distance.min(1).tolist()
    assert found.distance[1] == 0


def test_nearest_images_refuses_bad_frames() -> None:
    data = tiny_grid()
    with pytest.raises(IsaError, match="do not match"):
        nearest_images(data, np.zeros((2, 5, 5), np.uint8))
    with pytest.raises(IsaError, match="0/1"):
        nearest_images(data, np.full((2, 6, 7), 255, np.uint8))
    with pytest.raises(IsaError, match="out of range"):
        nearest_images(data, np.zeros((2, 6, 7), np.uint8), torch.tensor([60]))
    with pytest.raises(IsaError, match=r"^chunk must be at least 1") as caught:
        nearest_images(data, np.zeros((2, 6, 7), np.uint8), chunk=0)
    assert caught.value.field == "chunk"
    with pytest.raises(IsaError, match="no grid images"):
        nearest_images(data, np.zeros((2, 6, 7), np.uint8), torch.tensor([], dtype=torch.int64))
