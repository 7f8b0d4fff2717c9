"""Synthetic "find the warm shape" images with known ground-truth boxes.

Every image contains exactly one *target* object whose class is the label, drawn over
textured clutter together with one to three *distractor* objects. The ground-truth box of
the target makes the task suitable for checking the localisation of saliency maps (e.g. the
pointing game: does the arg-max of the map fall inside the target box?).

Classes (label = index into :data:`CLASSES`): ``disc``, ``square``, ``triangle``, ``cross``
and ``ring``.

Colour rule (what makes the task well posed):

* The **target** is the only *saturated warm* object in the image: a flat colour with hue in
  the red-orange-yellow family (hue in [-15, 55] degrees), saturation >= 0.75 and
  value >= 0.75.
* **Distractors** are shapes of the *other* classes, drawn either in a *cool* colour (hue in
  [150, 250] degrees: green-cyan, cyan, blue) or in a *gray* (saturation <= 0.12).
* **Clutter** (gradient, low-frequency blotches, random lines) is *desaturated*: its colours
  have saturation <= 0.25 (lines may also be cool), so nothing but the target is saturated
  and warm.

So the label is the shape of the saturated warm object; a classifier has to find that
object and recognise its shape, and distractor shapes of every other class are present to
punish a model that merely counts shapes. Distractors are placed so that at most 10 % of a
distractor's box overlaps the (slightly enlarged) target box, and the target is drawn last,
so it is never occluded. Pixel noise is added to the whole image at the end.

The nominal target extent (the longer side of the shape's outline) is uniform in [18, 40] px
at the default 96 x 96 size (the tight box comes out 1-2 px larger because of
anti-aliasing), distractors in [14, 34] px; both scale linearly with ``size``. Shapes are
anti-aliased and randomly rotated (discs and rings are rotation invariant).

Example:
    >>> from tools.synthetic import CLASSES, make_samples
    >>> samples = make_samples(4, seed=0)
    >>> samples[0].image.shape, samples[0].image.dtype
    ((96, 96, 3), dtype('uint8'))
    >>> CLASSES[samples[0].label] in CLASSES
    True
"""

from __future__ import annotations

import colorsys
import math
from dataclasses import dataclass

import cv2
import numpy as np

__all__ = ["CLASSES", "Sample", "make_sample", "make_samples", "stack_samples"]

CLASSES: tuple[str, ...] = ("disc", "square", "triangle", "cross", "ring")
"""Class names; a sample's ``label`` is an index into this tuple."""

_REFERENCE_SIZE = 96
_TARGET_EXTENT = (18.0, 40.0)
_DISTRACTOR_EXTENT = (14.0, 34.0)
_MAX_OVERLAP = 0.10
_SHIFT = 4  # fractional bits for OpenCV drawing (sub-pixel precision)
_SCALE = float(1 << _SHIFT)

Box = tuple[int, int, int, int]


@dataclass(frozen=True, eq=False)
class Sample:
    """One synthetic image with its label and target box.

    Attributes:
        image: RGB image, shape ``(size, size, 3)``, dtype ``uint8``.
        label: Index of the target's class in :data:`CLASSES`.
        box: Tight box ``(x0, y0, x1, y1)`` around the target's pixels (those at least
            half covered by the anti-aliased shape); ``x1`` and ``y1`` are exclusive, so the
            target is ``image[y0:y1, x0:x1]``.
    """

    image: np.ndarray
    label: int
    box: Box


def _unit_polygon(cls: str) -> np.ndarray:
    """Returns the outline of a polygonal class, centred on the origin, roughly unit sized."""
    if cls == "square":
        return np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], dtype=np.float64)
    if cls == "triangle":
        angles = np.deg2rad([-90.0, 30.0, 150.0])
        return np.stack([np.cos(angles), np.sin(angles)], axis=1)
    if cls == "cross":
        a, w = 1.0, 0.32  # half arm length, half arm width
        return np.array(
            [
                [-w, -a], [w, -a], [w, -w], [a, -w], [a, w], [w, w],
                [w, a], [-w, a], [-w, w], [-a, w], [-a, -w], [-w, -w],
            ],
            dtype=np.float64,
        )  # fmt: skip
    raise ValueError(f"not a polygonal class: {cls!r}")


