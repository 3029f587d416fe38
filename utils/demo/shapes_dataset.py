"""A deterministic synthetic detection dataset of geometric shapes, in VOC layout.

Five classes (``SHAPE_CLASSES``) are drawn in varied colours, sizes, aspect ratios and
rotations on textured backgrounds, with limited overlap. Every image comes from its own
random stream keyed by ``(seed, index)``: image 7 is the same whether 10 or 300 images
are generated, and the same seed always writes byte-identical files.

Boxes are measured on the drawn coverage masks after all occlusions, so each box
tightly bounds the visible part of its shape. They are written as VOC does: 1-based,
inclusive integer pixel coordinates.

Layout written under ``out_dir``::

    VOCdevkit/VOC<year>/JPEGImages/000001.jpg
    VOCdevkit/VOC<year>/Annotations/000001.xml
    VOCdevkit/VOC<year>/ImageSets/Main/   (split files only with write_splits=True)
    shapes_classes.txt                    (class names, one per line)

Command line::

    python -m utils.demo.shapes_dataset --out demo_data --num-images 300 --seed 0
"""

import argparse
import colorsys
import dataclasses
import difflib
import math
import sys
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

SHAPE_CLASSES = ("circle", "square", "triangle", "star", "cross")
CLASSES_FILENAME = "shapes_classes.txt"
JPEG_QUALITY = 92
DEFAULT_YEAR = 2007
# A pixel belongs to a shape's box when the visible shape covers at least this much of
# it; fainter antialiased fringe pixels are not visibly tinted once noise and JPEG
# compression are applied.
BOX_COVERAGE = 0.3
# Subpixel resolution used to rasterise polygons into area-coverage masks.
_SUPERSAMPLE = 4
_FILL_SHIFT = 4
# Placement attempts per object before it is left out of the image.
_PLACEMENT_TRIES = 40
# Colour draws per object while looking for one that contrasts with what lies beneath.
_COLOR_TRIES = 24
# Rotation limits (degrees) that keep each class recognisable: a square turned by 45
# degrees reads as a diamond and a cross as an "x".
_MAX_ROTATION = {"circle": 180.0, "square": 25.0, "triangle": 180.0, "star": 180.0, "cross": 30.0}
# Random-stream keys: images use (_IMAGE_STREAM, index), splits use (_SPLIT_STREAM,).
_IMAGE_STREAM = 0
_SPLIT_STREAM = 1


