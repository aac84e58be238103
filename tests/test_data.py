"""Ground-truth data: the procedural dSprites geometry, the grid API, and the file loaders."""

from __future__ import annotations

import builtins
import io
import itertools
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from isa_core.data import DSprites, open_dataset
from isa_core.data.dsprites import ELLIPSE_AXES
from isa_core.errors import IsaError

DS = DSprites()


def images_at(data, tuples) -> np.ndarray:
    index = data.factors_to_index(torch.as_tensor(tuples))
    return data.images(index)[:, 0].numpy()


def centroid(image: np.ndarray) -> tuple[float, float]:
    rows, cols = np.nonzero(image)
    return rows.mean(), cols.mean()


def test_grid_matches_the_real_file() -> None:
    assert DS.factor_names == ("shape", "scale", "orientation", "x", "y")
    assert DS.factor_sizes == (3, 6, 40, 32, 32) and len(DS) == 737_280
    np.testing.assert_allclose(DS.factor_values[1], [0.5, 0.6, 0.7, 0.8, 0.9, 1.0])
    np.testing.assert_allclose(DS.factor_values[2][[0, -1]], [0, 2 * np.pi])
    # C order with y fastest, as in the real file: index 1 is y = 1, index 32 is x = 1.
    assert DS.index_to_factors([1, 32, 1024]).tolist() == [
        [0, 0, 0, 0, 1],
        [0, 0, 0, 1, 0],
        [0, 0, 1, 0, 0],
    ]


def test_index_factor_round_trip_over_the_whole_grid() -> None:
    index = torch.arange(len(DS))
    factors = DS.index_to_factors(index)
    assert torch.equal(DS.factors_to_index(factors), index)
    grid = torch.cartesian_prod(*[torch.arange(s) for s in DS.factor_sizes])
    assert torch.equal(factors, grid)


def check_binary_inside_frame(images: np.ndarray) -> None:
    assert images.dtype == np.float32 and set(np.unique(images)) <= {0.0, 1.0}
    assert (images.reshape(len(images), -1).sum(1) > 0).all()
    border = images[:, [0, -1], :].sum() + images[:, :, [0, -1]].sum()
    assert border == 0, "a sprite touches or leaves the frame"


def test_extreme_positions_stay_inside_the_frame() -> None:
    """Every shape, scale and orientation at the four corners and edges of the position grid."""
    tuples = [
        [s, c, o, x, y]
        for s in range(3)
        for c in range(6)
        for o in range(40)
        for x, y in [(0, 0), (0, 31), (31, 0), (31, 31), (16, 0), (0, 16)]
    ]
    check_binary_inside_frame(images_at(DS, tuples))


@pytest.mark.slow
def test_every_image_is_binary_and_inside_the_frame() -> None:
    for start in range(0, len(DS), 1 << 16):
        check_binary_inside_frame(
            DS.images(torch.arange(start, min(len(DS), start + (1 << 16))))[:, 0].numpy()
        )


def test_random_images_are_binary_and_inside_the_frame() -> None:
    index = DS.sample_indices(20_000, torch.Generator().manual_seed(0))
    check_binary_inside_frame(DS.images(index)[:, 0].numpy())


@pytest.mark.parametrize("shape", range(3))
@pytest.mark.parametrize("orientation", [0, 7, 23])
def test_centroid_moves_right_with_x_and_down_with_y(shape: int, orientation: int) -> None:
    across = images_at(DS, [[shape, 3, orientation, x, 10] for x in range(32)])
    cols = [centroid(im)[1] for im in across]
    assert all(b > a for a, b in itertools.pairwise(cols))
    # The centre moves 32/31 pixel a step, sampled at pixel centres: steps of 1 or so, and
    # position 31 is position 0 moved by exactly 32 pixels (a pure translation).
    assert np.abs(np.diff(cols) - 32 / 31).max() < 0.75
    np.testing.assert_array_equal(across[-1], np.roll(across[0], 32, axis=1))
    down = images_at(DS, [[shape, 3, orientation, 20, y] for y in range(32)])
    rows = [centroid(im)[0] for im in down]
    assert all(b > a for a, b in itertools.pairwise(rows))
    np.testing.assert_array_equal(down[-1], np.roll(down[0], 32, axis=0))


@pytest.mark.parametrize("shape", range(3))
def test_area_grows_with_scale(shape: int) -> None:
    for orientation in (0, 5, 13, 30):
        areas = images_at(DS, [[shape, c, orientation, 16, 16] for c in range(6)]).sum((1, 2))
        assert all(b > a for a, b in itertools.pairwise(areas)), areas
    # and roughly with scale squared (area 4x from scale 0.5 to 1)
    mean = images_at(DS, [[shape, c, o, 16, 16] for c in (0, 5) for o in range(40)])
    ratio = mean[40:].sum() / mean[:40].sum()
    assert 3.4 < ratio < 4.6


