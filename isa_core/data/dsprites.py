"""Procedural dSprites: the factor grid of the real file, drawn on demand on any device.

Factors (classes in C order, the last varying fastest, as in the real file):
shape 3 (square, ellipse, heart; values 1, 2, 3) x scale 6 (linspace(0.5, 1, 6)) x
orientation 40 (linspace(0, 2*pi, 40); 0 and 2*pi give the same image, as in the real data)
x 32 x y 32 (linspace(0, 1, 32)): 737,280 binary 64x64 images.

Geometry, fitted to 160 real frames (tests/fixtures: the dataset authors' animation; the
frames' classes read off its one-factor-at-a-time sweeps) and checked by
``tools/match_frames.py``. The authors drew vector shapes with LÖVE (Love2D) on a unit canvas
(dataset issue 2); in pixels of the 64x64 frame, pixel i spanning [i, i + 1]:

* position: the centre is at 16 + 32 * value (value = class / 31), so it moves 32/31 pixel a
  step, from 16 (the corner of pixels 15 and 16) to 48; y grows downward. In the frames the
  (left-right symmetric) heart's centroid runs from column 15.5 to 47.5 over the 31 x steps;
* square: side 19.2 * scale (0.3 of the frame): 10, 12, ..., 20 pixels a side at orientation
  0, yet only 364-372 pixels (not 400) for the largest one turned. 19.2 matches 31/32 frames
  exactly; 19.18 and 19.22 match fewer;
* ellipse: semi-axes 12.76 and 7.215 times scale (aspect 0.565), long axis horizontal at
  orientation 0: 288 pixels for the largest; 30/32 frames exact (polygons of 24-64 sides
  inscribed in it match no better);
* heart: the polygon of 400 points of the curve (16 sin^3 t, 13 cos t - 5 cos 2t - 2 cos 3t -
  cos 4t), scaled by 0.5995 across and 0.662 down (y flipped: point down) and shifted 1.4335
  pixels up, about the centre: 19.2 pixels wide and high; 87/96 frames exact. Two circles on
  a diamond, or on two cones to a point, leave 8-11 pixels a frame;
* rotation: about the centre, counterclockwise on screen as the angle grows (the animation's
  square turns 18.5 degrees, two classes, a frame that way);
* rasterization: a pixel is on when its centre is inside the shape (no anti-aliasing).

Left over: 12 of 160 frames differ by 1-4 single pixels on the outline (heart 9 frames, 1-2
pixels; ellipse 2, 2 pixels; square 1, 4 pixels). Cause not found; candidates: LÖVE's float32
GPU arithmetic, the heart's true vertex count, radii fitted to 0.005 pixel.

Every sprite at every factor combination stays at least one pixel inside the frame. Since
positions are sub-pixel, an image is not a window of a whole-pixel canvas: instead, for each of
the 720 (shape, scale, orientation) sprites and each y class, a table (built once per process,
~0.1 s, 22 MB float64) holds every row's on-interval(s) of x about the centre (at most two: the
heart's notch). A batch adds the x shift, turns each row into a 64-bit word and unpacks the
words' bytes through a 256-entry table: no 3 GB array, no per-pixel rasterization.

``dsprites-mini`` is the sub-grid: all 3 shapes, all 6 scales, orientation classes
0, 2, 4, 6, 8 (0 to 74 degrees), x and y classes 0, 5, 10, 16, 21, 26, 31: 4,410 images.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from isa_core.data.base import GroundTruthData

__all__ = ["DSprites"]

FACTOR_NAMES = ("shape", "scale", "orientation", "x", "y")
FULL_VALUES = (
    np.array([1.0, 2.0, 3.0]),
    np.linspace(0.5, 1.0, 6),
    np.linspace(0.0, 2 * math.pi, 40),
    np.linspace(0.0, 1.0, 32),
    np.linspace(0.0, 1.0, 32),
)
MINI_CLASSES = (
    np.arange(3),
    np.arange(6),
    np.array([0, 2, 4, 6, 8]),
    np.array([0, 5, 10, 16, 21, 26, 31]),
    np.array([0, 5, 10, 16, 21, 26, 31]),
)
SHAPE_NAMES = ("square", "ellipse", "heart")

# Fitted geometry, in pixels at scale 1 (the frame is 64 pixels; pixel i spans [i, i + 1]).
FIRST_CENTRE = 16.0  # the sprite's centre at position 0; position 1 puts it at 48
POSITION_SPAN = 32.0
SQUARE_SIDE = 19.2
ELLIPSE_AXES = (12.76, 7.215)  # semi-axes, the long one horizontal at orientation 0
# The heart: (HEART_X * 16 sin^3 t, HEART_Y * -(13 cos t - 5 cos 2t - 2 cos 3t - cos 4t)
# + HEART_SHIFT) with y down, as a polygon of HEART_VERTICES points t = 2 pi k / n.
HEART_X = 0.5995
HEART_Y = 0.662
HEART_SHIFT = -1.4335
HEART_VERTICES = 400

_ROWS = 30  # rows stored per sprite and y position: 14 above the centre's row, 15 below
_EMPTY = (math.inf, -math.inf)  # an empty interval [a, b], a > b


def heart_outline() -> tuple[np.ndarray, np.ndarray]:
    """The heart polygon at scale 1 and orientation 0: (u, v) pixels about its centre, v down."""
    t = 2 * math.pi * np.arange(HEART_VERTICES) / HEART_VERTICES
    u = HEART_X * 16 * np.sin(t) ** 3
    v = -HEART_Y * (13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t))
    return u, v + HEART_SHIFT


def _slab(p: np.ndarray, q: np.ndarray, h: float) -> tuple[np.ndarray, np.ndarray]:
    """The interval of x with |p x + q| <= h (p, q arrays; all x or none where p == 0)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        a, b = (-h - q) / p, (h - q) / p
    lo, hi = np.minimum(a, b), np.maximum(a, b)
    flat = p == 0
    lo = np.where(flat, np.where(np.abs(q) <= h, -np.inf, np.inf), lo)
    hi = np.where(flat, np.where(np.abs(q) <= h, np.inf, -np.inf), hi)
    return lo, hi