@dataclass(frozen=True)
class ShapeOptions:
    """What the generated images contain; every field has a working default.

    Attributes:
        min_size: smallest image side in pixels (width and height are drawn
            independently from ``[min_size, max_size]``).
        max_size: largest image side in pixels.
        max_objects: most shapes per image; an image that is not empty gets a number
            drawn uniformly from ``1..max_objects``.
        empty_fraction: probability that an image has no shape at all.
        min_object_size: smallest shape size in pixels, as the geometric mean of the
            unrotated shape's width and height.
        max_object_fraction: largest shape size as a fraction of the image's shorter
            side. Sizes are drawn log-uniformly in between.
        max_aspect: largest stretch of a shape (width/height or height/width).
        max_occlusion: largest fraction of a shape that later shapes may cover.
        max_box_iou: largest IoU between the boxes of two shapes in one image.
        min_contrast: wanted RGB distance between a shape's colour and the mean colour
            beneath it (0-255 scale, Euclidean).
        difficult_min_side: a shape whose visible box has a side shorter than this
            (pixels) is marked difficult.
        difficult_visibility: a shape with less than this fraction of its area visible
            is marked difficult.
    """

    min_size: int = 256
    max_size: int = 480
    max_objects: int = 6
    empty_fraction: float = 0.05
    min_object_size: float = 12.0
    max_object_fraction: float = 0.5
    max_aspect: float = 1.7
    max_occlusion: float = 0.3
    max_box_iou: float = 0.4
    min_contrast: float = 90.0
    difficult_min_side: int = 12
    difficult_visibility: float = 0.8

    def __post_init__(self):
        for name in ("min_size", "max_size", "max_objects", "difficult_min_side"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
                raise TypeError(f"ShapeOptions.{name} must be an int, got {value!r}.")
        if self.min_size < 64:
            raise ValueError(f"min_size must be at least 64 pixels, got {self.min_size}.")
        if self.max_size < self.min_size:
            raise ValueError(
                f"max_size ({self.max_size}) must not be smaller than min_size ({self.min_size})."
            )
        if self.max_objects < 0:
            raise ValueError(f"max_objects must be 0 or more, got {self.max_objects}.")
        for name in ("empty_fraction", "max_occlusion", "max_box_iou", "difficult_visibility"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must lie in [0, 1], got {value!r}.")
        if not 0.0 < self.max_object_fraction <= 1.0:
            raise ValueError(
                f"max_object_fraction must lie in (0, 1], got {self.max_object_fraction!r}."
            )
        if self.min_object_size < 4:
            raise ValueError(f"min_object_size must be at least 4 pixels, got {self.min_object_size!r}.")
        largest = self.max_object_fraction * self.min_size
        if self.min_object_size > largest:
            raise ValueError(
                f"min_object_size ({self.min_object_size}) exceeds max_object_fraction * min_size "
                f"({largest:g}); lower min_object_size or raise max_object_fraction."
            )
        if self.max_aspect < 1.0:
            raise ValueError(f"max_aspect must be at least 1, got {self.max_aspect!r}.")
        if self.min_contrast < 0:
            raise ValueError(f"min_contrast must be 0 or more, got {self.min_contrast!r}.")


@dataclass
class ShapeObject:
    """One drawn shape.

    Attributes:
        name: class name, one of ``SHAPE_CLASSES``.
        box: ``(xmin, ymin, xmax, ymax)`` VOC pixels: 1-based, inclusive, ints.
        difficult: VOC "difficult" flag (small or heavily covered shape).
        color: RGB fill colour (0-255) before shading and noise.
        mask: float32 ``(height, width)`` visible coverage of the shape in [0, 1].
    """

    name: str
    box: tuple
    difficult: bool
    color: tuple
    mask: np.ndarray = field(repr=False)


@dataclass
class ShapeImage:
    """One rendered image and its shapes.

    Attributes:
        image: uint8 ``(height, width, 3)`` RGB pixels, before JPEG compression.
        objects: the shapes, in drawing order (later ones lie on top).
    """

    image: np.ndarray = field(repr=False)
    objects: list

    @property
    def height(self):
        """Image height in pixels."""
        return self.image.shape[0]

    @property
    def width(self):
        """Image width in pixels."""
        return self.image.shape[1]


def image_rng(seed, index):
    """Returns the random generator that draws image ``index`` of dataset ``seed``.

    Args:
        seed: dataset seed, a non-negative int.
        index: 0-based image index.

    Returns:
        numpy.random.Generator.
    """
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(_IMAGE_STREAM, index)))


def _check_seed(seed):
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}.")


def _random_color(rng, sat=(0.0, 1.0), val=(0.0, 1.0)):
    """Draws an RGB colour (float, 0-255) from HSV ranges."""
    h = rng.random()
    s = rng.uniform(*sat)
    v = rng.uniform(*val)
    return np.array(colorsys.hsv_to_rgb(h, s, v), np.float32) * 255.0


# ----------------------------------------------------------------------------- background


# Smooth background layers are drawn this many times smaller, then upsampled.
_BACKGROUND_SCALE = 4


