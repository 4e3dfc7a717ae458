"""Images in and out of the page: upload decoding with limits, PNG / GIF encoding, flow pictures.

Uploads are decoded by Pillow after checking the header: a file that is not an image, larger
than ``MAX_UPLOAD_BYTES`` or with more than ``MAX_PIXELS`` pixels (a decompression bomb) is refused
with a one-line :class:`ImageError`; an accepted image is scaled down so its longer side is at
most ``MAX_SIDE`` (the model's cost grows with the pixels). The flow is shown on the Middlebury
colour wheel (``pipeline.viz.flow_to_color``) with the guidance arrows drawn over it.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Sequence

import numpy as np
from PIL import Image, UnidentifiedImageError

from pipeline.viz import draw_guidance_arrows, flow_to_color, mask_overlay

__all__ = [
    "MAX_PIXELS",
    "MAX_SIDE",
    "MAX_UPLOAD_BYTES",
    "ImageError",
    "decode_image",
    "encode_gif",
    "encode_png",
    "flow_picture",
    "mask_picture",
]

MAX_UPLOAD_BYTES = 20 * 1024 * 1024
MAX_PIXELS = 40_000_000
MAX_SIDE = 512


class ImageError(ValueError):
    """An upload that is not an image, or too large."""


def _fit(image: Image.Image, max_side: int) -> Image.Image:
    width, height = image.size
    scale = max_side / max(width, height)
    if scale >= 1.0:
        return image
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return image.resize(size, Image.Resampling.LANCZOS)


def decode_image(data: bytes, max_side: int = MAX_SIDE) -> tuple[np.ndarray, str]:
    """uint8 (H, W, 3) RGB from an uploaded file's bytes, and a note on what was done to it."""
    if len(data) > MAX_UPLOAD_BYTES:
        raise ImageError(
            f"file is {len(data) / 2**20:.1f} MiB; the limit is {MAX_UPLOAD_BYTES // 2**20} MiB"
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            width, height = image.size  # header only: nothing is decoded yet
            if width * height > MAX_PIXELS:
                raise ImageError(
                    f"image is {width}x{height} ({width * height / 1e6:.0f} MP); "
                    f"the limit is {MAX_PIXELS / 1e6:.0f} MP"
                )
            image.load()
    except ImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        limit = f"the limit is {MAX_PIXELS / 1e6:.0f} MP"
        raise ImageError(f"image too large, {limit} ({str(error).split(',')[0]})") from None
    except UnidentifiedImageError:
        raise ImageError("not an image Pillow can read (PNG, JPEG, WebP, ...)") from None
    except (OSError, SyntaxError, ValueError) as error:
        raise ImageError(f"image file is damaged: {error}") from None
    rgb = _fit(image.convert("RGB"), max_side)
    note = (
        ""
        if rgb.size == (width, height)
        else f"scaled from {width}x{height} to {rgb.width}x{rgb.height}"
    )
    return np.asarray(rgb, dtype=np.uint8).copy(), note


def encode_png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(array)).save(buffer, format="PNG")
    return buffer.getvalue()


def encode_gif(frames: Sequence[np.ndarray], frame_ms: int = 200) -> bytes:
    """An endlessly looping GIF of the frames (uint8 RGB, one size)."""
    if not frames:
        raise ValueError("no frames to encode")
    images = [Image.fromarray(np.ascontiguousarray(f)) for f in frames]
    buffer = io.BytesIO()
    images[0].save(
        buffer, format="GIF", save_all=True, append_images=images[1:], duration=frame_ms, loop=0
    )
    return buffer.getvalue()


def flow_picture(
    flow: np.ndarray, arrows: np.ndarray, max_magnitude: float | None = None
) -> np.ndarray:
    """The flow on the colour wheel (saturated at ``max_magnitude``, default the largest
    arrow or flow vector) with the guidance arrows in black."""
    if max_magnitude is None:
        largest = [np.hypot(flow[..., 0], flow[..., 1]).max()]
        if len(arrows):
            largest.append(np.hypot(arrows[:, 2], arrows[:, 3]).max())
        max_magnitude = max(1.0, float(max(largest)))
    picture = flow_to_color(flow, max_magnitude)
    if len(arrows):
        points = np.stack([arrows[:, 1], arrows[:, 0]], axis=1)
        picture = draw_guidance_arrows(picture, points, arrows[:, 2:4], color=(0, 0, 0))
    return picture


def mask_picture(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The mask in red over the image (half transparent)."""
    return mask_overlay(image, mask.astype(np.float32), color=(255, 0, 0), alpha=0.5)
