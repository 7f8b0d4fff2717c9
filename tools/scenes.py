"""Synthetic multi-object scenes with boxes, classes and per-pixel masks.

Each scene holds 2-6 objects of the five classes of :mod:`tools.synthetic` (``disc``,
``square``, ``triangle``, ``cross``, ``ring``), drawn with that module's shape helpers over its
desaturated clutter background (gradient, blotches, random lines). Unlike the "find the warm
shape" task there is no target and no colour rule: every object counts, in any saturated
colour (any hue, saturation and value in [0.6, 1]). Classes are drawn independently and
uniformly per object, so most scenes mix several classes and many hold two or more instances
of one class. The data suit detectors (boxes + classes) and semantic segmenters (label map).

Geometry:

* ``size`` is ``(height, width)`` (or one int for a square), default ``(160, 160)``; any size
  with a shorter side of at least 64 works, e.g. ``(160, 224)``.
* The nominal object extent (the longer side of the shape's outline) is uniform in
  [14, 48] px at a shorter side of 160 and scales linearly with the shorter side. Tight boxes
  come out about 1 px larger than the extent because of anti-aliasing.
* Objects are placed one by one, fully inside the image (at least 1 px margin), and rejected
  when their box overlaps a box already placed by more than 15 % of the smaller of the two
  boxes. Later objects are drawn on top of earlier ones.

Annotations (all in pixels of the image):

* ``boxes``: ``(k, 4)`` float32 ``x0, y0, x1, y1``; ``x0, y0`` inclusive and ``x1, y1``
  **exclusive**, so the object is ``image[y0:y1, x0:x1]`` and the box is
  ``x1 - x0`` pixels wide. Values are whole numbers. A box is the tight box of the object's
  whole shape (the pixels its anti-aliased outline covers at least half), even where a later
  object hides part of it (the ≤ 15 % overlap keeps that small).
* ``label_map``: ``(H, W)`` uint8, 0 for background and ``1 + class`` for the visible pixels
  of an object (covered at least half; later objects overwrite earlier ones).
* ``instance_map``: ``(H, W)`` uint8, 0 for background and ``1 + i`` for object ``i``, same
  pixels as ``label_map``; :attr:`Scene.masks` turns it into per-object boolean masks.

Example:
    >>> from tools.scenes import make_scenes
    >>> s = make_scenes(2, seed=0)[0]
    >>> s.image.shape, s.label_map.shape, s.boxes.shape[1]
    ((160, 160, 3), (160, 160), 4)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tools.synthetic import (
    CLASSES,
    _background,
    _core_box,
    _draw_mask,
    _hsv,
    _make_shape,
    _noise,
    _overlap,
    _paint,
    _Shape,
)

__all__ = ["CLASSES", "DEFAULT_SIZE", "Scene", "make_scene", "make_scenes", "stack_scenes"]

DEFAULT_SIZE: tuple[int, int] = (160, 160)
"""Default ``(height, width)``."""

_REFERENCE_SIDE = 160
_EXTENT = (14.0, 48.0)
_OBJECTS = (2, 6)  # inclusive
_MAX_OVERLAP = 0.15
_MIN_SIDE = 64

Box = tuple[int, int, int, int]


@dataclass(frozen=True, eq=False)
class Scene:
    """One synthetic scene.

    Attributes:
        image: RGB image, ``(H, W, 3)`` uint8.
        boxes: ``(k, 4)`` float32 ``x0, y0, x1, y1`` in pixels, end exclusive.
        classes: ``(k,)`` int64 indices into :data:`CLASSES`.
        label_map: ``(H, W)`` uint8, 0 = background, ``1 + class`` on object pixels.
        instance_map: ``(H, W)`` uint8, 0 = background, ``1 + i`` on object ``i``'s pixels.
    """

    image: np.ndarray
    boxes: np.ndarray
    classes: np.ndarray
    label_map: np.ndarray
    instance_map: np.ndarray

    @property
    def masks(self) -> np.ndarray:
        """``(k, H, W)`` bool: the visible pixels of each object."""
        ids = np.arange(1, len(self.classes) + 1, dtype=np.uint8)
        return self.instance_map[None, :, :] == ids[:, None, None]


def _size(size: int | tuple[int, int]) -> tuple[int, int]:
    h, w = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    if min(h, w) < _MIN_SIDE:
        raise ValueError(f"the shorter side must be at least {_MIN_SIDE}, got {(h, w)}")
    return h, w


def _colour(rng: np.random.Generator) -> np.ndarray:
    """Any saturated colour: hue uniform, saturation and value in [0.6, 1]."""
    return _hsv(rng.uniform(0.0, 360.0), rng.uniform(0.6, 1.0), rng.uniform(0.6, 1.0))


def _draw(shape: _Shape, cx: float, cy: float, h: int, w: int) -> tuple[np.ndarray, Box]:
    """:func:`tools.synthetic._draw_mask` for a possibly non-square image."""
    mask, box = _draw_mask(shape, cx, cy, max(h, w))
    x0, y0, x1, y1 = box
    cx1, cy1 = min(x1, w), min(y1, h)  # the square canvas may reach past the shorter side
    return mask[: cy1 - y0, : cx1 - x0], (x0, y0, cx1, cy1)


def make_scene(rng: np.random.Generator, size: int | tuple[int, int] = DEFAULT_SIZE) -> Scene:
    """Generates one scene; a deterministic function of ``rng``'s state.

    Args:
        rng: Source of randomness.
        size: ``(height, width)`` or one side of a square; the shorter side must be >= 64.

    Returns:
        The scene (2-6 objects; fewer than drawn only if placement kept failing, never
        fewer than 2).
    """
    h, w = _size(size)
    scale = min(h, w) / _REFERENCE_SIDE
    canvas = np.ascontiguousarray(_background(rng, max(h, w))[:h, :w])
    wanted = int(rng.integers(_OBJECTS[0], _OBJECTS[1] + 1))
    lo, hi = _EXTENT

    placed: list[tuple[np.ndarray, Box, int]] = []  # (mask crop, touched box, class)
    for attempt in range(400):
        if len(placed) == wanted or (len(placed) >= _OBJECTS[0] and attempt >= 150):
            break
        shrink = max(0.0, 1.0 - attempt / 100.0)  # fall back to small objects
        extent = (lo + rng.uniform(0.0, hi - lo) * shrink) * scale
        cls = int(rng.integers(len(CLASSES)))
        shape = _make_shape(rng, CLASSES[cls], extent)
        cx = rng.uniform(shape.half_w + 1.0, w - shape.half_w - 1.0)
        cy = rng.uniform(shape.half_h + 1.0, h - shape.half_h - 1.0)
        mask, box = _draw(shape, cx, cy, h, w)
        area = (box[2] - box[0]) * (box[3] - box[1])
        if any(
            _overlap(box, b) > _MAX_OVERLAP * min(area, (b[2] - b[0]) * (b[3] - b[1]))
            for _, b, _ in placed
        ):
            continue
        placed.append((mask, box, cls))

    label_map = np.zeros((h, w), dtype=np.uint8)
    instance_map = np.zeros((h, w), dtype=np.uint8)
    boxes = np.zeros((len(placed), 4), dtype=np.float32)
    classes = np.zeros(len(placed), dtype=np.int64)
    for i, (mask, box, cls) in enumerate(placed):
        _paint(canvas, mask, box, _colour(rng))
        x0, y0, x1, y1 = box
        core = mask >= 128
        label_map[y0:y1, x0:x1][core] = 1 + cls
        instance_map[y0:y1, x0:x1][core] = 1 + i
        boxes[i] = _core_box(mask, box)
        classes[i] = cls
    canvas += _noise(rng, canvas.shape, rng.uniform(2.0, 8.0))
    image = np.clip(canvas, 0.0, 255.0, out=canvas).astype(np.uint8)
    return Scene(image, boxes, classes, label_map, instance_map)


def make_scenes(n: int, seed: int, size: int | tuple[int, int] = DEFAULT_SIZE) -> list[Scene]:
    """Generates ``n`` scenes, deterministically for a given seed.

    Args:
        n: Number of scenes.
        seed: Seed for :func:`numpy.random.default_rng`; the same seed, ``n`` and ``size`` give
            identical scenes, and a prefix of a longer run equals a shorter run.
        size: ``(height, width)`` or one side of a square, default 160 x 160.

    Returns:
        The scenes, in generation order.
    """
    rng = np.random.default_rng(seed)
    return [make_scene(rng, size) for _ in range(n)]


def stack_scenes(scenes: list[Scene]) -> tuple[np.ndarray, np.ndarray]:
    """Stacks images ``(N, H, W, 3)`` uint8 and label maps ``(N, H, W)`` uint8."""
    return np.stack([s.image for s in scenes]), np.stack([s.label_map for s in scenes])


def box_stats(scenes: list[Scene]) -> dict[str, float]:
    """A few summary numbers (object count, box sides) for logs and docs."""
    boxes = np.concatenate([s.boxes for s in scenes])
    sides = np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
    counts = np.array([len(s.classes) for s in scenes])
    return {
        "objects_mean": float(counts.mean()),
        "objects_min": float(counts.min()),
        "objects_max": float(counts.max()),
        "side_min": float(sides.min()),
        "side_median": float(np.median(sides)),
        "side_max": float(sides.max()),
        "same_class_twice": float(
            np.mean([np.bincount(s.classes, minlength=len(CLASSES)).max() >= 2 for s in scenes])
        ),
        "classes_mean": float(np.mean([len(set(s.classes.tolist())) for s in scenes])),
    }