def _background(rng, height, width):
    """Draws a textured background: float32 ``(height, width, 3)`` RGB, 0-255."""
    lh = -(-height // _BACKGROUND_SCALE) + 1
    lw = -(-width // _BACKGROUND_SCALE) + 1
    ys = np.arange(lh, dtype=np.float32)[:, None]
    xs = np.arange(lw, dtype=np.float32)[None, :]
    c0 = _random_color(rng, sat=(0.0, 0.7), val=(0.15, 0.95))
    c1 = _random_color(rng, sat=(0.0, 0.7), val=(0.15, 0.95))
    kind = rng.choice(["linear", "radial", "clouds", "flat", "stripes"], p=[0.3, 0.2, 0.3, 0.1, 0.1])
    if kind == "linear":
        angle = rng.uniform(0.0, 2.0 * math.pi)
        t = xs * math.cos(angle) + ys * math.sin(angle)
        t = (t - t.min()) / max(float(t.max() - t.min()), 1.0)
        low = c0 + t[..., None] * (c1 - c0)
    elif kind == "radial":
        cx = rng.uniform(-0.2, 1.2) * lw
        cy = rng.uniform(-0.2, 1.2) * lh
        d = np.sqrt((xs - cx) ** 2 + (ys - cy) ** 2)
        t = (d / max(float(d.max()), 1.0)) ** rng.uniform(0.5, 2.0)
        low = c0 + t[..., None] * (c1 - c0)
    elif kind == "clouds":
        gh, gw = rng.integers(2, 7, size=2)
        grid = c0 + rng.uniform(-1.0, 1.0, (gh, gw, 3)).astype(np.float32) * rng.uniform(25.0, 80.0)
        low = cv2.resize(grid.astype(np.float32), (lw, lh), interpolation=cv2.INTER_CUBIC)
    else:
        low = np.broadcast_to(c0, (lh, lw, 3))
    low = np.ascontiguousarray(low, dtype=np.float32)
    if rng.random() < 0.5:
        _add_blobs(rng, low)
    img = cv2.resize(low, (width, height), interpolation=cv2.INTER_LINEAR)
    if kind == "stripes":
        fy = np.arange(height, dtype=np.float32)[:, None]
        fx = np.arange(width, dtype=np.float32)[None, :]
        angle = rng.uniform(0.0, math.pi)
        period = rng.uniform(8.0, 60.0)
        phase = (fx * math.cos(angle) + fy * math.sin(angle)) * np.float32(2.0 * math.pi / period)
        wave = np.sin(phase + np.float32(rng.uniform(0.0, 2.0 * math.pi)))
        img += wave[..., None] * ((c1 - c0) * np.float32(rng.uniform(0.1, 0.3)))
    if rng.random() < 0.5:
        _add_lines(rng, img)
    return img


def _add_blobs(rng, img):
    """Blends a few soft, irregular colour blobs into ``img`` in place."""
    height, width = img.shape[:2]
    ys = np.arange(height, dtype=np.float32)[:, None]
    xs = np.arange(width, dtype=np.float32)[None, :]
    for _ in range(rng.integers(1, 6)):
        color = _random_color(rng, sat=(0.0, 0.8), val=(0.1, 1.0))
        alpha = np.float32(rng.uniform(0.15, 0.45))
        cx, cy = rng.uniform(0, width), rng.uniform(0, height)
        rx = rng.uniform(0.05, 0.25) * width
        ry = rng.uniform(0.05, 0.25) * height
        u = (xs - cx) / rx
        v = (ys - cy) / ry
        # Two offset lobes make the blob irregular, so it does not read as a circle.
        ox, oy = rng.uniform(-0.8, 0.8, size=2)
        m = alpha * np.maximum(np.exp(-0.5 * (u**2 + v**2)), 0.7 * np.exp(-((u - ox) ** 2 + (v - oy) ** 2)))
        img += m[..., None] * (color - img)


def _add_lines(rng, img):
    """Blends random straight lines and scribbles into ``img`` in place."""
    height, width = img.shape[:2]
    layer = img.copy()
    for _ in range(rng.integers(1, 11)):
        color = tuple(float(c) for c in _random_color(rng, sat=(0.0, 1.0), val=(0.0, 1.0)))
        thickness = int(rng.integers(1, 4))
        n_points = 2 if rng.random() < 0.6 else int(rng.integers(3, 7))
        pts = np.stack(
            [rng.uniform(-0.1, 1.1, n_points) * width, rng.uniform(-0.1, 1.1, n_points) * height], axis=1
        )
        cv2.polylines(layer, [np.round(pts).astype(np.int32)], False, color, thickness, cv2.LINE_AA)
    alpha = rng.uniform(0.3, 0.8)
    img += alpha * (layer - img)


def _add_noise(rng, img, sigma):
    """Adds zero-mean pixel noise of standard deviation ``sigma`` to ``img`` in place."""
    # The sum of two uniform bytes (triangular, std ~104.5) looks like sensor noise and
    # is several times cheaper to draw than Gaussian samples.
    raw = np.frombuffer(rng.bytes(2 * img.size), np.uint8).reshape(2, *img.shape)
    noise = raw[0].astype(np.float32)
    noise += raw[1]
    noise -= np.float32(255.0)
    noise *= np.float32(sigma / 104.5)
    img += noise


# ----------------------------------------------------------------------------- shapes


def _unit_polygon(name, rng):
    """Returns the outline of a class as float32 ``(N, 2)`` xy points within [-1, 1]^2."""
    if name == "circle":
        t = np.linspace(0.0, 2.0 * math.pi, 96, endpoint=False)
        pts = np.stack([np.cos(t), np.sin(t)], axis=1)
    elif name == "square":
        pts = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], np.float64)
    elif name == "triangle":
        apex = rng.uniform(-0.6, 0.6)
        pts = np.array([[-1, 1], [1, 1], [apex, -1]], np.float64)
    elif name == "star":
        inner = rng.uniform(0.38, 0.55)
        t = np.arange(10) * (math.pi / 5.0) - math.pi / 2.0
        r = np.where(np.arange(10) % 2 == 0, 1.0, inner)
        pts = np.stack([r * np.cos(t), r * np.sin(t)], axis=1)
    elif name == "cross":
        a = rng.uniform(0.22, 0.38)
        pts = np.array(
            [[-a, -1], [a, -1], [a, -a], [1, -a], [1, a], [a, a],
             [a, 1], [-a, 1], [-a, a], [-1, a], [-1, -a], [-a, -a]],
            np.float64,
        )
    else:
        raise ValueError(f"Unknown shape class {name!r}; expected one of {SHAPE_CLASSES}.")
    return pts.astype(np.float32)