_POLYGONS = {cls: _unit_polygon(cls) for cls in ("square", "triangle", "cross")}
_PERIOD = {"square": 90.0, "triangle": 120.0, "cross": 90.0}


@dataclass(frozen=True)
class _Shape:
    """A shape's geometry: class, centre-free outline (or radii) and half extents."""

    cls: str
    points: np.ndarray | None  # polygon vertices relative to the centre, pixels
    radius: float  # outer radius for disc / ring
    inner: float  # inner radius for ring
    half_w: float
    half_h: float


def _make_shape(rng: np.random.Generator, cls: str, extent: float) -> _Shape:
    """Draws a random rotation / thickness and scales the shape to the given extent."""
    if cls in ("disc", "ring"):
        r = extent / 2.0
        inner = r * (1.0 - rng.uniform(0.36, 0.5)) if cls == "ring" else 0.0
        return _Shape(cls, None, r, inner, r, r)
    theta = math.radians(rng.uniform(0.0, _PERIOD[cls]))
    c, s = math.cos(theta), math.sin(theta)
    pts = _POLYGONS[cls] @ np.array([[c, s], [-s, c]])
    pts = pts - (pts.max(axis=0) + pts.min(axis=0)) / 2.0
    pts *= extent / float(np.ptp(pts, axis=0).max())
    half = pts.max(axis=0)
    return _Shape(cls, pts, 0.0, 0.0, float(half[0]), float(half[1]))


def _draw_mask(shape: _Shape, cx: float, cy: float, size: int) -> tuple[np.ndarray, Box]:
    """Rasterises a shape (anti-aliased) and returns the mask crop and its box.

    Returns:
        A ``uint8`` coverage mask (0..255) cropped to the box ``(x0, y0, x1, y1)`` of the
        pixels it touches (exclusive end), and that box.
    """
    x0 = max(math.floor(cx - shape.half_w) - 2, 0)
    y0 = max(math.floor(cy - shape.half_h) - 2, 0)
    x1 = min(math.ceil(cx + shape.half_w) + 3, size)
    y1 = min(math.ceil(cy + shape.half_h) + 3, size)
    mask = np.zeros((y1 - y0, x1 - x0), dtype=np.uint8)
    lx, ly = cx - x0, cy - y0
    if shape.points is None:
        centre = (round(lx * _SCALE), round(ly * _SCALE))
        cv2.circle(mask, centre, round(shape.radius * _SCALE), 255, -1, cv2.LINE_AA, _SHIFT)
        if shape.inner > 0:
            cv2.circle(mask, centre, round(shape.inner * _SCALE), 0, -1, cv2.LINE_AA, _SHIFT)
    else:
        pts = np.round((shape.points + np.array([lx, ly])) * _SCALE).astype(np.int32)
        cv2.fillPoly(mask, [pts], 255, cv2.LINE_AA, _SHIFT)
    cols = np.flatnonzero(mask.any(axis=0))
    rows = np.flatnonzero(mask.any(axis=1))
    bx0, bx1 = int(cols[0]), int(cols[-1]) + 1
    by0, by1 = int(rows[0]), int(rows[-1]) + 1
    box = (x0 + bx0, y0 + by0, x0 + bx1, y0 + by1)
    return mask[by0:by1, bx0:bx1], box


def _core_box(mask: np.ndarray, box: Box) -> Box:
    """Box of the pixels at least half covered by a mask crop (as made by :func:`_draw_mask`)."""
    core = mask >= 128
    cols = np.flatnonzero(core.any(axis=0))
    rows = np.flatnonzero(core.any(axis=1))
    if len(cols) == 0:  # degenerate (tiny) shape: fall back to every touched pixel
        return box
    x0, y0 = box[0] + int(cols[0]), box[1] + int(rows[0])
    return (x0, y0, box[0] + int(cols[-1]) + 1, box[1] + int(rows[-1]) + 1)


