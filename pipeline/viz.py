"""Pictures of flow, masks and guidance points for reports and debugging.

The flow colour code is the Middlebury colour wheel (Baker et al., "A Database and Evaluation
Methodology for Optical Flow", IJCV 2011): hue from the direction, saturation from the magnitude,
55 colours in six ramps RY 15, YG 6, GC 4, CB 11, BM 13, MR 6. Unlike `torchvision.utils.
flow_to_image`, which normalises by the batch maximum, the magnitude is divided by a FIXED
`max_magnitude` (beyond it colours saturate), so frames and videos are comparable
(REFERENCE.md, "Flow formats and tools").

Images are uint8 RGB H x W x 3 (docs/CONTRACTS.md); numpy and OpenCV only.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

import cv2
import numpy as np

from pipeline.atomic import write_bytes

# (ramp length, start colour, end colour) of the six Middlebury ramps, red back to red.
_WHEEL_RAMPS = (
    (15, (255, 0, 0), (255, 255, 0)),  # RY: red -> yellow
    (6, (255, 255, 0), (0, 255, 0)),  # YG: yellow -> green
    (4, (0, 255, 0), (0, 255, 255)),  # GC: green -> cyan
    (11, (0, 255, 255), (0, 0, 255)),  # CB: cyan -> blue
    (13, (0, 0, 255), (255, 0, 255)),  # BM: blue -> magenta
    (6, (255, 0, 255), (255, 0, 0)),  # MR: magenta -> red
)


def make_color_wheel() -> np.ndarray:
    """The 55 x 3 float64 Middlebury colour wheel (RGB, 0..255); entry 0 is pure red."""
    colours = []
    for length, start, end in _WHEEL_RAMPS:
        t = np.arange(length)[:, None] / length  # the ramp's end is the next ramp's start
        colours.append(np.asarray(start) * (1 - t) + np.asarray(end) * t)
    return np.concatenate(colours).astype(np.float64)


_WHEEL = make_color_wheel()


def _check_image(image: np.ndarray, name: str = "image") -> np.ndarray:
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"{name} must be uint8 H x W x 3 RGB, got {image.dtype} {image.shape}")
    return image


def flow_to_color(
    flow: np.ndarray, max_magnitude: float, *, valid: np.ndarray | None = None
) -> np.ndarray:
    """Colour-code flow (H x W x 2, dx dy) as uint8 RGB with a fixed max magnitude.

    Zero flow is white; a vector of length >= max_magnitude gets the fully saturated wheel colour
    of its direction (+x is red). Non-finite or invalid (valid == False) pixels are black.
    """
    flow = np.asarray(flow)
    if flow.ndim != 3 or flow.shape[2] != 2:
        raise ValueError(f"flow must be H x W x 2, got shape {flow.shape}")
    if not (math.isfinite(max_magnitude) and max_magnitude > 0):
        raise ValueError(f"max_magnitude must be a positive number, got {max_magnitude}")
    u = flow[..., 0].astype(np.float64)
    v = flow[..., 1].astype(np.float64)
    good = np.isfinite(u) & np.isfinite(v)
    if valid is not None:
        if np.shape(valid) != u.shape:
            raise ValueError(f"valid mask shape {np.shape(valid)} does not match flow {u.shape}")
        good &= np.asarray(valid, dtype=bool)
    u = np.where(good, u, 0.0)
    v = np.where(good, v, 0.0)

    n = len(_WHEEL)
    # Middlebury's angle: atan2(-v, -u) / pi in [-1, 1]; -1 and +1 are both +x (red). Scaling by
    # n and wrapping (instead of the reference's n - 1) keeps the hue continuous across +x.
    angle = np.arctan2(-v, -u) / np.pi
    position = (angle + 1.0) / 2.0 * n
    k0 = np.floor(position).astype(np.int64) % n
    k1 = (k0 + 1) % n
    frac = (position - np.floor(position))[..., None]
    hue = (1.0 - frac) * _WHEEL[k0] + frac * _WHEEL[k1]
    radius = np.minimum(np.hypot(u, v) / max_magnitude, 1.0)[..., None]
    colour = 255.0 - radius * (255.0 - hue)  # desaturate towards white as the vector shrinks
    colour[~good] = 0.0
    return np.clip(np.rint(colour), 0, 255).astype(np.uint8)


def color_wheel_legend(size: int = 128, *, background: int = 255) -> np.ndarray:
    """A size x size uint8 RGB disc showing the colour of every direction and magnitude.

    The disc's rim is max_magnitude; the centre is zero flow; outside the disc is `background`.
    """
    if size < 3:
        raise ValueError(f"legend size must be >= 3, got {size}")
    centre = (size - 1) / 2.0
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float64)
    flow = np.stack([xs - centre, ys - centre], axis=-1) / centre
    legend = flow_to_color(flow, 1.0)
    legend[np.hypot(flow[..., 0], flow[..., 1]) > 1.0] = background
    return legend


def mask_overlay(
    image: np.ndarray,
    mask: np.ndarray,
    color: tuple[int, int, int] = (255, 0, 0),
    alpha: float = 0.5,
) -> np.ndarray:
    """Blend `color` into image where mask is set; a soft mask in [0, 1] blends proportionally."""
    image = _check_image(image)
    mask = np.asarray(mask)
    if mask.shape != image.shape[:2]:
        raise ValueError(f"mask shape {mask.shape} does not match image {image.shape[:2]}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    weight = alpha * np.clip(mask.astype(np.float64), 0.0, 1.0)[..., None]
    blended = image * (1.0 - weight) + np.asarray(color, dtype=np.float64) * weight
    return np.clip(np.rint(blended), 0, 255).astype(np.uint8)


def draw_guidance_arrows(
    image: np.ndarray,
    points_yx: np.ndarray,
    vectors_dxdy: np.ndarray,
    *,
    color: tuple[int, int, int] = (0, 0, 0),
    scale: float = 1.0,
    thickness: int = 1,
    point_radius: int = 2,
    tip_length: float = 0.3,
) -> np.ndarray:
    """Draw a dot at each guidance point (y, x) and an arrow along its flow vector (dx, dy).

    `scale` multiplies the vectors (small flows are hard to see); returns a new image.
    """
    canvas = _check_image(image).copy()
    points = np.asarray(points_yx, dtype=np.float64).reshape(-1, 2)
    vectors = np.asarray(vectors_dxdy, dtype=np.float64).reshape(-1, 2)
    if len(points) != len(vectors):
        raise ValueError(f"{len(points)} points but {len(vectors)} vectors")
    colour = tuple(int(c) for c in color)
    for (y, x), (dx, dy) in zip(points, vectors, strict=True):
        if not np.isfinite([y, x, dx, dy]).all():
            continue
        start = (round(x), round(y))
        end = (round(x + scale * dx), round(y + scale * dy))
        if point_radius > 0:
            cv2.circle(canvas, start, point_radius, colour, -1, cv2.LINE_AA)
        if end != start:
            cv2.arrowedLine(canvas, start, end, colour, thickness, cv2.LINE_AA, 0, tip_length)
    return canvas


def _fit_width(image: np.ndarray, width: int) -> np.ndarray:
    h, w = image.shape[:2]
    if w == width:
        return image
    height = max(1, round(h * width / w))
    interpolation = cv2.INTER_AREA if width < w else cv2.INTER_LINEAR
    return cv2.resize(image, (width, height), interpolation=interpolation)


def contact_sheet(
    frames: Sequence[np.ndarray],
    flows: Sequence[np.ndarray],
    max_magnitude: float,
    *,
    columns: int = 4,
    max_width: int = 1600,
    max_cells: int = 32,
    gap: int = 4,
    legend: bool = True,
    background: int = 255,
) -> np.ndarray:
    """A grid of cells, each a frame above the colour image of its flow; uint8 RGB.

    Cells share the width of the first frame, shrunk so `columns` cells fit in `max_width`; at
    most `max_cells` pairs are drawn (evenly spaced), so the sheet size is bounded. With `legend`
    the colour wheel (rim = max_magnitude) closes the sheet.
    """
    if len(frames) != len(flows):
        raise ValueError(f"{len(frames)} frames but {len(flows)} flows")
    if not frames:
        raise ValueError("contact sheet needs at least one frame")
    if columns < 1 or max_cells < 1 or gap < 0:
        raise ValueError("columns and max_cells must be >= 1 and gap >= 0")
    chosen = np.unique(np.linspace(0, len(frames) - 1, min(max_cells, len(frames))).round())
    first = _check_image(frames[0], "frames[0]")
    cell_w = max(8, min(first.shape[1], (max_width - gap * (columns + 1)) // columns))

    cells = []
    for i in chosen.astype(int):
        frame = _fit_width(_check_image(frames[i], f"frames[{i}]"), cell_w)
        colour = flow_to_color(flows[i], max_magnitude)
        colour = cv2.resize(colour, (frame.shape[1], frame.shape[0]), interpolation=cv2.INTER_AREA)
        cells.append(np.concatenate([frame, colour], axis=0))
    if legend:
        side = min(cell_w, cells[0].shape[0])
        cells.append(color_wheel_legend(side, background=background))

    cols = min(columns, len(cells))
    rows = math.ceil(len(cells) / cols)
    cell_h = max(c.shape[0] for c in cells)
    sheet = np.full(
        (rows * cell_h + (rows + 1) * gap, cols * cell_w + (cols + 1) * gap, 3),
        background,
        dtype=np.uint8,
    )
    for index, cell in enumerate(cells):
        r, c = divmod(index, cols)
        y = gap + r * (cell_h + gap)
        x = gap + c * (cell_w + gap)
        sheet[y : y + cell.shape[0], x : x + cell.shape[1]] = cell
    return sheet


def text_card(text: str, *, width: int = 640, height: int = 60) -> np.ndarray:
    """A white uint8 RGB card with one line of black text (cut to fit), for a figure that has
    nothing to show, so the report keeps its entry and says why."""
    card = np.full((height, width, 3), 255, np.uint8)
    line = text[: max(1, width // 7)]  # about 7 px per character at this font scale
    cv2.putText(card, line, (8, height // 2 + 6), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1,
                cv2.LINE_AA)  # fmt: skip
    return card


def save_png(path: str | os.PathLike, rgb: np.ndarray) -> None:
    """Write a uint8 RGB (or H x W gray) image as PNG atomically."""
    rgb = np.asarray(rgb)
    if rgb.dtype != np.uint8 or not (rgb.ndim == 2 or (rgb.ndim == 3 and rgb.shape[2] == 3)):
        raise ValueError(
            f"save_png needs uint8 H x W x 3 RGB or H x W gray, got {rgb.dtype} {rgb.shape}"
        )
    pixels = rgb if rgb.ndim == 2 else cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    ok, buffer = cv2.imencode(".png", pixels)
    if not ok:  # pragma: no cover
        raise ValueError(f"OpenCV could not encode {path}")
    write_bytes(path, buffer.tobytes())