def _rasterize(poly, height, width):
    """Antialiased (4x4 supersampled) coverage of a polygon, on the patch it touches.

    Args:
        poly: float ``(N, 2)`` xy points in image pixels, where pixel ``(i, j)`` spans
            ``[j, j + 1) x [i, i + 1)``.
        height: image height.
        width: image width.

    Returns:
        ``(y0, x0, alpha)``: the patch's top-left corner and its float32 coverage.
    """
    x0 = max(int(math.floor(float(poly[:, 0].min()))) - 1, 0)
    y0 = max(int(math.floor(float(poly[:, 1].min()))) - 1, 0)
    x1 = min(int(math.ceil(float(poly[:, 0].max()))) + 1, width)
    y1 = min(int(math.ceil(float(poly[:, 1].max()))) + 1, height)
    s = _SUPERSAMPLE
    canvas = np.zeros(((y1 - y0) * s, (x1 - x0) * s), np.uint8)
    # OpenCV puts pixel centres at integer coordinates, hence the half-pixel offset.
    pts = (poly - np.array([x0, y0], np.float32)) * s - 0.5
    pts = np.round(pts * (1 << _FILL_SHIFT)).astype(np.int32)
    cv2.fillPoly(canvas, [pts], 255, lineType=cv2.LINE_8, shift=_FILL_SHIFT)
    alpha = cv2.resize(canvas, (x1 - x0, y1 - y0), interpolation=cv2.INTER_AREA)
    return y0, x0, alpha.astype(np.float32) / 255.0


def _mask_box(mask):
    """0-based inclusive ``(x0, y0, x1, y1)`` of pixels with coverage >= BOX_COVERAGE, or None."""
    rows = np.flatnonzero((mask >= BOX_COVERAGE).any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero((mask >= BOX_COVERAGE).any(axis=0))
    return int(cols[0]), int(rows[0]), int(cols[-1]), int(rows[-1])


def _box_iou(a, b):
    """IoU of two 0-based inclusive xyxy pixel boxes."""
    iw = min(a[2], b[2]) - max(a[0], b[0]) + 1
    ih = min(a[3], b[3]) - max(a[1], b[1]) + 1
    if iw <= 0 or ih <= 0:
        return 0.0
    inter = iw * ih
    area_a = (a[2] - a[0] + 1) * (a[3] - a[1] + 1)
    area_b = (b[2] - b[0] + 1) * (b[3] - b[1] + 1)
    return inter / float(area_a + area_b - inter)


@dataclass
class _Placed:
    """A shape being drawn: full-image visible coverage and bookkeeping."""

    name: str
    color: np.ndarray
    visible: np.ndarray
    area: float
    visible_area: float
    box: tuple
    low_contrast: bool


def _try_place(rng, name, canvas, placed, options):
    """Looks for a position of one shape that respects the overlap limits.

    Returns:
        ``(y0, x0, alpha, box)`` of an accepted placement, or None.
    """
    height, width = canvas.shape[:2]
    lo = math.log(options.min_object_size)
    hi = math.log(max(options.max_object_fraction * min(height, width), options.min_object_size))
    for _ in range(_PLACEMENT_TRIES):
        size = math.exp(rng.uniform(lo, hi))
        aspect = math.exp(rng.uniform(-1.0, 1.0) * math.log(options.max_aspect))
        half = np.array([size * math.sqrt(aspect), size / math.sqrt(aspect)], np.float32) / 2.0
        angle = math.radians(rng.uniform(-1.0, 1.0) * _MAX_ROTATION[name])
        rot = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]], np.float32)
        poly = (_unit_polygon(name, rng) * half) @ rot.T
        lo_xy, hi_xy = poly.min(axis=0), poly.max(axis=0)
        span = hi_xy - lo_xy
        room = np.array([width, height], np.float32) - 2.0
        if np.any(span > room):
            poly *= float(np.min(room / span)) * 0.95
            lo_xy, hi_xy = poly.min(axis=0), poly.max(axis=0)
        cx = rng.uniform(1.0 - lo_xy[0], width - 1.0 - hi_xy[0])
        cy = rng.uniform(1.0 - lo_xy[1], height - 1.0 - hi_xy[1])
        poly = poly + np.array([cx, cy], np.float32)
        y0, x0, alpha = _rasterize(poly, height, width)
        local = _mask_box(alpha)
        if local is None:
            continue
        box = (local[0] + x0, local[1] + y0, local[2] + x0, local[3] + y0)
        if any(_box_iou(box, p.box) > options.max_box_iou for p in placed):
            continue
        ph, pw = alpha.shape
        ok = True
        for p in placed:
            vis = p.visible[y0:y0 + ph, x0:x0 + pw]
            remaining = p.visible_area - float((vis * alpha).sum())
            if remaining < (1.0 - options.max_occlusion) * p.area:
                ok = False
                break
        if ok:
            return y0, x0, alpha, box
    return None