def _paint(canvas: np.ndarray, mask: np.ndarray, box: Box, colour: np.ndarray) -> None:
    """Alpha-blends a flat colour into ``canvas`` (float32 RGB) through a coverage mask."""
    x0, y0, x1, y1 = box
    alpha = mask.astype(np.float32)[..., None] * (1.0 / 255.0)
    region = canvas[y0:y1, x0:x1]
    region += alpha * (colour - region)


def _hsv(h_deg: float, s: float, v: float) -> np.ndarray:
    """HSV (hue in degrees) to an RGB float32 triple in 0..255."""
    r, g, b = colorsys.hsv_to_rgb((h_deg % 360.0) / 360.0, s, v)
    return np.array([r * 255.0, g * 255.0, b * 255.0], dtype=np.float32)


def _warm(rng: np.random.Generator) -> np.ndarray:
    """A saturated red / orange / yellow: the target colour family."""
    return _hsv(rng.uniform(-15.0, 55.0), rng.uniform(0.75, 1.0), rng.uniform(0.75, 1.0))


def _cool(rng: np.random.Generator) -> np.ndarray:
    """A green-cyan / cyan / blue colour for distractors."""
    return _hsv(rng.uniform(150.0, 250.0), rng.uniform(0.45, 1.0), rng.uniform(0.45, 1.0))


def _gray(rng: np.random.Generator) -> np.ndarray:
    """A near-gray (saturation <= 0.12) of any brightness, for distractors."""
    return _hsv(rng.uniform(0.0, 360.0), rng.uniform(0.0, 0.12), rng.uniform(0.15, 0.95))