def test_rotating_an_ellipse_keeps_its_area() -> None:
    """Each rotation keeps the ellipse's pixel count at pi*a*b up to boundary pixels."""
    for scale in range(6):
        areas = images_at(DS, [[1, scale, o, 16, 16] for o in range(40)]).sum((1, 2))
        a, b = (axis * DS.factor_values[1][scale] for axis in ELLIPSE_AXES)
        exact = np.pi * a * b
        assert abs(areas.mean() / exact - 1) < 0.01
        assert np.abs(areas - exact).max() <= 0.03 * exact + 5, (scale, areas.min(), areas.max())
    large = images_at(DS, [[1, 5, o, 16, 16] for o in range(40)]).sum((1, 2))
    assert large.max() / large.min() < 1.06


def test_orientation_rotates_about_the_centre_and_wraps() -> None:
    ellipses = images_at(DS, [[1, 5, o, 16, 16] for o in range(40)])
    np.testing.assert_array_equal(ellipses[0], ellipses[39])  # 0 and 2*pi
    centre = 16 + 32 * 16 / 31 - 0.5  # position class 16, in pixel indices
    for image in ellipses:
        r, c = centroid(image)
        assert abs(r - centre) < 0.6 and abs(c - centre) < 0.6
    # Long axis horizontal at 0, vertical at a quarter turn (class ~10 is 92 degrees).
    rows, cols = np.nonzero(ellipses[0])
    assert np.ptp(cols) > 1.5 * np.ptp(rows)
    rows, cols = np.nonzero(ellipses[10])
    assert np.ptp(rows) > 1.5 * np.ptp(cols)


def test_calibrated_sizes_and_rotation_sense() -> None:
    """The real frames' geometry (see isa_core/data/dsprites.py): at orientation 0 the square
    is 10, 12, ..., 20 pixels a side and the ellipse 12, 16, 18, 20, 22, 26 pixels wide;
    position 0 centres a sprite on the corner of pixels 15 and 16; angles turn
    counterclockwise on screen."""
    squares = images_at(DS, [[0, c, 0, 0, 0] for c in range(6)])
    assert squares.sum((1, 2)).tolist() == [100, 144, 196, 256, 324, 400]
    rows, cols = np.nonzero(squares[-1])
    assert (rows.min(), rows.max(), cols.min(), cols.max()) == (6, 25, 6, 25)
    ellipses = images_at(DS, [[1, c, 0, 0, 0] for c in range(6)])
    assert [np.ptp(np.nonzero(e)[1]) + 1 for e in ellipses] == [12, 16, 18, 20, 22, 26]
    # A square turned by 2 classes (18.5 degrees) counterclockwise: its top corner is right of
    # the centre, its left corner above it.
    rows, cols = np.nonzero(images_at(DS, [[0, 5, 2, 16, 16]])[0])
    assert cols[rows == rows.min()].mean() > 32 and rows[cols == cols.min()].mean() < 32


def test_the_three_shapes_differ() -> None:
    for scale, orientation in [(0, 0), (5, 0), (3, 17)]:
        square, ellipse, heart = images_at(DS, [[s, scale, orientation, 9, 21] for s in range(3)])
        assert (square != ellipse).sum() > 10 and (square != heart).sum() > 10
        assert (ellipse != heart).sum() > 10
    heart = images_at(DS, [[2, 5, 0, 16, 16]])[0]
    rows, _cols = np.nonzero(heart)
    # the heart's point is at the bottom: its lowest row is narrower than its highest
    assert (rows == rows.max()).sum() < (rows == rows.min() + 3).sum()


def test_mini_is_a_sub_grid_of_the_same_images() -> None:
    mini = open_dataset("dsprites-mini")
    assert len(mini) <= 5000 and mini.factor_sizes == (3, 6, 5, 7, 7)
    for k in range(5):
        assert set(mini.factor_values[k]) <= set(DS.factor_values[k])
    index = torch.arange(0, len(mini), 37)
    factors = mini.index_to_factors(index)
    full = DS.factors_to_index(mini.full_classes(factors))
    assert torch.equal(mini.images(index), DS.images(full))