def _pick_color(rng, canvas, y0, x0, alpha, placed, options):
    """Draws a fill colour that stands out from the background and shapes beneath.

    Returns:
        ``(color, contrast)``: float32 RGB and its smallest distance to what lies under it.
    """
    ph, pw = alpha.shape
    weight = alpha / max(float(alpha.sum()), 1e-6)
    under = (canvas[y0:y0 + ph, x0:x0 + pw] * weight[..., None]).sum(axis=(0, 1))
    references = [under]
    for p in placed:
        if float((p.visible[y0:y0 + ph, x0:x0 + pw] * alpha).sum()) > 0.5:
            references.append(p.color)
    best, best_contrast = None, -1.0
    for _ in range(_COLOR_TRIES):
        color = _random_color(rng, sat=(0.2, 1.0), val=(0.15, 1.0))
        contrast = min(float(np.linalg.norm(color - ref)) for ref in references)
        if contrast > best_contrast:
            best, best_contrast = color, contrast
        if contrast >= options.min_contrast:
            break
    return best, best_contrast


def render_image(seed, index, options=None):
    """Draws one image of the dataset, with its shapes' boxes and coverage masks.

    ``generate_dataset`` writes exactly this image (as JPEG) for the same ``seed``,
    ``index`` and options.

    Args:
        seed: dataset seed, a non-negative int.
        index: 0-based image index (the file id is ``index + 1``).
        options: ShapeOptions, or None for the defaults.

    Returns:
        ShapeImage with uint8 ``(H, W, 3)`` RGB pixels and its ShapeObjects, whose boxes
        are VOC ``(xmin, ymin, xmax, ymax)``: 1-based inclusive pixels.
    """
    _check_seed(seed)
    options = options or ShapeOptions()
    rng = image_rng(seed, index)
    width = int(rng.integers(options.min_size, options.max_size + 1))
    height = int(rng.integers(options.min_size, options.max_size + 1))
    canvas = _background(rng, height, width)

    if options.max_objects == 0 or rng.random() < options.empty_fraction:
        n_objects = 0
    else:
        n_objects = int(rng.integers(1, options.max_objects + 1))

    placed = []
    for _ in range(n_objects):
        name = SHAPE_CLASSES[int(rng.integers(len(SHAPE_CLASSES)))]
        spot = _try_place(rng, name, canvas, placed, options)
        if spot is not None:
            placed.append(_paint_shape(rng, canvas, name, spot, placed, options))

    _add_noise(rng, canvas, sigma=rng.uniform(2.0, 10.0))
    np.clip(canvas, 0.0, 255.0, out=canvas)
    image = (canvas + np.float32(0.5)).astype(np.uint8)
    objects = [obj for obj in (_shape_object(p, options) for p in placed) if obj is not None]
    return ShapeImage(image=image, objects=objects)


def _paint_shape(rng, canvas, name, spot, placed, options):
    """Blends one shape into ``canvas`` (float32 (H, W, 3), in place) and returns its
    _Placed record; the shapes painted before lose what it covers."""
    height, width = canvas.shape[:2]
    y0, x0, alpha, box = spot
    color, contrast = _pick_color(rng, canvas, y0, x0, alpha, placed, options)
    ph, pw = alpha.shape
    # A gentle linear shading across the shape, so fills are not perfectly flat.
    angle = rng.uniform(0.0, 2.0 * math.pi)
    gy = np.linspace(-1.0, 1.0, ph, dtype=np.float32)[:, None] * math.sin(angle)
    gx = np.linspace(-1.0, 1.0, pw, dtype=np.float32)[None, :] * math.cos(angle)
    shade = 1.0 + rng.uniform(0.0, 0.15) * (gx + gy) / math.sqrt(2.0)
    fill = color * shade[..., None]
    patch = canvas[y0:y0 + ph, x0:x0 + pw]
    patch += alpha[..., None] * (fill - patch)
    for p in placed:
        vis = p.visible[y0:y0 + ph, x0:x0 + pw]
        p.visible_area -= float((vis * alpha).sum())
        vis *= 1.0 - alpha
    visible = np.zeros((height, width), np.float32)
    visible[y0:y0 + ph, x0:x0 + pw] = alpha
    area = float(alpha.sum())
    return _Placed(
        name=name,
        color=color,
        visible=visible,
        area=area,
        visible_area=area,
        box=box,
        low_contrast=contrast < 0.5 * options.min_contrast,
    )


