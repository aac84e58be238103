"""Animated latent traversals (the GIFs of disentanglement_lib and disentangling-vae), drawn
with Pillow: frame t shows the input, its reconstruction, and every traversed latent at its
t-th value side by side, so all latents move together as the animation plays."""

from __future__ import annotations

import io
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from isa_core.errors import IsaError, field_error
from isa_core.io import atomic_write

if TYPE_CHECKING:
    from isa_core.traverse import Traversal

__all__ = ["gif_bytes", "save_gif", "traversal_frames"]

FONT_SIZE = 12  # Pillow's default font, at a size that stays legible beside 128-pixel panels
MARGIN = 6  # pixels around and between panels
BACKGROUND = 255  # white
INK = 0  # black


def _panel_image(image: np.ndarray, scale: int) -> Image.Image:
    """One (H, W) or (H, W, C) image in [0, 1] as a Pillow image, scaled up by ``scale`` with
    nearest-neighbour so that pixels stay sharp."""
    pixels = np.round(np.clip(image, 0, 1) * 255).astype(np.uint8)
    picture = Image.fromarray(pixels, mode="L" if pixels.ndim == 2 else "RGB")
    return picture.resize((picture.width * scale, picture.height * scale), Image.Resampling.NEAREST)


def _text_width(font: ImageFont.ImageFont | ImageFont.FreeTypeFont, text: str) -> int:
    left, _, right, _ = font.getbbox(text)
    return int(np.ceil(right - left))


def traversal_frames(traversal: Traversal, scale: int = 2) -> list[Image.Image]:
    """The animation's frames, one per traversal step, all the same size: the input and its
    reconstruction, then one panel per traversed latent, each titled with its label and its
    current value; the caption (what the label's number means) runs along the bottom."""
    if scale < 1:
        raise field_error("scale", f"must be >= 1, got {scale}")
    if not traversal.rows:
        raise IsaError("rows is empty; give the decoded images of at least one latent")
    font = ImageFont.load_default(size=FONT_SIZE)
    line = FONT_SIZE + 4
    steps = traversal.rows[0].shape[0]
    titles = ["input", "reconstruction", *traversal.labels]
    image_width = traversal.original.shape[1] * scale
    image_height = traversal.original.shape[0] * scale
    panel = max(image_width, *(_text_width(font, title) for title in titles))
    width = max(
        MARGIN + len(titles) * (panel + MARGIN),
        2 * MARGIN + _text_width(font, traversal.caption),
    )
    height = MARGIN + line + image_height + 2 * line + line + MARGIN
    mode = "L" if traversal.original.ndim == 2 else "RGB"
    background = BACKGROUND if mode == "L" else (BACKGROUND,) * 3
    ink = INK if mode == "L" else (INK,) * 3
    still = [_panel_image(traversal.original, scale), _panel_image(traversal.reconstruction, scale)]
    frames = []
    for t in range(steps):
        frame = Image.new(mode, (width, height), background)
        draw = ImageDraw.Draw(frame)
        pictures = still + [_panel_image(row[t], scale) for row in traversal.rows]
        values = ["", ""] + [f"{value:+.2f}" for value in traversal.values[:, t]]
        for k, (title, picture, value) in enumerate(zip(titles, pictures, values, strict=True)):
            left = MARGIN + k * (panel + MARGIN)
            draw.text((left, MARGIN), title, fill=ink, font=font)
            frame.paste(picture, (left + (panel - image_width) // 2, MARGIN + line))
            draw.text((left, MARGIN + line + image_height + 2), value, fill=ink, font=font)
        below = MARGIN + line + image_height + line + 2
        draw.text((MARGIN, below), f"step {t + 1} of {steps}", fill=ink, font=font)
        draw.text((MARGIN, below + line), traversal.caption, fill=ink, font=font)
        frames.append(frame)
    return frames


def gif_bytes(frames: list[Image.Image], frame_ms: int = 200) -> bytes:
    """``frames`` as the bytes of a GIF that loops forever, ``frame_ms`` ms per frame."""
    if not frames:
        raise field_error("frames", "is empty; give at least one frame")
    if frame_ms < 1:
        raise field_error("frame_ms", f"must be >= 1, got {frame_ms}")
    buffer = io.BytesIO()
    first, *rest = frames
    first.save(buffer, format="GIF", save_all=True, append_images=rest, duration=frame_ms, loop=0)
    return buffer.getvalue()


def save_gif(frames: list[Image.Image], path: Path | str, frame_ms: int = 200) -> None:
    """Write ``frames`` as a looping GIF (``gif_bytes``), atomically (a temporary file, then a
    rename)."""
    if Path(path).suffix.lower() != ".gif":
        raise IsaError(f"{path}: animations are written as GIF; give a file name ending in .gif")
    data = gif_bytes(frames, frame_ms)
    with atomic_write(path) as handle:
        handle.write(data)