def test_api_basics() -> None:
    g = torch.Generator().manual_seed(1)
    factors = DS.sample_factors(1000, g)
    assert factors.shape == (1000, 5) and (factors >= 0).all()
    assert (factors < torch.tensor(DS.factor_sizes)).all()
    batch = DS.images(torch.tensor([0, 5, 9]), "cpu")
    assert batch.shape == (3, 1, 64, 64) and batch.dtype == torch.float32
    pixels = DS.pixels([0, 5])
    assert pixels.shape == (2, 64, 64) and pixels.dtype == np.uint8
    values = DS.factor_values_of(DS.index_to_factors(torch.tensor([len(DS) - 1])))
    np.testing.assert_allclose(values, [[3.0, 1.0, 2 * np.pi, 1.0, 1.0]])
    with pytest.raises(IsaError, match="out of range"):
        DS.images([len(DS)])
    with pytest.raises(IsaError, match="scale = 6 is out of range"):
        DS.factors_to_index([[0, 6, 0, 0, 0]])
    info = DS.info()
    assert info["n"] == 737_280 and info["factors"][0]["name"] == "shape"


@pytest.mark.gpu
def test_cuda_images_match_cpu() -> None:
    index = DS.sample_indices(4096, torch.Generator().manual_seed(2))
    assert torch.equal(DS.images(index, "cuda").cpu(), DS.images(index))


# -- file loaders ---------------------------------------------------------------------------


def write_dsprites_like(path: Path, sizes=(3, 2, 4, 4, 5)) -> tuple[np.ndarray, np.ndarray]:
    """A file in the real dSprites format over a sub-grid, rows in shuffled order."""
    grid = np.array(np.meshgrid(*[np.arange(s) for s in sizes], indexing="ij")).reshape(5, -1).T
    classes = np.concatenate([np.zeros((len(grid), 1), dtype=np.int64), grid], axis=1)
    values = classes.astype(np.float64) * np.array([1, 1, 0.1, 0.5, 0.25, 0.2]) + [
        1,
        1,
        0.5,
        0,
        0,
        0,
    ]
    rng = np.random.default_rng(0)
    imgs = (rng.random((len(grid), 64, 64)) < 0.1).astype(np.uint8)
    order = rng.permutation(len(grid))
    np.savez(
        path,
        imgs=imgs[order],
        latents_classes=classes[order],
        latents_values=values[order],
        metadata=np.array([{"not": "loaded"}], dtype=object),
    )
    return imgs, grid


def test_real_format_loader_never_touches_metadata_and_orders_by_grid(tmp_path: Path) -> None:
    path = tmp_path / "dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz"
    imgs, grid = write_dsprites_like(path)
    data = open_dataset(str(path))
    assert data.factor_sizes == (3, 2, 4, 4, 5) and data.binary
    np.testing.assert_allclose(data.factor_values[1], [0.5, 0.6])
    index = data.factors_to_index(torch.as_tensor(grid))
    np.testing.assert_array_equal(data.pixels(index), imgs)


def test_real_format_loader_refuses_damage(tmp_path: Path) -> None:
    path = tmp_path / "d.npz"
    write_dsprites_like(path)
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(IsaError, match=r"truncated or corrupt|not a readable"):
        open_dataset(str(truncated))
    pickled = tmp_path / "pickled.npz"
    pickled.write_bytes(pickle.dumps({"imgs": np.zeros(3)}))
    with pytest.raises(IsaError, match="pickle"):
        open_dataset(str(pickled))
    partial = tmp_path / "partial.npz"
    np.savez(
        partial,
        imgs=np.zeros((3, 64, 64), np.uint8),
        latents_classes=np.zeros((3, 6), int),
        latents_values=np.zeros((3, 6)),
    )
    with pytest.raises(IsaError, match="full grid"):
        open_dataset(str(partial))