def _shape_object(placed, options):
    """The ShapeObject of a painted shape (VOC 1-based box of what stays visible,
    difficult flag), or None when nothing of it is visible."""
    box = _mask_box(placed.visible)
    if box is None:
        return None
    short_side = min(box[2] - box[0], box[3] - box[1]) + 1
    visibility = placed.visible_area / max(placed.area, 1e-6)
    difficult = (
        short_side < options.difficult_min_side
        or visibility < options.difficult_visibility
        or placed.low_contrast
    )
    return ShapeObject(
        name=placed.name,
        box=(box[0] + 1, box[1] + 1, box[2] + 1, box[3] + 1),
        difficult=bool(difficult),
        color=tuple(int(round(float(c))) for c in placed.color),
        mask=placed.visible,
    )


# ----------------------------------------------------------------------------- files


def image_id(index):
    """File id of image ``index`` (0-based): ``000001`` for index 0."""
    return f"{index + 1:06d}"


def voc_xml(sample, filename, folder):
    """Serialises one image's annotation the way VOC2007 files are laid out.

    Args:
        sample: ShapeImage.
        filename: the JPEG's file name, e.g. ``000001.jpg``.
        folder: the ``<folder>`` text, e.g. ``VOC2007``.

    Returns:
        bytes: UTF-8 XML text, tab-indented, without an XML declaration.
    """
    root = ET.Element("annotation")
    ET.SubElement(root, "folder").text = folder
    ET.SubElement(root, "filename").text = filename
    size = ET.SubElement(root, "size")
    ET.SubElement(size, "width").text = str(sample.width)
    ET.SubElement(size, "height").text = str(sample.height)
    ET.SubElement(size, "depth").text = "3"
    ET.SubElement(root, "segmented").text = "0"
    for obj in sample.objects:
        node = ET.SubElement(root, "object")
        ET.SubElement(node, "name").text = obj.name
        ET.SubElement(node, "pose").text = "Unspecified"
        ET.SubElement(node, "truncated").text = "0"
        ET.SubElement(node, "difficult").text = "1" if obj.difficult else "0"
        bndbox = ET.SubElement(node, "bndbox")
        for tag, value in zip(("xmin", "ymin", "xmax", "ymax"), obj.box):
            ET.SubElement(bndbox, tag).text = str(int(value))
    ET.indent(root, space="\t")
    return ET.tostring(root, encoding="utf-8", xml_declaration=False) + b"\n"


def split_ids(ids, seed, test_fraction=0.2, val_fraction=0.1):
    """Deterministic VOC splits of image ids.

    Args:
        ids: list of image ids (str).
        seed: dataset seed, a non-negative int.
        test_fraction: fraction of all images put in ``test``.
        val_fraction: fraction of ``trainval`` put in ``val``.

    Returns:
        dict ``{"trainval", "train", "val", "test"}`` of sorted id lists.

    Raises:
        ValueError: a fraction outside [0, 1].
    """
    _check_seed(seed)
    for name, value in (("test_fraction", test_fraction), ("val_fraction", val_fraction)):
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"{name} must lie in [0, 1], got {value!r}.")
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(_SPLIT_STREAM,)))
    order = [ids[i] for i in rng.permutation(len(ids))]
    n_test = int(round(test_fraction * len(order)))
    test, trainval = order[:n_test], order[n_test:]
    n_val = int(round(val_fraction * len(trainval)))
    val, train = trainval[:n_val], trainval[n_val:]
    return {
        "trainval": sorted(trainval),
        "train": sorted(train),
        "val": sorted(val),
        "test": sorted(test),
    }