def _dull(rng: np.random.Generator, v: tuple[float, float] = (0.2, 0.9)) -> np.ndarray:
    """A desaturated colour (saturation <= 0.25) of any hue, for clutter."""
    return _hsv(rng.uniform(0.0, 360.0), rng.uniform(0.0, 0.25), rng.uniform(*v))


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """Desaturated clutter: a colour gradient, low-frequency blotches and random lines."""
    # Gradient and blotches are built on a coarse grid and upsampled in one go (fast).
    cells = int(rng.integers(3, 8))
    t = np.linspace(0.0, 1.0, cells, dtype=np.float32)
    phi = rng.uniform(0.0, 2.0 * math.pi)
    ramp = math.cos(phi) * t[None, :] + math.sin(phi) * t[:, None]
    ramp = (ramp - ramp.min()) / max(float(ramp.max() - ramp.min()), 1e-6)
    c0, c1 = _dull(rng), _dull(rng)
    coarse = c0 + ramp[..., None] * (c1 - c0)
    coarse += rng.normal(0.0, rng.uniform(8.0, 28.0), (cells, cells, 1)).astype(np.float32)
    mid = max(cells, size // 4)  # cubic to a quarter size, then linear: smooth and fast
    coarse = cv2.resize(coarse, (mid, mid), interpolation=cv2.INTER_CUBIC)
    canvas: np.ndarray = cv2.resize(coarse, (size, size), interpolation=cv2.INTER_LINEAR)

    scale = size / _REFERENCE_SIZE
    for _ in range(int(rng.integers(2, 9))):
        p = rng.uniform(-0.1 * size, 1.1 * size, 4) * _SCALE
        colour = _dull(rng, (0.05, 1.0)) if rng.random() < 0.7 else _cool(rng)
        thickness = max(1, round(rng.uniform(1.0, 3.0) * scale))
        cv2.line(
            canvas,
            (int(p[0]), int(p[1])),
            (int(p[2]), int(p[3])),
            colour.tolist(),
            thickness,
            cv2.LINE_AA,
            _SHIFT,
        )
    return canvas


def _noise(rng: np.random.Generator, shape: tuple[int, ...], sigma: float) -> np.ndarray:
    """Fast zero-mean pixel noise (triangular distribution) with standard deviation ``sigma``."""
    n = math.prod(shape)
    u = np.frombuffer(rng.bytes(2 * n), dtype=np.uint8).reshape(2, *shape).astype(np.float32)
    noise: np.ndarray = u[0] + u[1] - 255.0
    noise *= np.float32(sigma / 104.5)  # std of the sum of two uniform bytes is ~104.5
    return noise


def _overlap(a: Box, b: Box) -> int:
    """Intersection area of two exclusive-end boxes."""
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    return max(w, 0) * max(h, 0)


def _place(rng: np.random.Generator, shape: _Shape, size: int) -> tuple[float, float]:
    """A random centre keeping the whole shape at least one pixel inside the image."""
    cx = rng.uniform(shape.half_w + 1.0, size - shape.half_w - 1.0)
    cy = rng.uniform(shape.half_h + 1.0, size - shape.half_h - 1.0)
    return cx, cy


def make_sample(rng: np.random.Generator, size: int = _REFERENCE_SIZE) -> Sample:
    """Generates one random image.

    Args:
        rng: Source of randomness; the sample is a deterministic function of its state.
        size: Side of the square image in pixels (at least 48). Object sizes scale with it.

    Returns:
        The image with one warm target (the label) and 1-3 cool / gray distractors.

    Raises:
        ValueError: If ``size`` is smaller than 48.
    """
    if size < 48:
        raise ValueError(f"size must be at least 48, got {size}")
    scale = size / _REFERENCE_SIZE
    label = int(rng.integers(len(CLASSES)))
    canvas = _background(rng, size)

    lo, hi = _TARGET_EXTENT
    target = _make_shape(rng, CLASSES[label], rng.uniform(lo, hi) * scale)
    tcx, tcy = _place(rng, target, size)
    t_mask, t_box = _draw_mask(target, tcx, tcy, size)
    pad = max(1, round(2 * scale))
    keep_out = (t_box[0] - pad, t_box[1] - pad, t_box[2] + pad, t_box[3] + pad)

    others = [i for i in range(len(CLASSES)) if i != label]
    wanted = int(rng.integers(1, 4))
    placed = 0
    lo, hi = _DISTRACTOR_EXTENT
    for attempt in range(200):
        if placed == wanted or (placed >= 1 and attempt >= 60):
            break
        shrink = max(0.0, 1.0 - attempt / 40.0)  # fall back to small distractors
        extent = (lo + rng.uniform(0.0, hi - lo) * shrink) * scale
        shape = _make_shape(rng, CLASSES[int(rng.choice(others))], extent)
        cx, cy = _place(rng, shape, size)
        mask, box = _draw_mask(shape, cx, cy, size)
        area = (box[2] - box[0]) * (box[3] - box[1])
        if _overlap(box, keep_out) > _MAX_OVERLAP * area:
            continue
        colour = _cool(rng) if rng.random() < 0.75 else _gray(rng)
        _paint(canvas, mask, box, colour)
        placed += 1

    _paint(canvas, t_mask, t_box, _warm(rng))
    canvas += _noise(rng, canvas.shape, rng.uniform(2.0, 8.0))
    image = np.clip(canvas, 0.0, 255.0, out=canvas).astype(np.uint8)
    return Sample(image=image, label=label, box=_core_box(t_mask, t_box))


def make_samples(n: int, seed: int, size: int = _REFERENCE_SIZE) -> list[Sample]:
    """Generates ``n`` samples, deterministically for a given seed.

    Args:
        n: Number of samples.
        seed: Seed for :func:`numpy.random.default_rng`; the same seed, ``n`` and ``size``
            give identical samples, and a prefix of a longer run equals a shorter run.
        size: Side of the square images in pixels.

    Returns:
        The samples, in generation order.
    """
    rng = np.random.default_rng(seed)
    return [make_sample(rng, size) for _ in range(n)]


def stack_samples(samples: list[Sample]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Stacks samples into arrays.

    Args:
        samples: Samples of one common image size.

    Returns:
        ``(images, labels, boxes)``: ``uint8`` of shape ``(N, H, W, 3)``, ``int64`` of shape
        ``(N,)`` and ``int64`` of shape ``(N, 4)`` (``x0, y0, x1, y1``, exclusive end).
    """
    images = np.stack([s.image for s in samples])
    labels = np.array([s.label for s in samples], dtype=np.int64)
    boxes = np.array([s.box for s in samples], dtype=np.int64).reshape(-1, 4)
    return images, labels, boxes