def test_generic_npz(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    factors = np.array(np.meshgrid(np.arange(2), np.arange(3), indexing="ij")).reshape(2, -1).T
    images = rng.integers(0, 256, (6, 8, 8, 3), dtype=np.uint8)
    path = tmp_path / "mine.npz"
    np.savez(
        path,
        images=images[::-1],
        factors=factors[::-1],
        factor_names=np.array(["a", "b"]),
        factor_sizes=np.array([2, 3]),
        factor_values_b=np.array([0.1, 0.2, 0.3]),
    )
    data = open_dataset(str(path))
    assert data.name == "mine" and data.image_shape == (3, 8, 8) and not data.binary
    np.testing.assert_allclose(data.factor_values[1], [0.1, 0.2, 0.3])
    np.testing.assert_array_equal(data.pixels(torch.arange(6)), images)
    batch = data.images([5])
    assert batch.shape == (1, 3, 8, 8) and float(batch.max()) <= 1.0
    bad = tmp_path / "bad.npz"
    np.savez(
        bad,
        images=images,
        factors=factors,
        factor_names=np.array(["a", "b"]),
        factor_sizes=np.array([2, 4]),
    )
    with pytest.raises(IsaError, match="factor_sizes"):
        open_dataset(str(bad))
    objects = tmp_path / "objects.npz"
    np.savez(
        objects,
        images=np.array([None, 1], dtype=object),
        factors=factors,
        factor_names=np.array(["a", "b"]),
        factor_sizes=np.array([2, 3]),
    )
    with pytest.raises(IsaError, match="pickled object"):
        open_dataset(str(objects))


def test_cars3d_folder(tmp_path: Path) -> None:
    from scipy.io import savemat

    rng = np.random.default_rng(4)
    cars = []
    for i in range(2):
        im = rng.integers(0, 256, (128, 128, 3, 24, 4), dtype=np.uint8)
        savemat(tmp_path / f"car_{i:03d}_mesh.mat", {"im": im}, do_compression=True)
        cars.append(im)
    data = open_dataset(str(tmp_path))
    assert data.factor_names == ("elevation", "azimuth", "object")
    assert data.factor_sizes == (4, 24, 2) and data.image_shape == (3, 64, 64)
    got = data.pixels(data.factors_to_index([[3, 17, 1]]))[0]
    expected = cars[1][:, :, :, 17, 3].astype(float).reshape(64, 2, 64, 2, 3).mean((1, 3))
    np.testing.assert_allclose(got, np.round(expected), atol=1)
    (tmp_path / "car_002_mesh.mat").write_bytes(b"not a mat file at all")
    with pytest.raises(IsaError, match=r"car_002_mesh\.mat"):
        open_dataset(str(tmp_path))


def test_faces3d_tensor_and_npz(tmp_path: Path) -> None:
    renders = torch.randint(0, 256, (2, 3, 2, 2, 64, 64), dtype=torch.uint8)
    path = tmp_path / "basel_face_renders.pth"
    torch.save(renders, path)
    data = open_dataset(str(path))
    assert data.factor_names == ("face", "azimuth", "elevation", "lighting")
    assert data.factor_sizes == (2, 3, 2, 2) and data.image_shape == (1, 64, 64)
    np.testing.assert_array_equal(
        data.pixels(data.factors_to_index([[1, 2, 0, 1]]))[0], renders[1, 2, 0, 1].numpy()
    )
    as_npz = tmp_path / "faces.npz"
    np.savez(as_npz, images=renders.numpy())
    assert open_dataset(str(as_npz)).factor_sizes == (2, 3, 2, 2)
    evil = tmp_path / "evil.pth"
    torch.save({"x": Path("/etc/passwd")}, evil)  # an object weights_only refuses to build
    with pytest.raises(IsaError, match="not a plain tensor file"):
        open_dataset(str(evil))
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(IsaError, match="not a plain tensor file"):
        open_dataset(str(truncated))
    raw = tmp_path / "raw.pt"
    raw.write_bytes(pickle.dumps(renders.numpy()))
    with pytest.raises(IsaError, match="pickle"):
        open_dataset(str(raw))


@pytest.mark.parametrize("name", ["mnist", "dsprite", "cars"])
def test_unknown_names(name: str) -> None:
    with pytest.raises(IsaError, match="unknown data set"):
        open_dataset(name)


def faces_npz(path: Path) -> None:
    np.savez(path, images=np.zeros((2, 1, 1, 1, 64, 64), np.uint8))


def generic_npz(path: Path) -> None:
    factors = np.array([[a, b] for a in range(2) for b in range(3)])
    np.savez(
        path,
        images=np.zeros((6, 4, 4), np.uint8),
        factors=factors,
        factor_names=np.array(["a", "b"]),
        factor_sizes=np.array([2, 3]),
    )


@pytest.mark.parametrize("write", [write_dsprites_like, generic_npz, faces_npz])
def test_a_data_file_is_opened_once(tmp_path: Path, monkeypatch, write) -> None:
    """The dispatcher sniffs and the reader reads through one open handle (issue 15)."""
    path = tmp_path / "data.npz"
    write(path)
    opened: list[str] = []
    real_open = builtins.open

    def counting_open(file, *args, **kwargs):
        opened.append(str(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", counting_open)  # np.load, torch.load, open()
    monkeypatch.setattr(io, "open", counting_open)  # zipfile.ZipFile, Path.open
    data = open_dataset(str(path))
    assert len(data) > 0
    assert opened.count(str(path)) == 1, opened