def _make_options(options):
    """Builds ShapeOptions from keyword overrides, naming near misses."""
    known = [f.name for f in dataclasses.fields(ShapeOptions)]
    for name in options:
        if name not in known:
            close = difflib.get_close_matches(name, known, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else f" Known options: {', '.join(known)}."
            raise TypeError(f"Unknown shape dataset option {name!r}.{hint}")
    return ShapeOptions(**options)


def generate_dataset(
    out_dir,
    num_images,
    seed=0,
    *,
    year=DEFAULT_YEAR,
    write_splits=False,
    test_fraction=0.2,
    val_fraction=0.1,
    overwrite=False,
    **options,
):
    """Writes the shapes dataset in VOC layout, plus the class names file.

    Args:
        out_dir: output folder; ``VOCdevkit/VOC<year>`` and ``shapes_classes.txt`` go in it.
        num_images: number of images, at least 1.
        seed: non-negative int; the same seed and options give byte-identical files.
        year: the VOC year in the folder name.
        write_splits: also write ``ImageSets/Main/{trainval,train,val,test}.txt``.
        test_fraction: with write_splits, fraction of images put in ``test``.
        val_fraction: with write_splits, fraction of ``trainval`` put in ``val``.
        overwrite: replace the images, annotations and split files of an earlier run in
            the same VOC folder; without it such a folder is an error.
        **options: ShapeOptions fields, e.g. ``min_size=256, max_objects=6``.

    Returns:
        dict with ``images``, ``objects``, ``empty_images``, ``difficult`` (counts),
        ``per_class`` (class name -> object count, in SHAPE_CLASSES order),
        ``image_ids``, ``splits`` (split name -> count, or None), and the paths
        ``out_dir``, ``voc_dir``, ``classes_file`` (str).

    Raises:
        ValueError: num_images, seed, year or a fraction out of range, or a bad option value.
        TypeError: an unknown option name.
        FileExistsError: the VOC folder already holds files and overwrite is False.
    """
    shape_options = _make_options(options)
    _check_generate_args(seed, num_images, year, test_fraction, val_fraction)
    out_dir = Path(out_dir)
    voc_dir = out_dir / "VOCdevkit" / f"VOC{year}"
    jpeg_dir, ann_dir, sets_dir = _prepare_voc_folders(voc_dir, overwrite)
    classes_file = out_dir / CLASSES_FILENAME
    classes_file.write_text("".join(f"{name}\n" for name in SHAPE_CLASSES), encoding="utf-8")

    per_class = {name: 0 for name in SHAPE_CLASSES}
    ids = []
    empty = difficult = 0
    for index in range(int(num_images)):
        sample = render_image(seed, index, shape_options)
        ident = image_id(index)
        ids.append(ident)
        Image.fromarray(sample.image).save(jpeg_dir / f"{ident}.jpg", format="JPEG", quality=JPEG_QUALITY)
        (ann_dir / f"{ident}.xml").write_bytes(voc_xml(sample, f"{ident}.jpg", f"VOC{year}"))
        empty += not sample.objects
        for obj in sample.objects:
            per_class[obj.name] += 1
            difficult += obj.difficult

    splits = None
    if write_splits:
        parts = split_ids(ids, seed, test_fraction=test_fraction, val_fraction=val_fraction)
        for name, members in parts.items():
            (sets_dir / f"{name}.txt").write_text("".join(f"{m}\n" for m in members), encoding="utf-8")
        splits = {name: len(members) for name, members in parts.items()}

    return {
        "out_dir": str(out_dir),
        "voc_dir": str(voc_dir),
        "classes_file": str(classes_file),
        "images": len(ids),
        "objects": sum(per_class.values()),
        "empty_images": int(empty),
        "difficult": int(difficult),
        "per_class": per_class,
        "image_ids": ids,
        "splits": splits,
    }


def _check_generate_args(seed, num_images, year, test_fraction, val_fraction):
    _check_seed(seed)
    if isinstance(num_images, bool) or not isinstance(num_images, (int, np.integer)) or num_images < 1:
        raise ValueError(f"num_images must be a positive int, got {num_images!r}.")
    if isinstance(year, bool) or not isinstance(year, (int, np.integer)) or year < 0:
        raise ValueError(f"year must be a non-negative int such as 2007, got {year!r}.")
    for name, value in (("test_fraction", test_fraction), ("val_fraction", val_fraction)):
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"{name} must lie in [0, 1], got {value!r}.")