def _square_rows(half: float, cos: float, sin: float, dy: np.ndarray) -> np.ndarray:
    # local u = cos dx - sin dy, v = sin dx + cos dy; inside when |u| <= half and |v| <= half
    lo_u, hi_u = _slab(np.full_like(dy, cos), -sin * dy, half)
    lo_v, hi_v = _slab(np.full_like(dy, sin), cos * dy, half)
    lo, hi = np.maximum(lo_u, lo_v), np.minimum(hi_u, hi_v)
    empty = np.full_like(dy, _EMPTY[0]), np.full_like(dy, _EMPTY[1])
    return np.stack([lo, hi, *empty], axis=-1)


def _ellipse_rows(a: float, b: float, cos: float, sin: float, dy: np.ndarray) -> np.ndarray:
    # (u / a)^2 + (v / b)^2 <= 1 is alpha dx^2 + 2 beta dx + gamma <= 0 along a row
    alpha = cos**2 / a**2 + sin**2 / b**2
    beta = cos * sin * dy * (1 / b**2 - 1 / a**2)
    gamma = dy**2 * (sin**2 / a**2 + cos**2 / b**2) - 1
    disc = beta**2 - alpha * gamma
    root = np.sqrt(np.maximum(disc, 0))
    lo = np.where(disc >= 0, (-beta - root) / alpha, _EMPTY[0])
    hi = np.where(disc >= 0, (-beta + root) / alpha, _EMPTY[1])
    empty = np.full_like(dy, _EMPTY[0]), np.full_like(dy, _EMPTY[1])
    return np.stack([lo, hi, *empty], axis=-1)


def _polygon_rows(u: np.ndarray, v: np.ndarray, cos: float, sin: float, dy: np.ndarray):
    """Where each row (dy) crosses the rotated polygon: up to two intervals (even-odd rule)."""
    x, y = cos * u + sin * v, -sin * u + cos * v  # the outline on screen
    x0, y0, x1, y1 = x, y, np.roll(x, -1), np.roll(y, -1)
    # An edge crosses the rows min(y0, y1) <= dy < max(y0, y1): a short run of sorted rows.
    order = np.argsort(dy)
    ranked = dy[order]
    first = np.searchsorted(ranked, np.minimum(y0, y1))
    count = np.searchsorted(ranked, np.maximum(y0, y1)) - first
    edge = np.repeat(np.arange(len(x)), count)
    rank = first[edge] + np.arange(len(edge)) - np.repeat(np.cumsum(count) - count, count)
    row = order[rank]
    at = x0[edge] + (dy[row] - y0[edge]) * (x1[edge] - x0[edge]) / (y1[edge] - y0[edge])
    by_row = np.lexsort((at, row))  # crossings of each row, left to right
    row, at = row[by_row], at[by_row]
    per_row = np.bincount(row, minlength=len(dy))
    if per_row.max() > 4:
        raise AssertionError("a row crosses the heart more than four times")
    slot = np.arange(len(row)) - np.repeat(np.cumsum(per_row) - per_row, per_row)[: len(row)]
    out = np.empty((len(dy), 4))
    out[:, 0::2], out[:, 1::2] = _EMPTY
    out[row, slot] = at
    return out


def _centre(classes: np.ndarray) -> np.ndarray:
    """Pixel coordinate of the sprite's centre at position classes 0..31."""
    return FIRST_CENTRE + POSITION_SPAN * FULL_VALUES[3][classes]


