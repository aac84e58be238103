"""Procedural dSprites: the factor grid of the real file, drawn on demand on any device.

Factors (classes in C order, the last varying fastest, as in the real file):
shape 3 (square, ellipse, heart; values 1, 2, 3) x scale 6 (linspace(0.5, 1, 6)) x
orientation 40 (linspace(0, 2*pi, 40); 0 and 2*pi give the same image, as in the real data)
x 32 x y 32 (linspace(0, 1, 32)): 737,280 binary 64x64 images.

Geometry. What the dSprites authors published (their README and notebook, and replies in the
dataset's issue tracker) fixes the factor grid, the C order, 0/1 uint8 pixels, posX = 0 at the
left, a direct 64x64 rasterization without anti-aliasing, and that each latent step is the
smallest change that alters the pixels. It does not publish pixel sizes, the centre's range or
the heart's curve, so the numbers below are our reconstruction:

* position: the sprite centre sits on pixel centres, column 16 + x_class and row
  16 + y_class (so x and y move by exactly one pixel per step, over the central 32 x 32
  block); y grows downward (row 0 is the top), as in the LÖVE renderer the data came from;
* size: the sprite's half-width is h = 10.3 * scale pixels: a 20.6-pixel square at scale 1
  and a 10.3-pixel one at scale 0.5. With these shapes the mean foreground over the whole
  grid is 4.3% of the pixels, the mean reported for the real images;
* shapes, all centred on the centre pixel and rotated about it: the square has side 2h;
  the ellipse has semi-axes h (horizontal at orientation 0) and h/2; the heart is the region
  (x^2 + y^2 - 1)^3 <= x^2 y^3 scaled to fit a 2h x 2h box, its point downward at
  orientation 0;
* rotation: by the orientation angle, clockwise on screen (the LÖVE convention with y down);
* rasterization: a pixel is on when its centre is inside the rotated shape (no anti-aliasing).

Every sprite at every factor combination stays at least one pixel inside the frame. Because
positions move by whole pixels, each of the 720 (shape, scale, orientation) sprites is drawn
once per device into a padded 95x95 canvas; an image is a 64x64 window of its canvas, so a
batch is one gather (no 3 GB array, no per-image rasterization).

``dsprites-mini`` is the sub-grid: all 3 shapes, all 6 scales, orientation classes
0, 2, 4, 6, 8 (0 to 74 degrees), x and y classes 0, 5, 10, 16, 21, 26, 31: 4,410 images.
"""

from __future__ import annotations

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
HALF_WIDTH = 10.3  # pixels at scale 1
# Extent of the implicit heart (x^2 + y^2 - 1)^3 = x^2 y^3: |x| <= 1.1390, -1 <= y <= 1.2360.
_HEART_HALF_WIDTH = 1.1390
_HEART_TOP = 1.2360
ELLIPSE_ASPECT = 0.5
FIRST_CENTRE = 16  # the centre pixel (row or column) at position class 0
_STAMP = 33  # sprites are drawn on 33x33 stamps centred on pixel 16
_CANVAS = 64 + 31  # a stamp padded so that each of the 32x32 positions is a 64x64 window


def _inside_heart(u: Tensor, v: Tensor) -> Tensor:
    """Inside the heart (x^2 + y^2 - 1)^3 <= x^2 y^3, fitted to the box [-1, 1]^2, point down.

    (u, v) are screen coordinates (v grows downward). The curve spans x in [-w, w] and
    y in [-1, t]; we map the box onto it, keeping the aspect ratio, centred on the box centre.
    """
    width, top = _HEART_HALF_WIDTH, _HEART_TOP
    half = max(width, (top + 1) / 2)
    x = u * half
    y = -v * half + (top - 1) / 2  # flip to y up; shift so the bounding box is centred
    return (x**2 + y**2 - 1) ** 3 <= x**2 * y**3


def render_stamps(device: torch.device | str = "cpu") -> Tensor:
    """All 3 x 6 x 40 sprites as uint8 (720, 33, 33) 0/1 stamps centred on pixel (16, 16)."""
    offsets = torch.arange(_STAMP, dtype=torch.float64, device=device) - 16
    py, px = torch.meshgrid(offsets, offsets, indexing="ij")  # pixel centres minus the centre
    scales = torch.tensor(FULL_VALUES[1], dtype=torch.float64, device=device)
    angles = torch.tensor(FULL_VALUES[2], dtype=torch.float64, device=device)
    half = (HALF_WIDTH * scales)[:, None, None, None]  # (6, 1, 1, 1)
    cos, sin = torch.cos(angles)[:, None, None], torch.sin(angles)[:, None, None]
    # Undo a clockwise-on-screen rotation, then measure in units of the half-width h.
    u = (px * cos + py * sin)[None] / half  # (6, 40, 33, 33)
    v = (-px * sin + py * cos)[None] / half
    square = (u.abs() <= 1) & (v.abs() <= 1)
    ellipse = u**2 + (v / ELLIPSE_ASPECT) ** 2 <= 1
    heart = _inside_heart(u, v)
    stamps = torch.stack([square, ellipse, heart])  # (3, 6, 40, 33, 33)
    return stamps.reshape(-1, _STAMP, _STAMP).to(torch.uint8)


class DSprites(GroundTruthData):
    """Procedural dSprites (``mini=False``: 737,280 images) or its 4,410-image sub-grid."""

    binary = True

    def __init__(self, mini: bool = False) -> None:
        self.name = "dsprites-mini" if mini else "dsprites"
        self.factor_names = FACTOR_NAMES
        self._classes = MINI_CLASSES if mini else tuple(np.arange(len(v)) for v in FULL_VALUES)
        self.factor_values = tuple(v[c] for v, c in zip(FULL_VALUES, self._classes, strict=True))
        self.image_shape = (1, 64, 64)
        self._windows: dict[torch.device, Tensor] = {}
        self._class_maps = [torch.as_tensor(c, dtype=torch.int64) for c in self._classes]

    def windows(self, device: torch.device) -> Tensor:
        """(720, 32, 32, 64, 64) uint8 view: sprite, row offset, column offset -> image."""
        if device not in self._windows:
            stamps = render_stamps(device)
            canvas = torch.zeros(len(stamps), _CANVAS, _CANVAS, dtype=torch.uint8, device=device)
            canvas[:, 31 : 31 + _STAMP, 31 : 31 + _STAMP] = stamps
            self._windows[device] = canvas.unfold(1, 64, 1).unfold(2, 64, 1)
        return self._windows[device]

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
        sprite = (full[:, 0] * 6 + full[:, 1]) * 40 + full[:, 2]
        rows = 31 - full[:, 4]  # canvas offsets: the stamp's centre lands on pixel 16 + class
        cols = 31 - full[:, 3]
        batch = self.windows(device)[sprite, rows, cols]  # (B, 64, 64) uint8
        return batch[:, None].float()