def _prepare_voc_folders(voc_dir, overwrite):
    """Creates JPEGImages/, Annotations/ and ImageSets/Main/ in ``voc_dir`` and returns
    them; files of an earlier run are removed with ``overwrite``, an error without."""
    jpeg_dir = voc_dir / "JPEGImages"
    ann_dir = voc_dir / "Annotations"
    sets_dir = voc_dir / "ImageSets" / "Main"
    earlier = [p for d, pattern in ((jpeg_dir, "*.jpg"), (ann_dir, "*.xml"), (sets_dir, "*.txt"))
               for p in sorted(d.glob(pattern))]
    if earlier:
        if not overwrite:
            raise FileExistsError(
                f"{voc_dir} already holds {len(earlier)} dataset files (e.g. {earlier[0].name}); "
                "choose another output folder or pass overwrite=True (--overwrite)."
            )
        for path in earlier:
            path.unlink()
    for d in (jpeg_dir, ann_dir, sets_dir):
        d.mkdir(parents=True, exist_ok=True)
    return jpeg_dir, ann_dir, sets_dir


def format_summary(summary):
    """A few human-readable lines describing what ``generate_dataset`` wrote."""
    classes = ", ".join(f"{name} {count}" for name, count in summary["per_class"].items())
    lines = [
        f"Wrote {summary['images']} images with {summary['objects']} objects "
        f"({summary['difficult']} difficult, {summary['empty_images']} images empty) to {summary['voc_dir']}",
        f"  per class: {classes}",
        f"  class names: {summary['classes_file']}",
    ]
    if summary["splits"]:
        lines.append("  splits: " + ", ".join(f"{k} {v}" for k, v in summary["splits"].items()))
    return "\n".join(lines)


def build_parser():
    """The command-line parser; every option is documented in ``--help``."""
    defaults = ShapeOptions()
    parser = argparse.ArgumentParser(
        prog="python -m utils.demo.shapes_dataset",
        description="Generate a deterministic synthetic VOC-format dataset of geometric shapes "
        f"({', '.join(SHAPE_CLASSES)}).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--out", required=True, metavar="DIR", default=argparse.SUPPRESS,
        help="Output folder (VOCdevkit/ and the classes file go in it).",
    )
    parser.add_argument("--num-images", type=int, default=300, help="Number of images to generate.")
    parser.add_argument("--seed", type=int, default=0, help="Random seed; the same seed writes identical files.")
    parser.add_argument("--year", type=int, default=DEFAULT_YEAR, help="VOC year used in the folder name VOC<year>.")
    parser.add_argument("--min-size", type=int, default=defaults.min_size, help="Smallest image side in pixels.")
    parser.add_argument("--max-size", type=int, default=defaults.max_size, help="Largest image side in pixels.")
    parser.add_argument("--max-objects", type=int, default=defaults.max_objects, help="Most shapes per image.")
    parser.add_argument(
        "--empty-fraction", type=float, default=defaults.empty_fraction,
        help="Probability that an image holds no shape.",
    )
    parser.add_argument(
        "--min-object-size", type=float, default=defaults.min_object_size,
        help="Smallest shape size in pixels (geometric mean of its width and height).",
    )
    parser.add_argument(
        "--max-object-fraction", type=float, default=defaults.max_object_fraction,
        help="Largest shape size as a fraction of the image's shorter side.",
    )
    parser.add_argument(
        "--max-occlusion", type=float, default=defaults.max_occlusion,
        help="Largest fraction of a shape that shapes drawn over it may cover.",
    )
    parser.add_argument(
        "--write-splits", action="store_true",
        help="Also write ImageSets/Main/{trainval,train,val,test}.txt (otherwise left to voc_annotation.py).",
    )
    parser.add_argument(
        "--test-fraction", type=float, default=0.2, help="With --write-splits: fraction of images in test."
    )
    parser.add_argument(
        "--val-fraction", type=float, default=0.1, help="With --write-splits: fraction of trainval in val."
    )
    parser.add_argument(
        "--overwrite", action="store_true",
        help="Replace the images, annotations and split files of an earlier run in the same folder.",
    )
    return parser


def main(argv=None):
    """Command-line entry point.

    Args:
        argv: argument list (without the program name), or None for ``sys.argv``.

    Returns:
        int exit status.
    """
    args = build_parser().parse_args(argv)
    try:
        summary = generate_dataset(
            args.out,
            args.num_images,
            seed=args.seed,
            year=args.year,
            write_splits=args.write_splits,
            test_fraction=args.test_fraction,
            val_fraction=args.val_fraction,
            overwrite=args.overwrite,
            min_size=args.min_size,
            max_size=args.max_size,
            max_objects=args.max_objects,
            empty_fraction=args.empty_fraction,
            min_object_size=args.min_object_size,
            max_object_fraction=args.max_object_fraction,
            max_occlusion=args.max_occlusion,
        )
    except (ValueError, FileExistsError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(format_summary(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