@functools.cache
def row_table() -> tuple[np.ndarray, np.ndarray]:
    """Each sprite's pixel rows as intervals of the centre-relative x of the pixel centres.

    Returns ``intervals`` float64 (720, 32, _ROWS, 4): for sprite (shape, scale, orientation)
    and y class, rows ``first[y] + 0.._ROWS-1`` are on where ``a1 <= dx <= b1`` or
    ``a2 <= dx <= b2``; and ``first`` int64 (32,).
    """
    cy = _centre(np.arange(32))
    first = np.floor(cy).astype(np.int64) - 14
    dy = (first[:, None] + np.arange(_ROWS) + 0.5) - cy[:, None]  # (32, rows)
    flat = dy.reshape(-1)
    heart_u, heart_v = heart_outline()
    table = np.empty((3, 6, 40, 32 * _ROWS, 4))
    for c, scale in enumerate(FULL_VALUES[1]):
        for o, angle in enumerate(FULL_VALUES[2]):
            cos, sin = math.cos(angle), math.sin(angle)
            table[0, c, o] = _square_rows(SQUARE_SIDE * scale / 2, cos, sin, flat)
            a, b = ELLIPSE_AXES
            table[1, c, o] = _ellipse_rows(a * scale, b * scale, cos, sin, flat)
            table[2, c, o] = _polygon_rows(heart_u * scale, heart_v * scale, cos, sin, flat)
    return table.reshape(720, 32, _ROWS, 4), first


@functools.cache
def _byte_bits(device: torch.device) -> Tensor:
    """(256, 8) float32: the bits of each byte, least significant first."""
    bits = (torch.arange(256)[:, None] >> torch.arange(8)) & 1
    return bits.float().to(device)


class DSprites(GroundTruthData):
    """Procedural dSprites (``mini=False``: 737,280 images) or its 4,410-image sub-grid."""

    binary = True

    def __init__(self, mini: bool = False) -> None:
        self.name = "dsprites-mini" if mini else "dsprites"
        self.factor_names = FACTOR_NAMES
        self._classes = MINI_CLASSES if mini else tuple(np.arange(len(v)) for v in FULL_VALUES)
        self.factor_values = tuple(v[c] for v, c in zip(FULL_VALUES, self._classes, strict=True))
        self.image_shape = (1, 64, 64)
        self._tables: dict[torch.device, tuple[Tensor, Tensor, Tensor]] = {}
        self._class_maps = [torch.as_tensor(c, dtype=torch.int64) for c in self._classes]

    def tables(self, device: torch.device) -> tuple[Tensor, Tensor, Tensor]:
        """The row intervals, each y class's first row, and each x class's column shift."""
        if device not in self._tables:
            intervals, first = row_table()
            shift = _centre(np.arange(32)) - 0.5  # column of a pixel whose centre is at dx
            self._tables[device] = (
                torch.as_tensor(intervals, device=device),
                torch.as_tensor(first, device=device),
                torch.as_tensor(shift, device=device),
            )
        return self._tables[device]

    def full_classes(self, factors: Tensor) -> Tensor:
        """Classes of this grid (N, 5) to classes of the full dSprites grid (N, 5)."""
        columns = [m.to(factors.device)[factors[:, k]] for k, m in enumerate(self._class_maps)]
        return torch.stack(columns, dim=1)

    def images(
        self, indices: Tensor | Sequence[int], device: torch.device | str | None = None
    ) -> Tensor:
        device = torch.device(device or "cpu")
        if device.type == "cuda" and device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
        index = torch.as_tensor(indices, dtype=torch.int64).reshape(-1)
        full = self.full_classes(self.index_to_factors(index)).to(device)
        intervals, first, shift = self.tables(device)
        sprite = (full[:, 0] * 6 + full[:, 1]) * 40 + full[:, 2]
        x, y = full[:, 3], full[:, 4]
        # Columns whose centres fall in [a, b]: ceil(a + shift) .. floor(b + shift).
        ends = intervals[sprite, y] + shift[x][:, None, None]  # (B, rows, 4)
        start = ends[..., 0::2].ceil().clamp(0, 63).long()
        stop = ends[..., 1::2].floor().clamp(-1, 62).long()
        # Each row as a 64-bit word, bit j = column j; no sprite reaches column 63.
        one = torch.ones((), dtype=torch.int64, device=device)
        words = torch.where(stop >= start, (one << (stop + 1)) - (one << start), 0).sum(-1)
        rows = torch.zeros(len(index), 64, dtype=torch.int64, device=device)
        at = first[y][:, None] + torch.arange(_ROWS, device=device)
        rows.scatter_(1, at, words)
        # Bytes of the words (little-endian, as on every device torch runs on) to pixels.
        pixels = _byte_bits(device).index_select(0, rows.view(torch.uint8).reshape(-1).int())
        return pixels.reshape(len(index), 1, 64, 64)
